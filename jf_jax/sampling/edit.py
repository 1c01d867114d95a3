"""Image editing: the rectified-flow ODE conditioned on a source image and an instruction,
with two-condition classifier-free guidance (InstructPix2Pix's).

An edit prompt is an understanding-style prompt (`packing.edit_prompt_ids`: the source
image's SigLIP tokens where understanding rows put them, then the instruction) followed by
the generation inputs [t_emb, latent tokens], exactly the train step's edit rows. Each
edit runs three rows through the model, built by `sequence.edit_condition_rows`, the rule
the train step's dropout uses:

  full   (image, instruction)   v_full
  image  (image, no text)       v_image
  none   (BOS only)             v_none  (= `keep_only_bos`, the caption rows' unconditional)

and the guided velocity is

  v = v_none + guidance_image * (v_image - v_none) + guidance_text * (v_full - v_image)

(guidance_text = guidance_image = 1: v_full; guidance_image = 0 ignores the source image's
pull). As `image.py`, the prompt's K/V are computed once for the tripled batch and each
ODE evaluation runs only [t_emb, latent tokens]; steps and both weights are traced.
"""

import jax
import jax.numpy as jnp

from jf_jax.models import janusflow
from jf_jax.models import sequence
from jf_jax.sampling import common
from jf_jax.sampling import image as image_sampling

GUIDED_ROWS = 3  # rows per edit: full, image only, none


def guidance_rows(ids: jax.Array, mask: jax.Array, image_mask: jax.Array, pad_id: int,
                  eoi_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[B, Lp] edit rows -> the [3B, Lp] guidance batch (full rows, image-only rows, BOS-only
  rows, in that order): (ids, mask, image_mask), through `sequence.edit_condition_rows`."""
  b = ids.shape[0]
  keep_image = jnp.concatenate([jnp.ones((2 * b,), bool), jnp.zeros((b,), bool)])
  keep_text = jnp.concatenate([jnp.ones((b,), bool), jnp.zeros((2 * b,), bool)])
  tile = lambda x: jnp.concatenate([x] * GUIDED_ROWS, axis=0)
  out_ids, out_mask = sequence.edit_condition_rows(tile(ids), tile(mask), tile(image_mask),
                                                   keep_image, keep_text, pad_id, eoi_id)
  return out_ids, out_mask, tile(image_mask.astype(bool))


def guide(velocity: jax.Array, guidance_text, guidance_image) -> jax.Array:
  """[3B, ...] (full, image, none) -> the guided velocity float32 [B, ...]."""
  v_full, v_image, v_none = jnp.split(velocity.astype(jnp.float32), GUIDED_ROWS, axis=0)
  return v_none + guidance_image * (v_image - v_none) + guidance_text * (v_full - v_image)


def _prefill(module: janusflow.JanusFlow, ids, mask, images, image_mask, num_gen_inputs):
  """(Module method) K/V of edit prompts (source image tokens merged) into a cache sized
  for prompt + [t_emb, latent tokens]."""
  b, prompt_len = ids.shape
  cache = common.init_cache(module.cfg, b, prompt_len + num_gen_inputs)
  key_valid = jnp.concatenate([mask, jnp.ones((b, num_gen_inputs), bool)], axis=1)
  x = module.embed_understanding(ids, images, image_mask)
  _, _, cache = module.llm(x, sequence.default_positions(b, prompt_len),
                           key_valid=key_valid, cache=cache, cache_index=0)
  return cache, key_valid


def sample_edit_latents(model: janusflow.JanusFlow, params, prompt_ids, prompt_mask,
                        image_mask, images, rng, num_steps, guidance_text, guidance_image,
                        *, pad_id: int, eoi_id: int, solver: str = "euler") -> jax.Array:
  """One edited latent per row (pure; jit it, see `make_edit_sample_fn`).

  Args:
    prompt_ids, prompt_mask, image_mask: [B, Lp] left-padded edit rows
      (`packing.pack_edit`'s layout).
    images: [B, 1, S, S, 3] SigLIP-normalised source images.
    rng: one key or [B] keys (`image.initial_noise`).
    num_steps, guidance_text, guidance_image: traced.
  Returns:
    [B, L, L, C] float32 latents at t = 1.
  """
  cfg = model.cfg
  b = prompt_ids.shape[0]
  ids, mask, imask = guidance_rows(prompt_ids, prompt_mask, image_mask, pad_id, eoi_id)
  tiled = jnp.concatenate([images] * GUIDED_ROWS, axis=0)
  cache, key_valid = model.apply({"params": params}, ids, mask, tiled, imask,
                                 1 + cfg.num_gen_tokens, method=_prefill)
  z0 = image_sampling.initial_noise(
      rng, b, (cfg.latent_size, cfg.latent_size, cfg.gen_encoder.in_channels))

  def velocity_fn(z, t, cache):
    z3 = jnp.concatenate([z] * GUIDED_ROWS, axis=0)
    v, cache = image_sampling.cached_velocity(model, params, cache, key_valid, z3,
                                              jnp.full((GUIDED_ROWS * b,), t, jnp.float32))
    return guide(v, guidance_text, guidance_image), cache

  z1, _ = image_sampling.integrate(velocity_fn, z0, num_steps, solver, carry=cache)
  return z1


def make_edit_sample_fn(model: janusflow.JanusFlow, *, pad_id: int, eoi_id: int,
                        solver: str = "euler",
                        decode_fn: image_sampling.DecodeFn | None = None):
  """The whole edit pipeline as one pure function (jit it once).

  Returns fn(params, prompt_ids, prompt_mask, image_mask, images, rng, num_steps,
  guidance_text, guidance_image, decode_params=None) -> {'latents'} plus {'images': uint8}
  when `decode_fn` is given.
  """
  if solver not in image_sampling.SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; expected one of {image_sampling.SOLVERS}")

  def fn(params, prompt_ids, prompt_mask, image_mask, images, rng, num_steps,
         guidance_text, guidance_image, decode_params=None):
    latents = sample_edit_latents(
        model, params, prompt_ids, prompt_mask, image_mask, images, rng, num_steps,
        jnp.asarray(guidance_text, jnp.float32), jnp.asarray(guidance_image, jnp.float32),
        pad_id=pad_id, eoi_id=eoi_id, solver=solver)
    out = {"latents": latents}
    if decode_fn is not None:
      out["images"] = image_sampling.to_uint8(decode_fn(decode_params, latents))
    return out

  return fn
