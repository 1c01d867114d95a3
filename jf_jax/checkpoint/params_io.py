"""Params-only checkpoints (converted official weights, stage transitions) with Orbax.

Layout of a params directory:
  DIR/params/        Orbax StandardCheckpointer tree of the model params (scanned layout)
  DIR/model.json     the model config it was written for
  DIR/generation.json  its generation space: `{"data": {"gen_space": ...}, "vae": {...}}`
                     (`models/latent_space.py`; absent: the release's SDXL-VAE space)

`restore_any` reads params from either a params directory or a training workdir (its
train checkpoints, `manager.py`): inference and a new stage's initialisation take both.

Leaves may be stored narrower than the config's `param_dtype` (a converted bf16 release
keeps its bf16 values, exactly); restoring into a target of `jax.ShapeDtypeStruct`s casts
each leaf to the target's dtype.
"""

import json
import os
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from jf_jax.checkpoint import manager
from jf_jax.models import janusflow
from jf_jax.models import repa
from jf_jax.models.config import JanusFlowConfig


def abstract_params(cfg: JanusFlowConfig):
  """Unboxed `jax.ShapeDtypeStruct` tree of the model params (nothing allocated)."""
  return nn.unbox(janusflow.abstract_params(janusflow.JanusFlow(cfg)))["params"]


def init_repa_projector(cfg: JanusFlowConfig, rng: jax.Array) -> dict:
  """Fresh REPA projector params (absent from the official checkpoint)."""
  module = repa.RepaProjector(cfg.repa.hidden_dim, cfg.und_encoder.width, cfg.repa.num_layers,
                              dtype=cfg.dtype, param_dtype=cfg.param_dtype)
  dummy = jax.numpy.zeros((1, 1, cfg.llm.embed_dim), cfg.dtype)
  return nn.unbox(module.init(rng, dummy))["params"]


def _check_writable(directory: str, overwrite: bool) -> None:
  if os.path.exists(directory) and os.listdir(directory) and not overwrite:
    raise FileExistsError(f"{directory} exists and is not empty; pass --overwrite to replace "
                          "it (nothing was written)")


GENERATION_FILE = "generation.json"


def generation_config(config: Any) -> dict:
  """The keys of a run config that define its generation space, for `generation.json`."""
  out = {"data": {"gen_space": config.data.get("gen_space", "pixel")}}
  if config.get("vae") is not None:
    out["vae"] = config.vae.to_dict()
  return out


def save_params(directory: str, params: Any, model_config: dict, overwrite: bool = False,
                generation: dict | None = None):
  """Writes params + model.json (+ `generation`, from `generation_config`, as
  generation.json) to `directory`; refuses to clobber unless `overwrite`."""
  directory = os.path.abspath(directory)
  _check_writable(directory, overwrite)
  os.makedirs(directory, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(directory, "params"), params, force=overwrite)
  ckptr.wait_until_finished()
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump(model_config, f, indent=2, sort_keys=True)
  if generation is not None:
    with open(os.path.join(directory, GENERATION_FILE), "w") as f:
      json.dump(generation, f, indent=2, sort_keys=True)


def load_params(directory: str, target: Any | None = None) -> Any:
  """Restores params; `target` (ShapeDtypeStructs, may carry shardings) sets the layout."""
  path = os.path.join(os.path.abspath(directory), "params")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no params checkpoint at {path}")
  return ocp.StandardCheckpointer().restore(path, target)


PARAMS, WORKDIR = "params", "workdir"


def checkpoint_kind(path: str, setting: str = "checkpoint") -> str:
  """PARAMS (params/, from `python -m jf_jax.convert`) or WORKDIR (checkpoints/, from
  train.py); `setting` names where `path` came from, for the error messages."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{setting}={path} does not exist")
  if os.path.isdir(os.path.join(path, "params")):
    return PARAMS
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return WORKDIR
  raise FileNotFoundError(
      f"{setting}={path} holds neither a params checkpoint (params/, from `python -m "
      "jf_jax.convert`) nor a training run (checkpoints/, from train.py)")


def restore_any(path: str, abstract_params: Any, shardings: Any, step: int | None = None,
                setting: str = "checkpoint", ema: bool = False) -> Any:
  """Params of a params directory or of a workdir's `step` (default latest), restored
  with `shardings` (a tree like `abstract_params`); `ema`: a workdir's moving average of
  the params instead (a params directory holds one set: `ema` does not apply)."""
  if checkpoint_kind(path, setting) == PARAMS:
    return load_params(path, manager.with_shardings(abstract_params, shardings))
  return manager.restore_params(path, abstract_params, shardings, step,
                                item="ema_params" if ema else "params")
