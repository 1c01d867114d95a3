"""Generation rows in SDXL-VAE latent space: the frozen VAE encodes inside the train step.

With `config.data.gen_space = "sdxl_vae"` the input pipeline sends each generation image
as pixels, resized (short side) and centre-cropped to P = `model.latent_size` x the VAE's
downsample factor (384 for the release) in [-1, 1]: batch key `gen_pixels` [rows, P, P, 3]
instead of `gen_latents` and `gen_images`. The step (`step.py`) first calls
`encode_generation_rows`, which puts both back on the accelerators:

  gen_latents [rows, L, L, C] = scaling_factor * (posterior sample or mean) of the VAE
  gen_images  [rows, S, S, 3] = the same crop at SigLIP's resolution S (the REPA target;
                                 SigLIP's (x/255 - 0.5)/0.5 is exactly the [-1, 1] scale)

The VAE never trains: its params are a separate argument of the jitted step (not in the
train state, no optimizer state, not checkpointed), stored in the compute dtype, laid out
by the same logical-axis rules as the model (its conv kernels map to no mesh axis, so they
are replicated), and read behind `stop_gradient`. Only the encoder half is loaded (34M
of the SDXL-VAE's 84M params, 68 MB in bf16). The encoder
runs batch-sharded (`act_batch` constraint on its input), one microbatch at a time when
`config.train.microbatches` > 1, so its activations never exceed one microbatch's.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.checkpoint import vae_map
from jf_jax.data import layout
from jf_jax.data import storage
from jf_jax.models import vae
from jf_jax.models.config import JanusFlowConfig
from jf_jax.parallel import microbatches
from jf_jax.parallel import partition

# The posterior noise is drawn from the step key folded with this constant, so it is
# independent of the flow-matching draws (t, noise, prompt dropout) made from the same key.
_POSTERIOR_STREAM = 0x5AE


@dataclasses.dataclass(frozen=True)
class LatentEncoder:
  """The frozen VAE of a latent-space run and how its output becomes training data."""
  module: nn.Module         # vae.AutoencoderKL, compute dtype = the model's
  latent_mode: str          # "sample" or "mean"
  pixel_size: int           # P: side of the images the pipeline sends
  und_size: int             # S: SigLIP's input side (REPA target)

  @property
  def param_dtype(self):
    return self.module.param_dtype


def make_encoder(config: Any, cfg: JanusFlowConfig) -> LatentEncoder | None:
  """The run's VAE encoder; None in pixel space. Checks the config against the model."""
  pixel_size = layout.gen_pixel_size(config, cfg)
  if not pixel_size:
    return None
  vcfg = vae.config_from_dict(config.vae)
  mode = config.vae.get("latent_mode", "sample")
  if mode not in vae.LATENT_MODES:
    raise ValueError(f"config.vae.latent_mode={mode!r}; expected one of {vae.LATENT_MODES}")
  if vcfg.latent_channels != cfg.gen_encoder.in_channels:
    raise ValueError(f"config.vae.latent_channels={vcfg.latent_channels} but "
                     f"config.model.gen_encoder.in_channels={cfg.gen_encoder.in_channels}")
  module = vae.make_vae(vcfg, dtype=cfg.dtype, param_dtype=cfg.dtype)
  return LatentEncoder(module, mode, pixel_size, cfg.und_encoder.image_size)


# The step only encodes: the decoder's params (about 60% of the VAE) are read from the
# file but never placed on the devices.
_ENCODER_PARTS = ("encoder", "quant_conv")


def _encoder_half(params: dict) -> dict:
  return {k: v for k, v in params.items() if k in _ENCODER_PARTS}


def _boxed_abstract(encoder: LatentEncoder):
  return _encoder_half(
      vae.abstract_variables(encoder.module, encoder.pixel_size).get("params", {}))


def abstract_params(encoder: LatentEncoder):
  """Unboxed `ShapeDtypeStruct` tree of the VAE params the step reads (the encoder and
  quant_conv; compute dtype)."""
  return nn.unbox(_boxed_abstract(encoder))


