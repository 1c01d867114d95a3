"""Object-presence pre-training of the understanding tower (shapes/encoder_pretrain.py)."""

import jax
import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax.models import config as model_config
from jf_jax.shapes import config as shapes_config
from jf_jax.shapes import encoder_pretrain
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world
from jf_jax.train import loop

SIZES = dict(num_train=200, num_validation=20, num_test=20)


def _config(data_dir, steps=80):
  """A small pixel-space stage-2 config on a 200-image shapes world (16 SigLIP patches)."""
  config = shapes_config.add_world(config_defaults.base_config())  # tiny, pixel space
  config.data.update(dict(source="shapes", data_dir=data_dir, **SIZES))
  config.encoder_pretrain.update(dict(steps=steps, batch_size=16, log_every=steps))
  config.batch.update(dict(und_rows=8, text_rows=8, gen_rows=8))  # split over 8 devices
  return config


def test_presence_labels_mark_the_scene_objects():
  holdout = shapes_scene.holdout_pairs(0)
  for i in range(20):
    ex = shapes_world.make_example(0, "train", i, 32, holdout)
    labels = encoder_pretrain.presence_labels(ex)
    assert labels.shape == (15,) and labels.sum() == len(ex["colors"])
    for c, s in zip(ex["colors"], ex["shapes"]):
      assert labels[shapes_scene.OBJECTS.index((int(c), int(s)))] == 1


def test_pretrain_learns_and_initialise_installs_the_tower(tmp_path, capsys):
  config = _config(str(tmp_path))
  setup = loop.setup(config)  # all (8 fake) devices: the tower lands in sharded params
  encoder, metrics = encoder_pretrain.pretrain(config, setup.cfg, ("validation", "test"))
  # From ~log 2 to at most ~the base rate's entropy: it fits the presence labels.
  assert metrics["last_loss"] < 0.6 * metrics["first_loss"]
  assert 0.0 <= metrics["exact_set/validation"] <= 1.0
  assert 0.0 <= metrics["exact_set/test"] <= 1.0
  assert "images with exactly the right objects: validation " in capsys.readouterr().out

  state = encoder_pretrain.initialise(setup, config)  # same seed: the same tower again
  before, after = jax.device_get(setup.state.params), jax.device_get(state.params)
  jax.tree.map(np.testing.assert_array_equal, after[encoder_pretrain.ENCODER], encoder)
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.array_equal(a, b), before[encoder_pretrain.ENCODER], encoder))
  assert any(changed)
  for name in before:  # everything else untouched
    if name != encoder_pretrain.ENCODER:
      jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
  assert jax.tree.map(lambda x: x.sharding, state.params) == jax.tree.map(
      lambda x: x.sharding, setup.state.params)


def test_pretrain_needs_the_shapes_world(tmp_path):
  config = _config(str(tmp_path))
  config.data.source = "synthetic"
  with pytest.raises(ValueError, match="data.source='shapes'"):
    encoder_pretrain.pretrain(config, None)


def test_readouts_share_the_tower_layout():
  cfg = config_defaults.model_tiny()
  cfg.und_encoder.update(dict(image_size=32, patch_size=8))
  und = model_config.from_config_dict(cfg).und_encoder
  images = np.zeros((2, 32, 32, 3), np.float32)
  trees = {}
  for readout in encoder_pretrain.READOUTS:
    model = encoder_pretrain.PresenceModel(und, readout)
    params = model.init(jax.random.key(0), images)
    presence = model.apply(params, images)
    assert presence.shape == (2, encoder_pretrain.NUM_OBJECTS)
    trees[readout] = jax.tree.map(np.shape, params["params"][encoder_pretrain.ENCODER])
  assert trees["max"] == trees["pool"]
  with pytest.raises(ValueError, match="readout must be one of"):
    encoder_pretrain.PresenceModel(und, "mean").init(jax.random.key(0), images)
