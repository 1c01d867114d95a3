"""Samplers: cached prompt == full recomputation, CFG semantics, no recompiles, integrators.

Tiny config in float32 with random weights. Tolerances: the cached-prefix velocity and the
full recomputation agree to atol = rtol = 1e-5 (float32, "highest" matmul precision from
conftest); the integrators land on closed-form answers to 1e-5 (float32 rounding over a
handful of steps). Greedy KV-cache decoding must equal step-by-step full recomputation
token for token.

Every jitted function here is compiled with XLA's backend optimisations off (the tiny
shapes run in microseconds; compile time dominates) and wrapped in
`chex.assert_max_traces(n=1)`, so any recompile across the tests' calls (new prompts,
seeds, step counts, guidance weights, sampling settings) fails.
"""

import dataclasses
import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax import testing
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.sampling import image
from jf_jax.sampling import text

CFG = dataclasses.replace(model_config.from_config_dict(config_defaults.model_tiny()),
                          dtype=jnp.float32)
MODEL = janusflow.JanusFlow(CFG)
TOK = config_defaults.tokens_tiny()
B, LP = 2, 6
TOL = dict(atol=1e-5, rtol=1e-5)
LATENT_SHAPE = (B, CFG.latent_size, CFG.latent_size, CFG.gen_encoder.in_channels)


_JIT_IDS = itertools.count()


