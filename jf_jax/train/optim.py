"""Optimizer: warmup + schedule, AdamW, clipping over trainable params, regex freezing.

Parameters are addressed by their paths (`jf_jax.parallel.paths`), e.g.
'language_model/model/layers/self_attn/q_proj/kernel' (scanned layers share one path).
`config.optim.freeze` lists regexes matched with `re.fullmatch` against these paths; a
matching leaf is labelled 'freeze' and gets `optax.set_to_zero()`, which holds no state, so
frozen leaves have no Adam moments. Clipping lives inside the 'train' branch of
`optax.multi_transform`, so frozen gradients never enter the global norm.

Freezing in the optimizer does not save backward compute: the model should also
`stop_gradient` the outputs of frozen towers (SigLIP, the REPA target).

Optimizer-state shardings: `tx` also accepts the *boxed* abstract params, and Adam's
moments keep the boxes, so
`partition.mesh_shardings(jax.eval_shape(tx.init, boxed_abstract_params), mesh, rules)`
shards mu/nu exactly like their parameters (counts are replicated).
"""

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from jf_jax.parallel.paths import param_paths
from jf_jax.parallel.paths import path_str

TRAIN, FREEZE = "train", "freeze"

# Stored only for checkpoint compatibility; never used in the forward pass.
ALWAYS_FROZEN = ("vision_und_enc_model/vision_tower/attn_pool/.*",)

_TABLE1_COMMON = dict(schedule="constant", weight_decay=0.0, grad_clip_norm=1.0, b1=0.9,
                      b2=0.95)

# The paper's Table 1 (v2) and its stages: optimizer fields per stage, `freeze` as path regexes.
STAGE_PRESETS = {
    1: dict(_TABLE1_COMMON, learning_rate=1e-4, warmup_steps=2000, total_steps=10_000,
            freeze=("language_model/.*", "vision_und_enc_model/.*") + ALWAYS_FROZEN),
    2: dict(_TABLE1_COMMON, learning_rate=1e-4, warmup_steps=2000, total_steps=390_000,
            freeze=("vision_und_enc_model/.*",) + ALWAYS_FROZEN),
    3: dict(_TABLE1_COMMON, learning_rate=2e-5, warmup_steps=1000, total_steps=26_000,
            freeze=ALWAYS_FROZEN),
}


def stage_freeze_regexes(stage: int) -> tuple[str, ...]:
  """Freeze regexes of training stage 1 (adaptation), 2 (pre-training) or 3 (SFT)."""
  if stage not in STAGE_PRESETS:
    raise ValueError(f"unknown stage {stage!r} (config.stage); expected one of "
                     f"{sorted(STAGE_PRESETS)}")
  return tuple(STAGE_PRESETS[stage]["freeze"])


def from_config(config: Any) -> Any:
  """`config.optim` as the optimizer and the step use it (a resolved copy).

  The stage's freeze regexes come before the user's `config.optim.freeze`, and
  `total_steps` <= 0 (the default, -1) means the run's length, `config.train.num_steps`,
  so a longer run needs only `--config.train.num_steps`. A run no longer than the warmup
  (a smoke test) ends inside it: the schedule then spans `warmup_steps + 1` steps.
  """
  ocfg = config.optim.copy_and_resolve_references()
  with ocfg.unlocked():
    ocfg.freeze = stage_freeze_regexes(config.stage) + tuple(config.optim.freeze)
    if ocfg.get("total_steps", -1) <= 0:
      ocfg.total_steps = max(config.train.num_steps, int(ocfg.get("warmup_steps", 0)) + 1)
  return ocfg


def label_params(params: Any, freeze_regexes: Sequence[str]) -> Any:
  """Labels every leaf 'freeze' if its path fully matches a regex, else 'train'.

  Args:
    params: unboxed parameter tree (the 'params' collection, without a 'params/' prefix).
    freeze_regexes: patterns matched with `re.fullmatch` against `param_paths`.

  Raises:
    ValueError: if a regex matches no parameter (a typo would silently train a tower);
      the optional `ALWAYS_FROZEN` patterns are exempt.
  """
  patterns = [re.compile(r) for r in freeze_regexes]
  paths = param_paths(params)
  flat = jax.tree.leaves(paths)
  for p in patterns:
    if p.pattern not in ALWAYS_FROZEN and not any(p.fullmatch(path) for path in flat):
      raise ValueError(f"config.optim.freeze regex {p.pattern!r} matches no parameter path; "
                       f"paths look like {flat[:3]}")
  frozen = lambda path: any(p.fullmatch(path) for p in patterns)
  return jax.tree.map(lambda path: FREEZE if frozen(path) else TRAIN, paths)


