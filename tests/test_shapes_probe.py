"""Linear position probes of an understanding tower (shapes/probe.py)."""

import flax.linen as nn
import jax
import numpy as np

from jf_jax import config_defaults
from jf_jax.models import config as model_config
from jf_jax.models import siglip
from jf_jax.shapes import config as shapes_config
from jf_jax.shapes import probe
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world


def test_pixel_patches_are_raster_order_patches():
  images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  patches = probe.pixel_patches(images, 4)
  assert patches.shape == (2, 4, 48)
  # Patch 1 is row 0, column 1: pixels [0:4, 4:8].
  np.testing.assert_allclose(patches[1, 1].reshape(4, 4, 3),
                             images[1, 0:4, 4:8].astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(patches[0, 2].reshape(4, 4, 3),
                             images[0, 4:8, 0:4].astype(np.float32) / 127.5 - 1.0)


def test_object_columns_mark_each_object_centre():
  holdout = shapes_scene.holdout_pairs(0)
  examples = [shapes_world.make_example(0, "train", i, 32, holdout) for i in range(10)]
  cols = probe.object_columns(examples, 4)
  for ex, row in zip(examples, cols):
    assert (row >= 0).sum() == len(ex["colors"])
    for c, s, (x0, _, x1, _) in zip(ex["colors"], ex["shapes"], ex["boxes"]):
      k = shapes_scene.OBJECTS.index((int(c), int(s)))
      assert row[k] == int((x0 + x1) / 2 // 4)


def test_ridge_recovers_a_linear_map():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 6)) + 3.0
  a, b = rng.normal(size=(6, 2)), np.array([1.5, -2.0])
  w = probe.ridge_fit(x, x @ a + b, l2=1e-9)
  np.testing.assert_allclose(w[:-1], a, atol=1e-6)
  np.testing.assert_allclose(w[-1], b, atol=1e-5)
  np.testing.assert_allclose(probe.ridge_predict(w, x[:3]), x[:3] @ a + b, atol=1e-5)


def test_patch_column_probe_separates_informative_from_blind_features():
  rng = np.random.default_rng(0)
  grid, n = 4, 60
  cols = np.arange(grid * grid) % grid
  informative = np.eye(grid)[cols][None] + 0.1 * rng.normal(size=(n, grid * grid, grid))
  blind = rng.normal(size=(n, grid * grid, grid))
  good = probe.patch_column_probe(informative[:40], informative[40:], grid, 1e-3)
  bad = probe.patch_column_probe(blind[:40], blind[40:], grid, 1e-3)
  assert good["test"] > 0.95
  assert bad["test"] < 0.45  # chance is 0.25


def test_run_on_a_tiny_world(tmp_path):
  config = shapes_config.add_world(config_defaults.base_config())  # tiny, pixel space
  config.data.update(dict(source="shapes", data_dir=str(tmp_path), num_train=200,
                          num_validation=10, num_test=40))
  und = model_config.from_config_dict(config.model).und_encoder
  tower = nn.unbox(siglip.UnderstandingEncoder(und).init(
      jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"])
  feats = probe.tower_features(und, tower, np.zeros((3, 32, 32, 3), np.uint8))
  assert feats.shape == (3, 16, und.width)

  pixels = probe.run(config, None, num_train=200, num_test=40)
  random_tower = probe.run(config, tower, num_train=200, num_test=40)
  for result in (pixels, random_tower):
    assert result["grid"] == 4 and result["num_train"] == 200 and result["num_test"] == 40
    oc = result["object_column"]
    assert oc["num_pairs"] >= 2 * 40  # every test scene has 2-3 objects
    for value in (*result["patch_column"].values(), oc["train"], oc["test"],
                  oc["test_within_1"], oc["left_of"]):
      assert 0.0 <= value <= 1.0
  # Pixel patches place colours linearly, so even the pixel probe orders most pairs
  # (ties count as wrong, so blind guessing stays under 0.5).
  assert pixels["object_column"]["left_of"] > 0.55
