"""Optimizer: stage freezing, no state for frozen leaves, clipping, decay mask, schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jf_jax.parallel import paths as paths_lib
from jf_jax.train import optim


def _params():
  """A tiny tree with the official top-level names and representative leaves."""
  f = lambda *shape: jnp.asarray(np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
                                 / 10 + 1)
  return {
      "language_model": {
          "model": {"embed_tokens": {"embedding": f(10, 4)},
                    "layers": {"self_attn": {"q_proj": {"kernel": f(2, 4, 4)}},
                               "input_layernorm": {"scale": f(2, 4)}},
                    "norm": {"scale": f(4)}},
          "lm_head": {"kernel": f(4, 10)}},
      "vision_und_enc_model": {"vision_tower": {
          "blocks": {"attn": {"qkv": {"kernel": f(2, 3, 9), "bias": f(2, 9)}}},
          "pos_embed": f(1, 4, 3),
          "attn_pool": {"q": {"kernel": f(3, 3), "bias": f(3)}}}},
      "vision_und_enc_aligner": {"kernel": f(3, 4), "bias": f(4)},
      "beg_of_und_embed": f(1, 4),
      "vision_gen_enc_model": {"in_conv": {"kernel": f(2, 2, 4, 5), "bias": f(5)}},
      "vision_gen_dec_aligner_norm": {"scale": f(4)},
      "repa_projector": {"fc1": {"kernel": f(4, 3), "bias": f(3)}},
  }


def _config(**kw):
  cfg = ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=0, schedule="constant", total_steps=100, b1=0.9,
      b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0, freeze=(), mu_dtype=""))
  cfg.update(kw)
  return cfg


def _frozen_paths(params, freeze):
  labels = optim.label_params(params, freeze)
  paths = paths_lib.param_paths(params)
  return {p for p, l in zip(jax.tree.leaves(paths), jax.tree.leaves(labels))
          if l == optim.FREEZE}


def test_param_paths():
  paths = set(jax.tree.leaves(paths_lib.param_paths(_params())))
  assert "language_model/model/layers/self_attn/q_proj/kernel" in paths
  assert "beg_of_und_embed" in paths


def test_stage_presets():
  params = _params()
  all_paths = set(jax.tree.leaves(paths_lib.param_paths(params)))
  und = {p for p in all_paths if p.startswith("vision_und_enc_model/")}
  llm = {p for p in all_paths if p.startswith("language_model/")}
  pool = {p for p in all_paths if "/attn_pool/" in p}
  assert _frozen_paths(params, optim.stage_freeze_regexes(1)) == und | llm
  assert _frozen_paths(params, optim.stage_freeze_regexes(2)) == und
  assert _frozen_paths(params, optim.stage_freeze_regexes(3)) == pool
  with pytest.raises(ValueError, match="config.stage"):
    optim.stage_freeze_regexes(4)


def test_unmatched_freeze_regex_raises_except_optional():
  params = _params()
  with pytest.raises(ValueError, match="config.optim.freeze"):
    optim.label_params(params, ["language_modle/.*"])
  del params["vision_und_enc_model"]["vision_tower"]["attn_pool"]
  assert _frozen_paths(params, optim.stage_freeze_regexes(3)) == set()


def _run(params, grads, cfg, steps=3):
  """`steps` jitted updates with fixed gradients; grads may be a list (one run each)."""
  tx, mask = optim.make_optimizer(cfg, params)

  @jax.jit
  def run(grads):
    p, state = params, tx.init(params)
    for _ in range(steps):
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return p, state

  if isinstance(grads, list):
    return [run(g) for g in grads], mask
  return (*run(grads), mask)


def _grads(params, seed=0, scale=1.0):
  """Host-made random gradients (eager per-shape jax ops are slow on CPU test runs)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32),
                      params)


def test_freeze_argument_overrides_config():
  params = _params()
  _, mask = optim.make_optimizer(_config(freeze=("repa_projector/.*",)), params,
                                 freeze=optim.stage_freeze_regexes(2))
  assert mask["repa_projector"]["fc1"]["kernel"]
  assert not mask["vision_und_enc_model"]["vision_tower"]["pos_embed"]


def test_frozen_params_bit_identical_and_trainable_move():
  params = _params()
  cfg = _config(freeze=optim.stage_freeze_regexes(1))
  new, _, mask = _run(params, _grads(params), cfg)
  for old, upd, train in zip(jax.tree.leaves(params), jax.tree.leaves(new),
                             jax.tree.leaves(mask)):
    if train:
      assert not np.array_equal(old, upd)
    else:
      np.testing.assert_array_equal(old, upd)
      assert old.dtype == upd.dtype


