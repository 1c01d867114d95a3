"""A tiny params checkpoint as `python -m jf_jax.convert` writes it (random weights,
`model_tiny()`, the shapes world's tokenizer.json), shared by the inference-path tests."""

import jax
import numpy as np

from jf_jax import config_defaults
from jf_jax.checkpoint import params_io
from jf_jax.models import config as model_config
from jf_jax.sampling import common
from jf_jax.shapes import vocabulary


def write_params_dir(path: str) -> str:
  """Writes params/ + model.json + tokenizer.json under `path`; returns `path`."""
  model = config_defaults.model_tiny()
  params = common.numpy_random_params(model_config.from_config_dict(model), std=0.1)
  params_io.save_params(path, jax.tree.map(np.asarray, params), model.to_dict())
  vocabulary.tokenizer(config_defaults.tokens_tiny()).hf.save(f"{path}/tokenizer.json")
  return path


def write_workdir(path: str, steps=(10, 20)) -> dict:
  """A train.py workdir holding checkpoints at `steps`, each with other random params (a
  state of params only, as much as inference and export read), the run's config naming
  the shapes world's tokenizer. Returns {step: params}."""
  from jf_jax.checkpoint import manager as ckpt  # pylint: disable=g-import-not-at-top
  config = config_defaults.base_config()
  config.data.tokenizer = "shapes"
  cfg = model_config.from_config_dict(config.model)
  manager = ckpt.make_manager(path, save_every=1, keep=len(steps), async_save=False)
  written = {}
  for i, step in enumerate(steps):
    params = common.numpy_random_params(cfg, std=0.1, seed=i)
    ckpt.save(manager, step, {"params": params}, {"step": step}, config.to_dict(), force=True)
    written[step] = params
  manager.wait_until_finished()
  return written
