"""Official JanusFlow state dict <-> our params, through the `param_map` table.

Reads and writes safetensors with numpy only (no torch). Every problem is reported at once,
each naming its key: missing keys, unused keys and shape mismatches. The rule-generic core
(`expected_shapes`, `params_from_state`, `state_from_params`) also serves `vae_map`.
"""

import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from jf_jax.checkpoint import param_map
from jf_jax.models.config import JanusFlowConfig


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model; the message lists every offending key."""


def _get(tree: Mapping[str, Any], path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _per_layer_shape(rule: param_map.Rule, shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(shape[1:]) if rule.num_layers else tuple(shape)


def expected_shapes(rules: Sequence[param_map.Rule], abstract_params) -> dict[str, tuple]:
  """Official tensor name -> shape, for any rule table, from our `eval_shape` tree."""
  shapes = {}
  for rule in rules:
    ours = _per_layer_shape(rule, tuple(_get(abstract_params, rule.ours).shape))
    for name in param_map.official_names(rule):
      shapes[name] = param_map.official_shape(rule, ours)
  return shapes


def expected_official_shapes(cfg: JanusFlowConfig, abstract_params) -> dict[str, tuple]:
  """Official tensor name -> shape the model expects (from our `eval_shape` tree)."""
  return expected_shapes(param_map.rules(cfg), abstract_params)


def check_state_dict(state_shapes: Mapping[str, tuple], expected: Mapping[str, tuple],
                     source: str = "checkpoint") -> None:
  """Raises `CheckpointMismatchError` naming every missing, unused or mis-shaped key."""
  missing = sorted(set(expected) - set(state_shapes))
  unused = sorted(set(state_shapes) - set(expected))
  wrong = sorted(k for k in set(expected) & set(state_shapes)
                 if tuple(state_shapes[k]) != tuple(expected[k]))
  if not (missing or unused or wrong):
    return
  lines = [f"{source} does not match the model config:"]
  lines += [f"  missing key: {k} (expected shape {list(expected[k])})" for k in missing]
  lines += [f"  unused key: {k} (shape {list(state_shapes[k])})" for k in unused]
  lines += [f"  shape mismatch: {k}: {source} has {list(state_shapes[k])}, model expects "
            f"{list(expected[k])}" for k in wrong]
  raise CheckpointMismatchError("\n".join(lines))


def params_from_state(state: Mapping[str, np.ndarray], rules: Sequence[param_map.Rule],
                      abstract_params, dtype, source: str = "checkpoint") -> dict:
  """Official state dict -> our params through any rule table (checked first, all keys).

  Args:
    state: official name -> array (any float dtype; bf16 via ml_dtypes).
    rules: the name table (`param_map.rules(cfg)`, `vae_map.rules(cfg)`, ...).
    abstract_params: our params' shapes (unboxed `eval_shape` tree).
    dtype: cast every tensor to this dtype.
    source: how error messages name the checkpoint.
  Returns:
    Nested dict with exactly the paths the rules name.
  """
  check_state_dict({k: v.shape for k, v in state.items()},
                   expected_shapes(rules, abstract_params), source)
  params: dict = {}
  for rule in rules:
    ours = _per_layer_shape(rule, tuple(_get(abstract_params, rule.ours).shape))
    tensors = [param_map.to_ours(rule, np.asarray(state[name]), ours).astype(dtype)
               for name in param_map.official_names(rule)]
    _set(params, rule.ours, np.stack(tensors) if rule.num_layers else tensors[0])
  return params


def state_from_params(params: Mapping[str, Any], rules: Sequence[param_map.Rule],
                      dtype=None) -> dict[str, np.ndarray]:
  """Our params -> official state dict through any rule table (unmapped paths dropped)."""
  state = {}
  for rule in rules:
    value = np.asarray(_get(params, rule.ours))
    if dtype is not None:
      value = value.astype(dtype)
    layers = list(value) if rule.num_layers else [value]
    if rule.num_layers and len(layers) != rule.num_layers:
      raise CheckpointMismatchError(f"{'/'.join(rule.ours)} has {len(layers)} layers, "
                                    f"config says {rule.num_layers}")
    for name, layer in zip(param_map.official_names(rule), layers):
      state[name] = param_map.to_official(rule, layer)
  return state


def to_params(state: Mapping[str, np.ndarray], cfg: JanusFlowConfig, abstract_params,
              dtype=None, source: str = "checkpoint") -> dict:
  """Official state dict -> our params (nested dict; training-only parts absent).

  Args:
    state: official name -> array (any float dtype; bf16 via ml_dtypes).
    cfg: model config the checkpoint must match.
    abstract_params: our params' shapes (`nn.unbox(abstract_variables)['params']`).
    dtype: cast every tensor to this dtype (default: the config's `param_dtype`).
  """
  return params_from_state(state, param_map.rules(cfg), abstract_params,
                           dtype or cfg.param_dtype, source)


def to_state_dict(params: Mapping[str, Any], cfg: JanusFlowConfig, dtype=None
                  ) -> dict[str, np.ndarray]:
  """Our params -> official state dict (training-only parts such as REPA are dropped)."""
  return state_from_params(params, param_map.rules(cfg), dtype)


def safetensors_files(directory: str) -> list[str]:
  """All `*.safetensors` files of a checkpoint directory (single or sharded)."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"checkpoint directory not found: {directory}")
  files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors files in {directory}")
  return files


def load_state_dict(directory: str) -> dict[str, np.ndarray]:
  """Reads every tensor of a (possibly sharded) safetensors checkpoint directory."""
  return read_safetensors(safetensors_files(directory))


def read_safetensors(files: Sequence[str]) -> dict[str, np.ndarray]:
  """Every tensor of the given safetensors files as numpy arrays (keys must not repeat)."""
  state: dict[str, np.ndarray] = {}
  for path in files:
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        if key in state:
          raise CheckpointMismatchError(f"duplicate key {key} in {path}")
        state[key] = f.get_tensor(key)
  return state


def save_state_dict(state: Mapping[str, np.ndarray], directory: str,
                    filename: str = "model.safetensors") -> str:
  """Writes one safetensors file in the official layout; returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, filename)
  safetensors.numpy.save_file(dict(state), path, metadata={"format": "pt"})
  return path


def read_config_json(directory: str) -> dict | None:
  """The official `config.json` of a checkpoint directory, if present."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
