"""Resuming needs the config that made the checkpoint: compare before restoring anything.

Orbax restores a train state only into a target of the same structure and shapes; another
model config (`--config.model.llm.num_layers=2` on a 4-layer workdir) would fail deep
inside Orbax with advice (`strict=False`) that does not apply. `check(workdir, config)`
reads the config saved with the latest checkpoint (a small JSON item, before the model is
built) and names every key that differs in what shapes the state:

  this workdir (W) holds a run with model.llm.num_layers=4 (this config: 2); use a new
  --workdir or the same config

Keys that only change how the same state is computed (remat, attention kernel, compute
dtype) and everything else (steps, schedule, data, logging) may change on resume.
"""

import json
from typing import Any

from jf_jax.checkpoint import manager as ckpt

# Subtrees and keys of the config that decide the train state's structure and shapes.
STATE_KEYS = ("model", "stage", "optim.freeze", "optim.mu_dtype", "lora.rank",
              "lora.targets", "lora.train_in_full")
# Keys under STATE_KEYS that do not: they may differ between a run and its resumption.
COMPUTE_ONLY_KEYS = ("model.dtype", "model.llm.remat_policy", "model.llm.attention_impl",
                     "model.und_encoder.remat_policy", "model.gen_encoder.depthwise",
                     "model.gen_decoder.depthwise")


class ConfigMismatch(ValueError):
  """The workdir holds a run whose train state another config cannot restore."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} of a nested dict (lists are leaves)."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
  return out


def _state_keys(config_dict: dict) -> dict[str, Any]:
  """The state-deciding part of a config dict, flattened (JSON types: tuples as lists)."""
  flat = flatten(json.loads(json.dumps(config_dict)))
  out = {k: v for k, v in flat.items()
         if any(k == p or k.startswith(p + ".") for p in STATE_KEYS)
         and k not in COMPUTE_ONLY_KEYS}
  # Only whether an EMA exists changes the state, not its decay.
  out["train.ema_decay > 0"] = flat.get("train.ema_decay", 0.0) > 0
  return out


def differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
  """(key, saved value, current value) for each state-deciding key that differs.

  Keys only one side has are left out: a run saved before a key existed (or after an
  option was removed) is not refused for it; Orbax still checks the state itself.
  """
  old, new = _state_keys(saved), _state_keys(current)
  return [(k, old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]]


def _show(value: Any) -> str:
  return json.dumps(value) if isinstance(value, list) else str(value)


def describe(workdir: str, diffs: list[tuple[str, Any, Any]]) -> str:
  """The one-line error for `differences`' result."""
  held = ", ".join(f"{k}={_show(old)}" for k, old, _ in diffs)
  asked = ", ".join(f"{_show(new)}" for _, _, new in diffs)
  return (f"this workdir ({workdir}) holds a run with {held} (this config: {asked}); use a "
          "new --workdir or the same config")


def check(workdir: str, config: Any) -> None:
  """Raises ConfigMismatch naming the differing keys if `workdir` holds a run of another
  state structure; returns if it matches or holds no checkpoint."""
  try:
    saved, _ = ckpt.restore_config(workdir)
  except FileNotFoundError:
    return  # a fresh run
  diffs = differences(saved, config.to_dict())
  if diffs:
    raise ConfigMismatch(describe(workdir, diffs))