def _jit(fn, **kwargs):
  """jit with one allowed trace and XLA backend optimisations off (compile-time bound)."""
  def traced(*args):  # a plain function (chex cannot inspect partials)
    return fn(*args)
  # chex counts traces per (call stack, source, name): make the name unique per wrapper.
  traced.__name__ = f"traced_{next(_JIT_IDS)}"
  return jax.jit(chex.assert_max_traces(traced, n=1), **kwargs,
                 compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def params():
  return testing.numpy_random_params(CFG, seed=0, std=0.1)


def _prompts(seed: int) -> tuple[jax.Array, jax.Array]:
  """[B, LP]: row 0 fills the width, row 1 is left-padded by two."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(TOK.num_special, CFG.llm.vocab_size, (B, LP)).astype(np.int32)
  mask = np.ones((B, LP), bool)
  ids[:, 0] = TOK.bos_id
  ids[1, :2], mask[1, :2] = TOK.pad_id, False
  ids[1, 2] = TOK.bos_id
  return jnp.asarray(ids), jnp.asarray(mask)


# ------------------------------------------------------------------- text-to-image
@pytest.fixture(scope="module")
def sample_fn():
  """The production pipeline (Euler), jitted once for every test in this file."""
  return _jit(image.make_sample_fn(MODEL, pad_id=TOK.pad_id, solver="euler",
                                   decode_fn=lambda _, z: z[..., :3]))  # RGB stand-in


@pytest.fixture(scope="module")
def full_velocity():
  """Reference: the whole sequence [prompt, t_emb, latents] recomputed (no cache)."""
  def fn(params, ids, mask, z, t):
    return MODEL.apply({"params": params}, ids, z, t, mask,
                       method=janusflow.JanusFlow.generate_velocity)
  return _jit(fn)


def test_cfg_rows_follow_official_sampler():
  ids, mask = _prompts(0)
  ids2, mask2 = image.cfg_prompt_rows(ids, mask, TOK.pad_id)
  np.testing.assert_array_equal(ids2[:B], ids)
  np.testing.assert_array_equal(mask2[:B], mask)
  # Unconditional rows: BOS (first valid position) kept and valid, everything else pad/0.
  expected_mask = np.zeros((B, LP), bool)
  expected_mask[0, 0] = expected_mask[1, 2] = True
  np.testing.assert_array_equal(mask2[B:], expected_mask)
  np.testing.assert_array_equal(ids2[B:], np.where(expected_mask, TOK.bos_id, TOK.pad_id))


def test_cached_velocity_equals_full_recompute_every_step(params, sample_fn, full_velocity):
  """Prefill once, then each Euler step's cached velocity == full recomputation (1e-5);
  the jitted sampler ends at the same latents as this step-by-step loop."""
  ids, mask = _prompts(1)
  ids2, mask2 = image.cfg_prompt_rows(ids, mask, TOK.pad_id)
  cache, key_valid = _jit(functools.partial(image.prefill_prompt, MODEL))(params, ids2, mask2)
  step = _jit(functools.partial(image.cached_velocity, MODEL))
  rng, num_steps, w = jax.random.key(3), 4, 2.5
  z = jax.random.normal(rng, LATENT_SHAPE, jnp.float32)
  previous = None
  for k in range(num_steps):
    z2 = jnp.concatenate([z, z])
    t2 = jnp.full((2 * B,), k / num_steps, jnp.float32)
    v_cached, cache = step(params, cache, key_valid, z2, t2)
    v_full = full_velocity(params, ids2, mask2, z2, t2)
    np.testing.assert_allclose(v_cached, v_full, **TOL)
    if previous is not None:  # the field really changes from step to step
      assert np.abs(np.asarray(v_cached) - previous).max() > 1e-3
    previous = np.asarray(v_cached)
    z = z + (1.0 / num_steps) * image.guide(v_cached, w)
  out = sample_fn(params, ids, mask, rng, num_steps, w)
  np.testing.assert_allclose(out["latents"], z, **TOL)


def test_guidance_one_is_conditional_and_uncond_ignores_prompt(params, sample_fn,
                                                               full_velocity):
  ids_a, mask = _prompts(2)
  words = CFG.llm.vocab_size - TOK.num_special
  shifted = TOK.num_special + (ids_a - TOK.num_special + 1) % words
  ids_b = jnp.where(mask & (ids_a != TOK.bos_id), shifted, ids_a)  # other prompt tokens
  rng, num_steps = jax.random.key(5), 3

  # w = 1 equals integrating the conditional velocity alone (no CFG batch at all).
  def cond_only(params, ids, mask, rng):
    z0 = jax.random.normal(rng, LATENT_SHAPE, jnp.float32)
    def velocity_fn(z, t, carry):
      v = MODEL.apply({"params": params}, ids, z, jnp.full((B,), t), mask,
                      method=janusflow.JanusFlow.generate_velocity)
      return v, carry
    return image.integrate(velocity_fn, z0, num_steps)[0]
  expected = _jit(cond_only)(params, ids_a, mask, rng)
  np.testing.assert_allclose(sample_fn(params, ids_a, mask, rng, num_steps, 1.0)["latents"],
                             expected, **TOL)

  # Unconditional rows are the same whatever the prompt tokens; conditional rows differ.
  z2 = jnp.asarray(np.random.default_rng(0).normal(size=(2 * B,) + LATENT_SHAPE[1:]),
                   jnp.float32)
  t2 = jnp.full((2 * B,), 0.3, jnp.float32)
  v_a = full_velocity(params, *image.cfg_prompt_rows(ids_a, mask, TOK.pad_id), z2, t2)
  v_b = full_velocity(params, *image.cfg_prompt_rows(ids_b, mask, TOK.pad_id), z2, t2)
  chex.assert_trees_all_equal(v_a[B:], v_b[B:])
  assert np.abs(np.asarray(v_a[:B] - v_b[:B])).max() > 1e-3
  # ... so w = 0 (unconditional only) samples the same image for both prompts.
  chex.assert_trees_all_equal(sample_fn(params, ids_a, mask, rng, num_steps, 0.0),
                              sample_fn(params, ids_b, mask, rng, num_steps, 0.0))


def test_no_recompile_and_seed_determinism(params, sample_fn):
  """New prompts, seeds, step counts and weights reuse the executable (max 1 trace)."""
  ids, mask = _prompts(3)
  first = sample_fn(params, ids, mask, jax.random.key(7), 2, 2.0)
  again = sample_fn(params, ids, mask, jax.random.key(7), 2, 2.0)
  chex.assert_trees_all_equal(first, again)
  chex.assert_shape(first["images"], (B, CFG.latent_size, CFG.latent_size, 3))
  chex.assert_type(first["images"], jnp.uint8)
  other_ids, other_mask = _prompts(4)
  other = sample_fn(params, other_ids, other_mask, jax.random.key(8), 5, 3.0)
  assert not np.array_equal(first["latents"], other["latents"])
  reseeded = sample_fn(params, ids, mask, jax.random.key(9), 2, 2.0)
  assert not np.array_equal(first["latents"], reseeded["latents"])


def test_heun_sampler_uses_the_same_cache(params, full_velocity):
  """Heun through the cache == Heun over full recomputation (1e-5)."""
  ids, mask = _prompts(5)
  rng, num_steps, w = jax.random.key(11), 2, 2.0
  heun = _jit(image.make_sample_fn(MODEL, pad_id=TOK.pad_id, solver="heun"))
  ids2, mask2 = image.cfg_prompt_rows(ids, mask, TOK.pad_id)
  z = jax.random.normal(rng, LATENT_SHAPE, jnp.float32)
  def velocity(z, t):
    z2 = jnp.concatenate([z, z])
    return image.guide(full_velocity(params, ids2, mask2, z2, jnp.full((2 * B,), t, jnp.float32)), w)
  dt = 1.0 / num_steps
  for k in range(num_steps):
    v1 = velocity(z, k * dt)
    v2 = velocity(z + dt * v1, (k + 1) * dt)
    z = z + dt * 0.5 * (v1 + v2)
  np.testing.assert_allclose(heun(params, ids, mask, rng, num_steps, w)["latents"], z, **TOL)


# ------------------------------------------------------------------------ integrators
@pytest.fixture(scope="module")
def integrate_fields():
  """Closed-form fields; one compile each, the step count traced."""
  x0 = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  x1 = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)

  def run(field, solver, n):
    return image.integrate(lambda z, t, c: (field(z, t), c), x0, n, solver)[0]

  straight = lambda z, t: (x1 - z) / (1.0 - t)  # linear in z; exact on the straight path
  affine_t = lambda z, t: x1 + 3.0 * t          # depends on t only
  fns = {
      "euler_straight": _jit(functools.partial(run, straight, "euler")),
      "euler_affine": _jit(functools.partial(run, affine_t, "euler")),
      "heun_affine": _jit(functools.partial(run, affine_t, "heun")),
      "heun_exp": _jit(functools.partial(run, lambda z, t: z, "heun")),
  }
  return x0, x1, fns


@pytest.mark.parametrize("n", [1, 3, 30])
def test_integrators_on_closed_form_fields(integrate_fields, n):
  x0, x1, fns = integrate_fields
  # Euler on the rectified-flow field of the straight path x0 -> x1 lands on x1.
  np.testing.assert_allclose(fns["euler_straight"](n), x1, atol=1e-5, rtol=1e-5)
  # Left-endpoint grid t_k = k/N: Euler sums v(t_k) / N = x1 + 3 (N - 1) / (2N).
  np.testing.assert_allclose(fns["euler_affine"](n), x0 + x1 + 3.0 * (n - 1) / (2 * n),
                             atol=1e-5, rtol=1e-5)
  # Heun (trapezoid) integrates a field linear in t exactly: x0 + x1 + 3/2.
  np.testing.assert_allclose(fns["heun_affine"](n), x0 + x1 + 1.5, atol=1e-5, rtol=1e-5)


def test_heun_is_second_order(integrate_fields):
  x0, _, fns = integrate_fields
  errors = [np.abs(np.asarray(fns["heun_exp"](n)) - np.e * np.asarray(x0)).max()
            for n in (4, 8)]
  assert 3.5 < errors[0] / errors[1] < 4.5, errors  # error ~ dt^2


# -------------------------------------------------------------------------- decoding
MAX_NEW = 6


def _und_inputs(seed: int):
  """Left-padded understanding prompts [B, S]: BOS, text, BOI + patches, EOI, text."""
  n_img = CFG.num_und_tokens
  rng = np.random.default_rng(seed)
  word = lambda k: list(rng.integers(TOK.num_special, CFG.llm.vocab_size, k))
  rows = [[TOK.bos_id, *word(2), TOK.boi_id, *[TOK.image_id] * (n_img - 1), TOK.eoi_id,
           *word(3)],
          [TOK.bos_id, *word(1), TOK.boi_id, *[TOK.image_id] * (n_img - 1), TOK.eoi_id,
           *word(2)]]
  seq = max(map(len, rows))
  ids = np.full((B, seq), TOK.pad_id, np.int32)
  mask = np.zeros((B, seq), bool)
  image_mask = np.zeros((B, seq), bool)
  for r, row in enumerate(rows):
    ids[r, seq - len(row):] = row
    mask[r, seq - len(row):] = True
    start = seq - len(row) + row.index(TOK.boi_id)
    image_mask[r, start:start + n_img] = True
  size = CFG.und_encoder.image_size
  images = rng.normal(size=(B, 1, size, size, 3)).astype(np.float32)
  return tuple(map(jnp.asarray, (ids, mask, images, image_mask)))


@pytest.fixture(scope="module")
def decoder():
  return _jit(text.make_decode_fn(MODEL, max_new_tokens=MAX_NEW))


def _greedy_by_full_recompute(params, ids, mask, images, image_mask):
  """Argmax of `understand` on the growing sequence, recomputed from scratch each token.

  The sequence lives in a fixed [B, S + MAX_NEW] buffer (one compile); attention is
  causal, so the not-yet-generated tail cannot affect the logits that are read.
  """
  seq = ids.shape[1]
  pad = lambda x, v: jnp.concatenate([x, jnp.full((B, MAX_NEW), v, x.dtype)], axis=1)
  buf, full_mask, full_image_mask = pad(ids, TOK.pad_id), pad(mask, True), pad(image_mask,
                                                                               False)
  positions = text.prompt_positions(full_mask)

  def logits_at(params, buf, index):
    logits, _, _ = MODEL.apply({"params": params}, buf, images, full_image_mask,
                               attention_mask=full_mask, positions=positions,
                               method=janusflow.JanusFlow.understand)
    return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False)

  logits_at = _jit(logits_at)
  out = []
  for i in range(MAX_NEW):
    token = jnp.argmax(logits_at(params, buf, seq + i - 1), axis=-1).astype(jnp.int32)
    buf = buf.at[:, seq + i].set(token)
    out.append(token)
  return np.stack(out, axis=1)


def test_greedy_kv_cache_decoding_equals_full_recompute(params, decoder):
  ids, mask, images, image_mask = _und_inputs(0)
  never = CFG.llm.vocab_size  # an EOS id argmax cannot produce
  tokens, lengths = decoder(params, ids, mask, jax.random.key(0), never, TOK.pad_id, 0.0, 1.0,
                            images, image_mask)
  expected = _greedy_by_full_recompute(params, ids, mask, images, image_mask)
  np.testing.assert_array_equal(tokens, expected)
  np.testing.assert_array_equal(lengths, [MAX_NEW, MAX_NEW])

  # EOS: row 0 stops at the first occurrence of its third token; pads follow.
  eos = int(expected[0, 2])
  tokens, lengths = decoder(params, ids, mask, jax.random.key(0), eos, TOK.pad_id, 0.0, 1.0,
                            images, image_mask)
  for r in range(B):
    hits = np.flatnonzero(expected[r] == eos)
    n = hits[0] + 1 if hits.size else MAX_NEW
    assert lengths[r] == n
    np.testing.assert_array_equal(tokens[r, :n], expected[r, :n])
    np.testing.assert_array_equal(tokens[r, n:], TOK.pad_id)

  # Sampling: a vanishing nucleus is greedy; temperature sampling is seeded.
  nucleus, _ = decoder(params, ids, mask, jax.random.key(1), never, TOK.pad_id, 1.0, 1e-6,
                       images, image_mask)
  np.testing.assert_array_equal(nucleus, expected)
  draws = [decoder(params, ids, mask, jax.random.key(s), never, TOK.pad_id, 5.0, 0.99,
                   images, image_mask)[0] for s in (2, 2, 3)]
  np.testing.assert_array_equal(draws[0], draws[1])
  assert not np.array_equal(draws[0], draws[2])


def test_top_p_filter_keeps_the_nucleus():
  logits = jnp.log(jnp.asarray([[0.2, 0.5, 0.3]], jnp.float32))
  keep = lambda p: np.isfinite(np.asarray(text.top_p_filter(logits, p)))[0].tolist()
  assert keep(0.5) == [False, True, False]
  assert keep(0.7) == [False, True, True]
  assert keep(0.95) == [True, True, True]
  assert keep(1.0) == [True, True, True]


def test_data_prediction_gives_the_velocity_towards_the_predicted_data(params):
  """`gen_decoder.prediction="data"`: the same weights' decoder output read as the clean
  latent x; generate_velocity and the cached sampler step both return
  (x - z_t) / max(1 - t, min_one_minus_t)."""
  data_cfg = dataclasses.replace(
      CFG, gen_decoder=dataclasses.replace(CFG.gen_decoder, prediction="data"))
  data_model = janusflow.JanusFlow(data_cfg)
  ids, mask = _prompts(5)
  z = jax.random.normal(jax.random.key(6), LATENT_SHAPE, jnp.float32)
  t = jnp.asarray([0.3, 0.99], jnp.float32)  # the second is floored to 1 - t = 0.05
  # The velocity model's raw output (not the jitted `full_velocity`: its one allowed
  # trace belongs to the other tests' shapes).
  x_pred = MODEL.apply({"params": params}, ids, z, t, mask,
                       method=janusflow.JanusFlow.generate_velocity)
  expected = (x_pred - z) / jnp.asarray([0.7, 0.05])[:, None, None, None]
  v_full = data_model.apply({"params": params}, ids, z, t, mask,
                            method=janusflow.JanusFlow.generate_velocity)
  np.testing.assert_allclose(v_full, expected, rtol=1e-4, atol=1e-4)
  cache, key_valid = image.prefill_prompt(data_model, params, ids, mask)
  v_cached, _ = image.cached_velocity(data_model, params, cache, key_valid, z, t)
  np.testing.assert_allclose(v_cached, expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="prediction"):
    model_config.validate(dataclasses.replace(
        CFG, gen_decoder=dataclasses.replace(CFG.gen_decoder, prediction="eps")))
