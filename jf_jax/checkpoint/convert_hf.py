"""Official JanusFlow state dict <-> our params, through the `param_map` table.

Reads and writes safetensors with numpy only (no torch). Every problem is reported at once,
each naming its key: missing keys, unused keys and shape mismatches. The rule-generic core
(`expected_shapes`, `params_from_state`, `state_from_params`) also serves `vae_map`.
"""

import glob
import json
import os
from typing import Any, Callable, Mapping, Sequence

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
  return params_from_tensors(lambda name: np.asarray(state[name]),
                             {k: v.shape for k, v in state.items()}, rules, abstract_params,
                             dtype, source)


def params_from_tensors(read: Callable[[str], np.ndarray], shapes: Mapping[str, tuple],
                        rules: Sequence[param_map.Rule], abstract_params, dtype,
                        source: str = "checkpoint", keep_narrower: bool = False) -> dict:
  """Our params, built tensor by tensor from a reader (checked first, from shapes alone).

  Each parameter is allocated once in its final layout and filled one official tensor at
  a time, so besides the result only one source tensor is ever held (`read_params` streams
  a multi-GB checkpoint this way).

  Args:
    read: official name -> array (called once per name).
    shapes: official name -> shape of every tensor the source holds.
    rules, abstract_params, source: as in `params_from_state`.
    dtype: storage dtype of the params.
    keep_narrower: store a parameter in its source dtype when that is narrower than
      `dtype` (bf16 source, float32 params: lossless, half the memory; a restore into a
      float32 target casts back exactly).
  """
  check_state_dict(shapes, expected_shapes(rules, abstract_params), source)
  dtype = np.dtype(dtype)
  params: dict = {}
  for rule in rules:
    ours = _per_layer_shape(rule, tuple(_get(abstract_params, rule.ours).shape))
    out = None
    for i, name in enumerate(param_map.official_names(rule)):
      tensor = param_map.to_ours(rule, read(name), ours)
      if out is None:
        narrower = keep_narrower and tensor.dtype.itemsize < dtype.itemsize
        out = np.empty(((rule.num_layers,) if rule.num_layers else ()) + ours,
                       tensor.dtype if narrower else dtype)
      out[i if rule.num_layers else ...] = tensor
    _set(params, rule.ours, out)
  return params


def read_params(files: Sequence[str], rules: Sequence[param_map.Rule], abstract_params,
                dtype, source: str = "checkpoint", keep_narrower: bool = False) -> dict:
  """`params_from_tensors` over safetensors files: headers checked, then one tensor at a
  time read from disk (never the whole source state dict in memory)."""
  shapes, where = read_headers(files)
  return params_from_tensors(lambda name: read_tensor(where[name], name), shapes, rules,
                             abstract_params, dtype, source, keep_narrower)


def read_tensor(path: str, name: str) -> np.ndarray:
  """One tensor of a safetensors file, the file mapped only while it is read.

  `safe_open` maps the whole file, and every page read stays resident (and counted in the
  process's memory) until the file is closed: reading a 4 GB single-file release through
  one open file would hold all of it. Opening per tensor costs a header parse (~ms).
  """
  with safe_open(path, framework="numpy") as f:
    return f.get_tensor(name)


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


def read_official_params(directory: str, cfg: JanusFlowConfig, abstract_params, dtype=None,
                         keep_narrower: bool = False) -> dict:
  """`to_params` of a checkpoint directory, streamed tensor by tensor (`read_params`)."""
  return read_params(safetensors_files(directory), param_map.rules(cfg), abstract_params,
                     dtype or cfg.param_dtype, source=directory, keep_narrower=keep_narrower)


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


def read_headers(files: Sequence[str]) -> tuple[dict[str, tuple], dict[str, str]]:
  """(name -> shape, name -> file) of safetensors files, from their headers only."""
  shapes: dict[str, tuple] = {}
  where: dict[str, str] = {}
  for path in files:
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        if key in where:
          raise CheckpointMismatchError(f"duplicate key {key} in {path} (also in "
                                        f"{where[key]})")
        shapes[key], where[key] = tuple(f.get_slice(key).get_shape()), path
  return shapes, where


def read_safetensors(files: Sequence[str]) -> dict[str, np.ndarray]:
  """Every tensor of the given safetensors files as numpy arrays (keys must not repeat)."""
  read_headers(files)  # duplicate keys fail before any tensor is read
  state: dict[str, np.ndarray] = {}
  for path in files:
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
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