def test_no_optimizer_state_for_frozen_leaves():
  params = _params()
  cfg = _config(freeze=optim.stage_freeze_regexes(1))
  _, state, mask = _run(params, _grads(params), cfg, steps=1)
  n_train = optim.count_params(params, mask)
  assert 0 < n_train < optim.count_params(params)
  array_leaves = [x for x in jax.tree.leaves(state) if x.ndim > 0]
  # Adam's mu and nu for every trainable leaf and nothing else (counts are scalars).
  assert sum(x.size for x in array_leaves) == 2 * n_train
  train_shapes = sorted(x.shape for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
                        if m)
  assert sorted(x.shape for x in array_leaves) == sorted(train_shapes * 2)


def test_clipping_ignores_frozen_gradients():
  params = _params()
  cfg = _config(freeze=optim.stage_freeze_regexes(2))
  grads = _grads(params)
  und = params["vision_und_enc_model"]
  loud = dict(grads, vision_und_enc_model=_grads(und, seed=1, scale=1e12))
  quiet = dict(grads, vision_und_enc_model=_grads(und, scale=0.0))
  ((a, _), (b, _)), _ = _run(params, [loud, quiet], cfg, steps=1)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Control: if the huge gradient were trainable, the norm would crush the other updates.
  c, _, _ = _run(params, loud, _config(freeze=()), steps=1)
  lm_a = a["language_model"]["lm_head"]["kernel"] - params["language_model"]["lm_head"]["kernel"]
  lm_c = c["language_model"]["lm_head"]["kernel"] - params["language_model"]["lm_head"]["kernel"]
  assert float(jnp.abs(lm_c).max()) < 1e-2 * float(jnp.abs(lm_a).max())


def test_clip_norm_bounds_first_adam_input():
  params = _params()
  tx, mask = optim.make_optimizer(_config(), params)
  grads = _grads(params, scale=100.0)
  _, state = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
  mu = optax.tree_utils.tree_get(state, "mu")
  # mu_1 = (1 - b1) * clipped grad and the clipped grad has global norm 1.
  norm = np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(mu)))
  np.testing.assert_allclose(norm, 0.1, rtol=1e-5)
  assert mask == jax.tree.map(lambda _: True, params)


def test_weight_decay_only_on_kernels():
  params = _params()
  cfg = _config(weight_decay=0.1)
  tx, _ = optim.make_optimizer(cfg, params)
  zeros = _grads(params, scale=0.0)
  updates, _ = jax.jit(tx.update)(zeros, jax.jit(tx.init)(params), params)
  paths = jax.tree.leaves(paths_lib.param_paths(params))
  for path, p, u in zip(paths, jax.tree.leaves(params), jax.tree.leaves(updates)):
    if path.endswith("kernel"):
      np.testing.assert_allclose(u, -1e-2 * 0.1 * p, rtol=1e-6)
    else:
      np.testing.assert_array_equal(u, 0.0)


def test_schedules():
  sched = optim.make_schedule(_config(warmup_steps=10))
  np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(10_000)],
                             [0.0, 5e-3, 1e-2, 1e-2], rtol=1e-6)
  np.testing.assert_allclose(optim.make_schedule(_config())(0), 1e-2)
  cos = optim.make_schedule(_config(schedule="cosine", warmup_steps=10, total_steps=110))
  np.testing.assert_allclose([cos(5), cos(10), cos(60), cos(110)], [5e-3, 1e-2, 5e-3, 0.0],
                             rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="config.optim.schedule"):
    optim.make_schedule(_config(schedule="linear"))
  with pytest.raises(ValueError, match="config.optim.total_steps"):
    optim.make_schedule(_config(schedule="cosine", warmup_steps=10, total_steps=10))


def test_applied_learning_rate_follows_warmup():
  params = {"w": {"kernel": jnp.ones((3,))}}
  tx, _ = optim.make_optimizer(_config(warmup_steps=4, grad_clip_norm=0.0), params)
  state = tx.init(params)
  sizes = []
  for _ in range(3):
    updates, state = tx.update({"w": {"kernel": jnp.ones((3,))}}, state, params)
    sizes.append(float(-updates["w"]["kernel"][0]))
  # Constant gradients: Adam's bias-corrected direction is 1, so |update| = lr(step).
  np.testing.assert_allclose(sizes, [0.0, 2.5e-3, 5e-3], rtol=1e-4, atol=1e-9)


def test_trainable_global_norm_and_ema():
  params = {"a": jnp.array([3.0]), "b": jnp.array([4.0, 100.0])}
  mask = {"a": True, "b": False}
  np.testing.assert_allclose(optim.trainable_global_norm(params, mask), 3.0)
  ema = optim.ema_update({"a": jnp.array([1.0])}, {"a": jnp.array([2.0])}, decay=0.99)
  np.testing.assert_allclose(ema["a"], [0.99 * 1.0 + 0.01 * 2.0], rtol=1e-6)
