r"""Converts checkpoints between the official JanusFlow layout and ours.

Official safetensors directory -> Orbax params directory (REPA projector freshly
initialised, since the release has none):
  python -m jf_jax.convert --src ~/JanusFlow-1.3B --dst /tmp/jf_1p3b \
      --config configs/janusflow_1p3b.py
And back (training-only parameters are dropped), from a params directory or a train.py
workdir (its latest checkpoint, or --step N; the model config stored with the source is
used unless --config is given):
  python -m jf_jax.convert --reverse --src /tmp/jf_1p3b --dst /tmp/official
  python -m jf_jax.convert --reverse --src /runs/ft --step 20000 --dst /tmp/ft_official
A LoRA run's adapters merged into its base (`config.train.init_params_from`), as an
Orbax params directory or, with --reverse, in the official layout (the run's saved
config gives the model; --config is not read):
  python -m jf_jax.convert --merge_lora ~/runs/lora --dst /tmp/merged [--reverse]
"""

import os
import resource
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

from jf_jax import entry_point
from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import manager
from jf_jax.checkpoint import params_io
from jf_jax.inference import loader as inference_loader
from jf_jax.lora import base as lora_base
from jf_jax.models import config as model_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "janusflow_1p3b.py"),
    "Model config the checkpoint must match.", lock_config=True)
_SRC = flags.DEFINE_string("src", None, "Source checkpoint directory.")
_DST = flags.DEFINE_string("dst", None, "Destination directory.", required=True)
_REVERSE = flags.DEFINE_bool("reverse", False, "Ours -> official instead.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty destination.")
_MERGE_LORA = flags.DEFINE_string(
    "merge_lora", None, "A LoRA run's workdir: write its adapters merged into its base.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the REPA projector's initialisation.")
_STEP = flags.DEFINE_integer("step", None, "--reverse from a training workdir: the step to "
                             "export (default its latest checkpoint).", lower_bound=0)


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


def ours_to_official(src: str, dst: str, config=None, overwrite: bool = False,
                     step: int | None = None):
  """Reads our params from `src`, writes official safetensors to `dst`.

  `src`: a params directory (`official_to_ours`' output) or a train.py workdir (its
  `step`, default the latest); `config`: the model's config, default the one stored
  with `src` (model.json, or the run's saved config).
  """
  params_io._check_writable(os.path.abspath(dst), overwrite)  # before reading anything
  stored, step = inference_loader.load_config(src, step)
  config = stored if config is None else config
  cfg = model_config.from_config_dict(config.model)
  target = params_io.abstract_params(cfg)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = params_io.restore_any(src, target, jax.tree.map(lambda _: device, target), step,
                                 setting="--src")
  if step is not None:
    print(f"read step {step} of {src}", flush=True)
  state = convert_hf.to_state_dict(jax.tree.map(np.asarray, params), cfg)
  path = convert_hf.save_state_dict(state, dst)
  print(f"wrote {len(state)} tensors to {path}", flush=True)


def merge_lora(workdir: str, dst: str, official: bool = False, overwrite: bool = False):
  """Writes a LoRA run's merged params (latest step; its EMA if it kept one) to `dst`: an
  Orbax params directory, or official safetensors with `official`."""
  params_io._check_writable(os.path.abspath(dst), overwrite)
  config, step = manager.restore_config(workdir)
  config = ml_collections.ConfigDict(config)
  cfg = model_config.from_config_dict(config.model)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  ema = float(config.train.get("ema_decay", 0.0)) > 0
  params = lora_base.load_merged(config, workdir, cfg, sharding, step, ema)
  if official:
    state = convert_hf.to_state_dict(jax.tree.map(np.asarray, params), cfg)
    print(f"wrote {len(state)} tensors to {convert_hf.save_state_dict(state, dst)}",
          flush=True)
  else:
    params_io.save_params(dst, params, config.model.to_dict(), overwrite=overwrite,
                          generation=params_io.generation_config(config))
    print(f"wrote {dst} (step {step}{', EMA' if ema else ''})", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MERGE_LORA.value:
    merge_lora(_MERGE_LORA.value, _DST.value, _REVERSE.value, _OVERWRITE.value)
    return
  if _SRC.value is None:
    raise app.UsageError("--src is required (or --merge_lora WORKDIR)")
  if _REVERSE.value:
    config = _CONFIG.value if flags.FLAGS["config"].present else None
    ours_to_official(_SRC.value, _DST.value, config, _OVERWRITE.value, _STEP.value)
  else:
    if _STEP.value is not None:
      raise app.UsageError("--step selects the training step to export: only with --reverse")
    official_to_ours(_SRC.value, _DST.value, _CONFIG.value, _SEED.value, _OVERWRITE.value)


if __name__ == "__main__":
  entry_point.run_absl(main)
