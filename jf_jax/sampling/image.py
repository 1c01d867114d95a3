"""Text-to-image: the rectified-flow ODE with classifier-free guidance over a cached prompt.

The official sampler (`demo/app_janusflow.py::generate`) recomputes the whole sequence
[prompt, t_emb, latent tokens] at every ODE step (its prefix cache is a no-op).
Attention is causal, so the prompt's keys and values never depend on t or z: here they are
computed once (`prefill_prompt`) for the doubled CFG batch, and each ODE evaluation runs the
LLM only over [t_emb, latent tokens] at positions Lp..Lp+n, writing its own K/V into the
cache slots after the prompt (overwriting the previous evaluation's). One jitted
`lax.fori_loop` runs all steps; the number of steps and the guidance weight are traced
values, so new step counts, weights, prompts and seeds reuse the same executable.

CFG rows follow the official sampler: rows 0..B-1 conditional; rows B..2B-1 the same
prompts with every position but BOS set to the pad id and masked out; positions are a
plain arange for every row (so an unconditional row keeps the gap between BOS and t_emb).
The guided velocity is w * v_cond - (w - 1) * v_uncond.

Time runs from t=0 (noise) to t=1 (data); Euler evaluates at the left endpoints
t_k = k/N, as the official sampler does. The ODE state, t and dt stay float32 (rather than
the demo's bfloat16 rounding).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jf_jax.models import janusflow
from jf_jax.models import sequence
from jf_jax.sampling import common

SOLVERS = ("euler", "heun")

# velocity_fn(z [batch, ...] float32, t scalar float32, carry) -> (v like z, carry)
VelocityFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


# ------------------------------------------------------------------------------ the ODE
def integrate(velocity_fn: VelocityFn, z0: jax.Array, num_steps, solver: str = "euler",
              carry: Any = None) -> tuple[jax.Array, Any]:
  """Integrates dz/dt = v(z, t) from t=0 to t=1 in `num_steps` equal steps.

  Euler: z += dt * v(z, t_k) with t_k = k / N (one evaluation per step).
  Heun:  v1 = v(z, t_k), v2 = v(z + dt * v1, t_{k+1}), z += dt * (v1 + v2) / 2 (two
  evaluations per step; the last one at t = 1).

  Args:
    velocity_fn: (z, t, carry) -> (v, carry); `carry` threads state such as a KV cache
      through the loop so it is updated in place.
    z0: initial state (noise), float32.
    num_steps: int, Python or traced (a traced count compiles once for every count).
    solver: 'euler' or 'heun' (static).
    carry: initial carry for `velocity_fn`.
  Returns:
    (z at t=1, final carry).
  """
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
  n = jnp.asarray(num_steps, jnp.int32)
  dt = 1.0 / n.astype(jnp.float32)

  def body(k, state):
    z, carry = state
    t = k.astype(jnp.float32) / n.astype(jnp.float32)
    v, carry = velocity_fn(z, t, carry)
    if solver == "euler":
      return z + dt * v, carry
    t_next = (k + 1).astype(jnp.float32) / n.astype(jnp.float32)
    v_next, carry = velocity_fn(z + dt * v, t_next, carry)
    return z + dt * 0.5 * (v + v_next), carry

  return jax.lax.fori_loop(0, n, body, (z0, carry))


def evaluations_per_step(solver: str) -> int:
  """Velocity evaluations (model calls on the CFG batch) per ODE step."""
  return 2 if solver == "heun" else 1


# ----------------------------------------------------------------- CFG batch and cache
def cfg_prompt_rows(prompt_ids: jax.Array, prompt_mask: jax.Array, pad_id: int):
  """The doubled CFG batch, as the official sampler builds it.

  Args:
    prompt_ids: [B, Lp] int, BOS + prompt tokens (without the generation tag), left-padded.
    prompt_mask: [B, Lp] bool, False on left padding.
    pad_id: the tokenizer's pad id.
  Returns:
    (ids [2B, Lp], mask [2B, Lp]): rows B.. are `sequence.keep_only_bos` of rows ..B
    (the train step's CFG dropout builds the same rows).
  """
  uncond_ids, uncond_mask = sequence.keep_only_bos(prompt_ids, prompt_mask, pad_id)
  return (jnp.concatenate([prompt_ids, uncond_ids], axis=0),
          jnp.concatenate([prompt_mask.astype(bool), uncond_mask], axis=0))


def _prefill(module: janusflow.JanusFlow, ids, mask, num_gen_inputs: int):
  """(Module method) Prompt K/V into a cache sized for prompt + [t_emb, latent tokens]."""
  b, prompt_len = ids.shape
  cache = common.init_cache(module.cfg, b, prompt_len + num_gen_inputs)
  key_valid = jnp.concatenate([mask, jnp.ones((b, num_gen_inputs), bool)], axis=1)
  _, _, cache = module.llm(module.embed_tokens(ids), sequence.default_positions(b, prompt_len),
                           key_valid=key_valid, cache=cache, cache_index=0)
  return cache, key_valid


def prefill_prompt(model: janusflow.JanusFlow, params, ids: jax.Array, mask: jax.Array):
  """Runs the LLM once over the prompt rows; returns (cache, key_valid).

  cache: {'k', 'v'} [layers, rows, Lp + 1 + n, kv_heads, head_dim] with the prompt's K/V in
  slots 0..Lp-1; key_valid: [rows, Lp + 1 + n] bool (the prompt mask, then all valid).
  """
  return model.apply({"params": params}, ids, mask, 1 + model.cfg.num_gen_tokens,
                     method=_prefill)


def _cached_velocity(module: janusflow.JanusFlow, cache, key_valid, z_t, t):
  """(Module method) One velocity evaluation over [t_emb, latent tokens] + cached prompt."""
  tokens, skip, t_emb = module.encode_gen_inputs(z_t, t)
  b, seq = tokens.shape[:2]
  prompt_len = key_valid.shape[1] - seq
  positions = prompt_len + sequence.default_positions(b, seq)
  hidden, _, cache = module.llm(tokens, positions, key_valid=key_valid, cache=cache,
                                cache_index=prompt_len)
  return module.decode_velocity(hidden[:, 1:], skip, t_emb, z_t, t), cache


def cached_velocity(model: janusflow.JanusFlow, params, cache, key_valid, z_t, t):
  """Velocity of every row given its cached prompt.

  Args:
    cache, key_valid: from `prefill_prompt` (or a previous call: only the slots after the
      prompt change, and they are rewritten here).
    z_t: [rows, h, w, c] latents; t: [rows] float in [0, 1].
  Returns:
    (velocity [rows, h, w, c] in the compute dtype, updated cache).
  """
  return model.apply({"params": params}, cache, key_valid, z_t, t, method=_cached_velocity)


def guide(velocity: jax.Array, guidance) -> jax.Array:
  """[2B, ...] (cond rows first) -> w * v_cond - (w - 1) * v_uncond, float32 [B, ...]."""
  v_cond, v_uncond = jnp.split(velocity.astype(jnp.float32), 2, axis=0)
  return guidance * v_cond - (guidance - 1.0) * v_uncond


# ---------------------------------------------------------------------------- sampler
def initial_noise(rng: jax.Array, batch: int, shape: tuple[int, ...]) -> jax.Array:
  """float32 [batch, *shape] noise at t = 0.

  `rng` is one key (the whole batch from one draw) or `batch` keys, one per row: then a
  row's noise depends only on its own key, not on which rows share its batch or device
  (`inference/engine.request_keys`: from the request's seed and the row's index).
  """
  if jnp.ndim(rng) == 1:
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(rng)
  return jax.random.normal(rng, (batch, *shape), jnp.float32)


def sample_latents(model: janusflow.JanusFlow, params, prompt_ids, prompt_mask, rng,
                   num_steps, guidance, *, pad_id: int, solver: str = "euler") -> jax.Array:
  """Generates one latent per prompt row (pure; jit it, see `make_sampler`).

  Args:
    model: the JanusFlow module.
    params: its params (any float dtype; bfloat16 halves the bytes read per step).
    prompt_ids, prompt_mask: [B, Lp], BOS + prompt tokens, left-padded (mask False there).
    rng: PRNG key for the initial noise, or [B] keys, one per row (`initial_noise`).
    num_steps: number of ODE steps (traced is fine).
    guidance: CFG weight w (1: conditional only; 0: unconditional only).
    pad_id: tokenizer pad id (unconditional rows).
    solver: 'euler' or 'heun'.
  Returns:
    [B, latent, latent, channels] float32 latents at t = 1 (VAE latents * scaling).
  """
  cfg = model.cfg
  b = prompt_ids.shape[0]
  ids, mask = cfg_prompt_rows(prompt_ids, prompt_mask, pad_id)
  cache, key_valid = prefill_prompt(model, params, ids, mask)
  z0 = initial_noise(rng, b, (cfg.latent_size, cfg.latent_size, cfg.gen_encoder.in_channels))

  def velocity_fn(z, t, cache):
    z2 = jnp.concatenate([z, z], axis=0)
    v, cache = cached_velocity(model, params, cache, key_valid, z2,
                               jnp.full((2 * b,), t, jnp.float32))
    return guide(v, guidance), cache

  z1, _ = integrate(velocity_fn, z0, num_steps, solver, carry=cache)
  return z1


def to_uint8(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] -> uint8 [0, 255]: clip, then round half up like torchvision's
  `save_image` (the README path; the official demo truncates instead)."""
  x = (jnp.clip(images.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5
  return jnp.floor(x + 0.5).astype(jnp.uint8)


# (params, latents) -> images in [-1, 1], e.g. `models.latent_space.LatentSpace.decode`.
DecodeFn = Callable[[Any, jax.Array], jax.Array]


def make_sample_fn(model: janusflow.JanusFlow, *, pad_id: int, solver: str = "euler",
                   decode_fn: DecodeFn | None = None):
  """The whole text-to-image pipeline as one pure function (jit it once).

  Returns fn(params, prompt_ids, prompt_mask, rng, num_steps, guidance, decode_params=None)
  -> {'latents': [B, L, L, C] float32} plus {'images': [B, H, W, 3] uint8} when
  `decode_fn` is given. Only shapes (batch, prompt length) and the static settings here
  trigger a new compile; steps, guidance, prompts and seeds are traced.
  """
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")

  def fn(params, prompt_ids, prompt_mask, rng, num_steps, guidance, decode_params=None):
    latents = sample_latents(model, params, prompt_ids, prompt_mask, rng, num_steps,
                             jnp.asarray(guidance, jnp.float32), pad_id=pad_id,
                             solver=solver)
    out = {"latents": latents}
    if decode_fn is not None:
      out["images"] = to_uint8(decode_fn(decode_params, latents))
    return out

  return fn


def make_sampler(model: janusflow.JanusFlow, *, pad_id: int, solver: str = "euler",
                 decode_fn: DecodeFn | None = None):
  """`jax.jit` of `make_sample_fn` (see there for the signature)."""
  return jax.jit(make_sample_fn(model, pad_id=pad_id, solver=solver, decode_fn=decode_fn))
