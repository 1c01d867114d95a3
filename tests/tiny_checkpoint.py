"""A tiny params checkpoint as `python -m jf_jax.convert` writes it (random weights, the
pixel-space tiny model of `base_config()`, a small word-level tokenizer.json and a
generation.json naming pixel space), shared by the inference-path tests."""

import jax
import numpy as np

from jf_jax import config_defaults
from jf_jax import testing
from jf_jax.checkpoint import params_io
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config

# The words of the prompts and questions the inference tests use (others become <unk>).
WORDS = ("a red blue green yellow circle circles square squares triangle triangles to the "
         "left right of what color is there how many shape shapes it one two three yes "
         "no").split()


def config():
  """The run config of the checkpoint: `base_config()` (tiny model, pixel space)."""
  return config_defaults.base_config()


def tokenizer() -> tok_lib.Tokenizer:
  return tok_lib.word_level(config_defaults.tokens_tiny(), WORDS)


def write_params_dir(path: str) -> str:
  """Writes params/ + model.json + generation.json + tokenizer.json under `path`."""
  run = config()
  params = testing.numpy_random_params(model_config.from_config_dict(run.model), std=0.1)
  params_io.save_params(path, jax.tree.map(np.asarray, params), run.model.to_dict(),
                        generation=params_io.generation_config(run))
  tokenizer().hf.save(f"{path}/tokenizer.json")
  return path

