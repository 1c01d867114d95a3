"""Generation rows inside the train step: uint8 pixels -> the flow's data + the REPA target.

Every generation row arrives as `gen_pixels` [rows, P, P, 3] (normalised to [-1, 1] on the
devices by `data/device_inputs.py`). `encode_generation_rows` replaces them by

  gen_latents [rows, L, L, C] = `LatentSpace.encode` of the pixels (pixel space: the
                                 pixels; SDXL-VAE: scaling_factor x posterior sample/mean)
  gen_images  [rows, S, S, 3] = the same crop at SigLIP's resolution S (the REPA target;
                                 SigLIP's (x/255 - 0.5)/0.5 is exactly the [-1, 1] scale)

The step's frozen inputs are one pytree, `frozen` (`{}` in pixel space; the VAE's encoder
half otherwise): never trained, not in the train state, not checkpointed, stored in the
compute dtype, laid out by the model's logical-axis rules (conv kernels map to no mesh
axis: replicated), and read behind `stop_gradient`. Only the encoder half is loaded (34M of
the SDXL-VAE's 84M params, 68 MB in bf16). The encoder runs batch-sharded, one microbatch
at a time when `config.train.microbatches` > 1, so its activations never exceed one
microbatch's.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jf_jax.checkpoint import vae_map
from jf_jax.data import storage
from jf_jax.models import latent_space as latent_space_lib
from jf_jax.models.latent_space import LatentSpace
from jf_jax.parallel import microbatches
from jf_jax.parallel import partition

# The posterior noise is drawn from the step key folded with this constant, so it is
# independent of the flow-matching draws (t, noise, prompt dropout) made from the same key.
_POSTERIOR_STREAM = 0x5AE
_EDIT_POSTERIOR_STREAM = 0x5AF  # the edit rows' targets


def frozen_shardings(space: LatentSpace, mesh, rules) -> dict:
  """NamedShardings of the step's `frozen` params from their logical axis names."""
  return partition.mesh_shardings(space.boxed_abstract_params(), mesh, rules)


def load_frozen(config: Any, space: LatentSpace, shardings) -> dict:
  """The step's `frozen` params, placed with `shardings`: {} in pixel space, else the VAE
  encoder half read from `config.vae.path` (diffusers layout).

  Raises FileNotFoundError naming `config.vae.path` when it is unset or missing: a
  latent-space run cannot start without its VAE.
  """
  if not space.has_params:
    return {}
  path = config.vae.get("path", "")
  if not path or not storage.exists(path):
    raise FileNotFoundError(
        f"config.vae.path={path!r} does not exist: data.gen_space='sdxl_vae' encodes the "
        "generation images with the SDXL-VAE; download stabilityai/sdxl-vae (diffusers "
        "layout: config.json + diffusion_pytorch_model.safetensors) and set "
        "--config.vae.path to that directory")
  params = vae_map.load_vae(storage.local_copy(path), space.module.cfg,
                            dtype=space.module.param_dtype)
  encoder = {k: v for k, v in params.items() if k in latent_space_lib.ENCODER_PARTS}
  return jax.device_put(encoder, shardings)


def resize_for_siglip(pixels: jax.Array, size: int) -> jax.Array:
  """[b, P, P, 3] in [-1, 1] -> [b, size, size, 3] SigLIP input (bicubic, antialiased;
  the identity when P == size, as for the release (384 both) and the tiny pixel models)."""
  if pixels.shape[1:3] == (size, size):
    return pixels.astype(jnp.float32)
  return jax.image.resize(pixels.astype(jnp.float32), (pixels.shape[0], size, size, 3),
                          method="bicubic", antialias=True)


def encode_generation_rows(space: LatentSpace, frozen, batch: dict, rng: jax.Array,
                           und_size: int, num_chunks: int = 1) -> dict:
  """Replaces `gen_pixels` by `gen_latents` and `gen_images` (see the module docstring).

  Args:
    space: the run's generation space.
    frozen: its params ({} in pixel space).
    batch: the step's batch with `gen_pixels` [rows, P, P, 3] in [-1, 1].
    rng: the step's key (the posterior noise uses a stream of its own).
    und_size: S, SigLIP's input side.
    num_chunks: encode rows in this many sequential chunks (the microbatches).
  Returns:
    The batch without `gen_pixels`, with `gen_latents` [rows, L, L, C] float32 and
    `gen_images` [rows, S, S, 3] float32; no gradient flows into either. Edit rows'
    `edit_pixels`, when present, become `edit_latents` the same way.
  """
  out = dict(batch)
  pixels = out.pop("gen_pixels")
  params = jax.lax.stop_gradient(frozen)
  out["gen_latents"] = _encode(space, params, pixels, rng, _POSTERIOR_STREAM, num_chunks)
  out["gen_images"] = jax.lax.stop_gradient(resize_for_siglip(pixels, und_size))
  if "edit_pixels" in out:
    # The edit rows' targets, into the same space (no REPA target: edits train the flow).
    out["edit_latents"] = _encode(space, params, out.pop("edit_pixels"), rng,
                                  _EDIT_POSTERIOR_STREAM, num_chunks)
  return out


def _encode(space: LatentSpace, params, pixels, rng, stream: int, num_chunks: int):
  """[rows, P, P, 3] in [-1, 1] -> the flow's data [rows, L, L, C], no gradient."""
  rows = pixels.shape[0]
  eps = None
  if space.draws_posterior_noise:
    eps = jax.random.normal(jax.random.fold_in(rng, stream), space.latent_shape(rows),
                            jnp.float32)
  if num_chunks <= 1 or rows == 0 or not space.has_params:
    latents = space.encode(params, pixels, eps)
  else:
    # The step's own strided microbatches: every device encodes its own rows.
    chunk = lambda x: microbatches.split(x, num_chunks)
    xs = (chunk(pixels), None if eps is None else chunk(eps))
    latents = microbatches.merge(jax.lax.map(lambda a: space.encode(params, *a), xs))
  return jax.lax.stop_gradient(latents)