def decay_mask(params: Any) -> Any:
  """True for kernels only: no decay on norms, biases, embeddings, `beg_of_und_embed`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path_str(path).endswith("kernel"), params)


def make_schedule(config: Any) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then constant or cosine to `end_learning_rate`."""
  lr, warmup = config.learning_rate, int(config.get("warmup_steps", 0))
  kind = config.get("schedule", "constant")
  if kind == "constant":
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.warmup_constant_schedule(0.0, lr, warmup)
  if kind == "cosine":
    total = int(config.total_steps)
    if total <= warmup:
      raise ValueError(f"config.optim.total_steps ({total}) must exceed "
                       f"config.optim.warmup_steps ({warmup}) for the cosine schedule")
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, decay_steps=total, end_value=config.get("end_learning_rate", 0.0))
  raise ValueError(f"unknown config.optim.schedule {kind!r}; expected 'constant' or 'cosine'")


def _train_transform(config: Any) -> optax.GradientTransformation:
  """clip(global norm) -> AdamW with kernel-only weight decay."""
  clip = config.get("grad_clip_norm", 1.0)
  mu_dtype = config.get("mu_dtype", None)
  adamw = optax.adamw(
      make_schedule(config), b1=config.get("b1", 0.9), b2=config.get("b2", 0.95),
      eps=config.get("eps", 1e-8), weight_decay=config.get("weight_decay", 0.0),
      mask=decay_mask, mu_dtype=jnp.dtype(mu_dtype) if mu_dtype else None)
  if clip is None or clip <= 0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(clip), adamw)


def make_optimizer(config: Any, params: Any, freeze: Sequence[str] | None = None
                   ) -> tuple[optax.GradientTransformation, Any]:
  """Builds the optimizer for (unboxed, possibly abstract) `params`.

  Args:
    config: `config.optim` ConfigDict: learning_rate, warmup_steps, schedule ('constant' |
      'cosine'), total_steps, b1, b2, eps, weight_decay, grad_clip_norm (None or <= 0
      disables clipping), freeze (regexes), optional end_learning_rate and mu_dtype ('' or
      None: parameter dtype).
    params: the parameter tree (arrays or ShapeDtypeStructs); only its paths are used.
    freeze: regexes used instead of `config.freeze`, e.g.
      `stage_freeze_regexes(config.stage) + tuple(config.optim.freeze)`.

  Returns:
    (tx, trainable_mask): `tx` is an `optax.multi_transform` over labels 'train'/'freeze';
    `trainable_mask` is a bool tree shaped like `params` (True = trainable).
  """
  if freeze is None:
    freeze = config.get("freeze", ())
  labels = label_params(params, tuple(freeze))
  tx = optax.multi_transform({TRAIN: _train_transform(config), FREEZE: optax.set_to_zero()},
                             labels)
  return tx, jax.tree.map(lambda label: label == TRAIN, labels)


def trainable_global_norm(tree: Any, trainable_mask: Any) -> jax.Array:
  """Global L2 norm (float32) over trainable leaves only, e.g. for a grad-norm metric."""
  leaves = [x for x, keep in zip(jax.tree.leaves(tree), jax.tree.leaves(trainable_mask))
            if keep]
  return optax.tree.norm([x.astype(jnp.float32) for x in leaves])


def count_params(params: Any, trainable_mask: Any | None = None) -> int:
  """Number of parameters (only trainable ones when a mask is given)."""
  sizes = [x.size for x in jax.tree.leaves(params)]
  if trainable_mask is None:
    return int(sum(sizes))
  return int(sum(s for s, keep in zip(sizes, jax.tree.leaves(trainable_mask)) if keep))


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
  """EMA step: decay * ema + (1 - decay) * params, leaf-wise in each leaf's dtype."""
  return optax.incremental_update(params, ema_params, step_size=1.0 - decay)
