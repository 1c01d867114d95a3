"""The shapes world's config keys, added by the configs that use it (`configs/tiny_shapes.py`).

The core `config_defaults.base_config()` knows nothing of the world: `add_world(config)`
adds the world's data keys, the understanding tower's object-presence pre-training and
the plug-in names that `train.py` loads (`config.init`, through `data/plugins.py`).
"""

import ml_collections


def world_data_defaults() -> dict:
  """The world's keys of `config.data` (`source = "shapes"`, `world.py`, `task_data.py`)."""
  return dict(
      data_dir="",             # tfds data_dir; '' = ~/tensorflow_datasets
      split="train",
      world_layout="columns",  # columns | free (scene.py)
      world_seed=0, num_train=20_000, num_validation=1_000, num_test=1_000,
      und_turns=1,             # question/answer turns per understanding row (0 = all)
  )


def encoder_pretrain_defaults() -> ml_collections.ConfigDict:
  """`config.encoder_pretrain`: object-presence pre-training of the understanding tower
  before step 0 of a fresh run (`encoder_pretrain.py`, `config.init`). 0 steps = off."""
  return ml_collections.ConfigDict(dict(
      steps=0, batch_size=32, learning_rate=1.5e-3, warmup_steps=100, weight_decay=1e-4,
      readout="max", log_every=500))


def add_world(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` reading the shapes world with its tokenizer, its keys and the encoder
  pre-training plug-in (in place; returned for chaining)."""
  config.data.update(dict(source="shapes", tokenizer="shapes", **world_data_defaults()))
  config.encoder_pretrain = encoder_pretrain_defaults()
  config.init = "jf_jax.shapes.encoder_pretrain"
  return config
