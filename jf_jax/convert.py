r"""Converts checkpoints between the official JanusFlow layout and ours.

Official safetensors directory -> Orbax params directory (REPA projector freshly
initialised, since the release has none):
  python -m jf_jax.convert --src ~/JanusFlow-1.3B --dst /tmp/jf_1p3b \
      --config configs/janusflow_1p3b.py
And back (training-only parameters are dropped):
  python -m jf_jax.convert --reverse --src /tmp/jf_1p3b --dst /tmp/official \
      --config configs/janusflow_1p3b.py
"""

import os
import resource
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import params_io
from jf_jax.models import config as model_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "janusflow_1p3b.py"),
    "Model config the checkpoint must match.", lock_config=True)
_SRC = flags.DEFINE_string("src", None, "Source checkpoint directory.", required=True)
_DST = flags.DEFINE_string("dst", None, "Destination directory.", required=True)
_REVERSE = flags.DEFINE_bool("reverse", False, "Ours -> official instead.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty destination.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the REPA projector's initialisation.")


def peak_memory_gib() -> float:
  """Peak resident memory of this process so far (Linux `ru_maxrss` is in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _move_to_device(tree: dict) -> None:
  """numpy leaves -> jax arrays in place, each numpy buffer freed as it is replaced:
  Orbax writes jax arrays with less staging memory than numpy ones."""
  for key, value in tree.items():
    if isinstance(value, dict):
      _move_to_device(value)
    else:
      tree[key] = jax.device_put(value)
      del value


def official_to_ours(src: str, dst: str, config, seed: int = 0, overwrite: bool = False):
  """Reads official safetensors from `src`, writes an Orbax params checkpoint to `dst`.

  Tensor by tensor: each parameter is filled from the file one official tensor at a time,
  and kept in the source's dtype when that is narrower than `param_dtype` (the bf16
  release is stored as bf16, exactly; restoring into the float32 model casts back).
  Besides Orbax's own copy while writing, the params are held once.
  """
  cfg = model_config.from_config_dict(config.model)
  params_io._check_writable(os.path.abspath(dst), overwrite)  # fail before the slow read
  t0 = time.time()
  params = convert_hf.read_official_params(src, cfg, params_io.abstract_params(cfg),
                                           keep_narrower=True)
  leaves = jax.tree.leaves(params)
  print(f"read {sum(x.size for x in leaves):,} params from {src} in {time.time() - t0:.1f}s "
        f"(stored as {sorted({str(x.dtype) for x in leaves})})", flush=True)
  _move_to_device(params)
  params["repa_projector"] = params_io.init_repa_projector(cfg, jax.random.key(seed))
  params_io.save_params(dst, params, config.model.to_dict(), overwrite=overwrite,
                        generation=params_io.generation_config(config))
  print(f"wrote {dst} in {time.time() - t0:.1f}s; peak resident memory "
        f"{peak_memory_gib():.2f} GiB", flush=True)


def ours_to_official(src: str, dst: str, config, overwrite: bool = False):
  """Reads an Orbax params checkpoint from `src`, writes official safetensors to `dst`."""
  cfg = model_config.from_config_dict(config.model)
  params_io._check_writable(os.path.abspath(dst), overwrite)
  target = params_io.abstract_params(cfg)
  params = params_io.load_params(src, target)
  state = convert_hf.to_state_dict(jax.tree.map(np.asarray, params), cfg)
  path = convert_hf.save_state_dict(state, dst)
  print(f"wrote {len(state)} tensors to {path}", flush=True)


def main(argv):
  del argv
  if _REVERSE.value:
    ours_to_official(_SRC.value, _DST.value, _CONFIG.value, _OVERWRITE.value)
  else:
    official_to_ours(_SRC.value, _DST.value, _CONFIG.value, _SEED.value, _OVERWRITE.value)


if __name__ == "__main__":
  app.run(main)
