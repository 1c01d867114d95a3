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