def param_shardings(encoder: LatentEncoder, mesh, rules):
  """NamedShardings of the VAE params from their logical axis names and `rules`."""
  return partition.mesh_shardings(_boxed_abstract(encoder), mesh, rules)


def load_params(config: Any, encoder: LatentEncoder, shardings) -> Any:
  """Reads `config.vae.path` (diffusers layout) and places it with `shardings`.

  Raises FileNotFoundError naming `config.vae.path` when it is unset or missing: a
  latent-space run cannot start without its VAE.
  """
  path = config.vae.get("path", "")
  if not path or not storage.exists(path):
    raise FileNotFoundError(
        f"config.vae.path={path!r} does not exist: data.gen_space='sdxl_vae' encodes the "
        "generation images with the SDXL-VAE; download stabilityai/sdxl-vae (diffusers "
        "layout: config.json + diffusion_pytorch_model.safetensors) and set "
        "--config.vae.path to that directory")
  params = vae_map.load_vae(storage.local_copy(path), encoder.module.cfg,
                            dtype=encoder.param_dtype)
  return jax.device_put(_encoder_half(params), shardings)


def resize_for_siglip(pixels: jax.Array, size: int) -> jax.Array:
  """[b, P, P, 3] in [-1, 1] -> [b, size, size, 3] SigLIP input (bicubic, antialiased;
  the identity when P == size, as for the release: 384 both)."""
  if pixels.shape[1:3] == (size, size):
    return pixels.astype(jnp.float32)
  return jax.image.resize(pixels.astype(jnp.float32), (pixels.shape[0], size, size, 3),
                          method="bicubic", antialias=True)


def encode_pixels(encoder: LatentEncoder, params, pixels: jax.Array,
                  eps: jax.Array | None = None) -> jax.Array:
  """[b, P, P, 3] in [-1, 1] -> data latents [b, L, L, C] float32: scaling_factor x the
  posterior mean (eps None) or the posterior sample for standard-normal noise `eps`."""
  mean, logvar = encoder.module.apply({"params": params}, pixels, method="encode")
  z = mean if eps is None else vae.posterior_sample(mean, logvar, eps)
  return vae.scale_latents(z, encoder.module.cfg.scaling_factor)


def encode_generation_rows(encoder: LatentEncoder, vae_params, batch: dict, rng: jax.Array,
                           num_chunks: int = 1) -> dict:
  """Replaces `gen_pixels` by `gen_latents` and `gen_images` (see the module docstring).

  Args:
    encoder: from `make_encoder`.
    vae_params: the frozen VAE params.
    batch: the step's batch with `gen_pixels` [rows, P, P, 3] in [-1, 1].
    rng: the step's key (the posterior noise uses a stream of its own).
    num_chunks: encode rows in this many sequential chunks (the microbatches).
  Returns:
    The batch without `gen_pixels`, with `gen_latents` [rows, L, L, C] float32 and
    `gen_images` [rows, S, S, 3] float32; no gradient flows into either.
  """
  out = dict(batch)
  pixels = out.pop("gen_pixels")
  rows = pixels.shape[0]
  params = jax.lax.stop_gradient(vae_params)
  f = encoder.module.cfg.downsample_factor
  latent_shape = (rows, pixels.shape[1] // f, pixels.shape[2] // f,
                  encoder.module.cfg.latent_channels)
  eps = None
  if encoder.latent_mode == "sample":
    eps = jax.random.normal(jax.random.fold_in(rng, _POSTERIOR_STREAM), latent_shape,
                            jnp.float32)
  if num_chunks <= 1 or rows == 0:
    latents = encode_pixels(encoder, params, pixels, eps)
  else:
    # The step's own strided microbatches: every device encodes its own rows.
    chunk = lambda x: microbatches.split(x, num_chunks)
    xs = (chunk(pixels), None if eps is None else chunk(eps))
    latents = microbatches.merge(
        jax.lax.map(lambda a: encode_pixels(encoder, params, *a), xs))
  out["gen_latents"] = jax.lax.stop_gradient(latents)
  out["gen_images"] = jax.lax.stop_gradient(resize_for_siglip(pixels, encoder.und_size))
  return out
