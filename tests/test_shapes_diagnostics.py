"""Per-time flow diagnostics of a pixel-space model (shapes/diagnostics.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax import testing
from jf_jax.data import preprocess
from jf_jax.data import tokenizer as tok_lib
from jf_jax.inference import loader
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import latent_space
from jf_jax.shapes import diagnostics
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world

N = 6


@pytest.fixture(scope="module")
def tiny():
  """(Loaded random tiny pixel-space model, captions, uint8 images) of N training scenes."""
  config = config_defaults.base_config()
  config_defaults.use_pixel_space(config.model, image_size=32, patch_size=8)
  config.model.gen_encoder.channels = 16
  config.data.update(dict(tokenizer="shapes", gen_space="pixel"))
  cfg = model_config.from_config_dict(config.model)
  params = testing.numpy_random_params(cfg, std=0.05)
  loaded = loader.Loaded(config, cfg, janusflow.JanusFlow(cfg), params,
                         tok_lib.make_tokenizer(config), 0,
                         latent_space.pixel_space(cfg).decode, {})
  holdout = shapes_scene.holdout_pairs(0)
  examples = [shapes_world.make_example(0, "train", i, 32, holdout) for i in range(N)]
  return (loaded, [ex["caption"] for ex in examples],
          np.stack([ex["image"] for ex in examples]))


def test_exact_velocity_gives_zero_error_and_the_real_images_back(tiny):
  loaded, captions, images = tiny
  x = jnp.asarray(preprocess.to_pixel_latent(images))
  exact = lambda params, ids, mask, z, t, guidance: (x - z) / (1.0 - t)
  r = diagnostics.by_time(loaded, captions, images, times=(0.1, 0.6), steps=5, keep=2,
                          velocity_fn=exact, batch_size=N)
  np.testing.assert_allclose(r["flow_mse"], 0.0, atol=1e-8)
  for kind in ("one_step", "resumed"):
    assert [s["score"] for s in r[kind]] == [1.0, 1.0]  # the detector reads real images
    assert r["images"][kind].shape == (2, 2, 32, 32, 3)
    assert np.abs(r["images"][kind].astype(int) - images[None, :2]).max() <= 1


def test_zero_velocity_leaves_the_noisy_image(tiny):
  loaded, captions, images = tiny
  zero = lambda params, ids, mask, z, t, guidance: jnp.zeros_like(z)
  r = diagnostics.by_time(loaded, captions, images, times=(0.05,), resume=False,
                          velocity_fn=zero, batch_size=4)
  # Velocity target data - noise: E (x - n)^2 = E x^2 + 1 for unit noise.
  x = preprocess.to_pixel_latent(images)
  assert r["flow_mse"][0] == pytest.approx(np.mean(x ** 2) + 1.0, abs=0.05)
  assert r["clean_mse"][0] == pytest.approx(0.95 ** 2 * r["flow_mse"][0])
  assert r["one_step"][0]["score"] == 0.0  # 95% noise: no scene
  assert "resumed" not in r


def test_model_velocity_runs_with_guidance(tiny):
  loaded, captions, images = tiny
  r = diagnostics.by_time(loaded, captions[:3], images[:3], times=(0.5, 0.9), steps=4,
                          guidance=2.0, batch_size=2)
  assert r["num_images"] == 3 and len(r["one_step"]) == len(r["resumed"]) == 2
  assert all(np.isfinite(r["flow_mse"])) and min(r["flow_mse"]) > 0


def test_bucket_mass():
  mass = diagnostics.bucket_mass((0.1, 0.5, 0.9))
  np.testing.assert_allclose(mass["uniform"], [0.3, 0.4, 0.3])
  # The logit-normal (0, 1) is symmetric about 1/2 and puts most mass in the middle.
  ln = mass["logit_normal"]
  assert sum(ln) == pytest.approx(1.0)
  assert ln[0] == pytest.approx(ln[2]) and ln[1] > 0.5


def test_needs_a_pixel_space_run(tiny):
  loaded, captions, images = tiny
  loaded.config.data.gen_space = "latent"
  try:
    with pytest.raises(ValueError, match="pixel-space run"):
      diagnostics.by_time(loaded, captions, images)
  finally:
    loaded.config.data.gen_space = "pixel"
