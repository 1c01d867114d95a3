"""The generation space: what the flow model's "latents" are, resolved once from the config.

Every generation row travels as uint8 pixels `gen_pixels` [rows, P, P, 3]; the train step
turns them into the flow's data with `LatentSpace.encode`, and the sampler turns generated
latents back into images with `LatentSpace.decode`. Two kinds (`config.data.gen_space`):

  * "pixel": the latent IS the image in [-1, 1] (the tiny CPU models: no VAE exists
    offline). P = L = `model.latent_size`, C = 3, no parameters (`{}`), encode and decode
    are the identity.
  * "sdxl_vae": scaled SDXL-VAE latents (the 1.3B model). P = L x the VAE's downsample
    factor (384 for the release), C = `vae.latent_channels`; the VAE's params are the
    caller's (train: the encoder half, frozen; inference: the decoder).

Consumers ask this object and nothing else: the input pipeline for P, the step for
`encode`, inference for `decode`, the AOT tool and benchmarks for P.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import vae
from jf_jax.models.config import JanusFlowConfig

KINDS = ("pixel", "sdxl_vae")
# The train step reads only these parts of the VAE; the decoder is inference's.
ENCODER_PARTS = ("encoder", "quant_conv")


@dataclasses.dataclass(frozen=True)
class LatentSpace:
  """One generation space (see the module docstring). Frozen: build once, pass down."""
  kind: str                  # "pixel" | "sdxl_vae"
  pixel_size: int            # P: side of the uint8 images a generation row carries
  latent_size: int           # L: side of the flow's latents
  channels: int              # C: latent channels
  scaling_factor: float = 1.0
  latent_mode: str = "mean"  # training latent of the VAE posterior: "sample" | "mean"
  module: nn.Module | None = None  # vae.AutoencoderKL (sdxl_vae), compute dtype = model's

  @property
  def has_params(self) -> bool:
    return self.module is not None

  @property
  def draws_posterior_noise(self) -> bool:
    """Whether `encode` takes standard-normal noise (the VAE posterior sample)."""
    return self.has_params and self.latent_mode == "sample"

  def latent_shape(self, rows: int) -> tuple[int, int, int, int]:
    return (rows, self.latent_size, self.latent_size, self.channels)

  def encode(self, params: Any, pixels: jax.Array, eps: jax.Array | None = None
             ) -> jax.Array:
    """[b, P, P, 3] in [-1, 1] -> the flow's data [b, L, L, C] float32.

    Pixel space: the image itself. VAE: scaling_factor x the posterior mean, or the
    posterior sample for standard-normal `eps` [b, L, L, C].
    """
    if not self.has_params:
      return pixels.astype(jnp.float32)
    mean, logvar = self.module.apply({"params": params}, pixels, method="encode")
    z = mean if eps is None else vae.posterior_sample(mean, logvar, eps)
    return z * self.scaling_factor

  def decode(self, params: Any, latents: jax.Array) -> jax.Array:
    """[b, L, L, C] -> images [b, P, P, 3] float32, roughly in [-1, 1] (not clipped)."""
    if not self.has_params:
      return latents.astype(jnp.float32)
    return self.module.apply({"params": params}, latents / self.scaling_factor,
                             method="decode")

  def boxed_abstract_params(self, parts: tuple[str, ...] = ENCODER_PARTS) -> dict:
    """Boxed `ShapeDtypeStruct` tree of the VAE params under `parts` ({} in pixel space)."""
    if not self.has_params:
      return {}
    params = vae.abstract_variables(self.module, self.pixel_size).get("params", {})
    return {k: v for k, v in params.items() if k in parts}

  def abstract_params(self, parts: tuple[str, ...] = ENCODER_PARTS) -> dict:
    """Unboxed `boxed_abstract_params` (the compute dtype)."""
    return nn.unbox(self.boxed_abstract_params(parts))


def pixel_space(cfg: JanusFlowConfig) -> LatentSpace:
  """The identity space of a model whose latents are RGB pixels (3 channels, P = L)."""
  for key, channels in (("gen_encoder.in_channels", cfg.gen_encoder.in_channels),
                        ("gen_decoder.out_channels", cfg.gen_decoder.out_channels)):
    if channels != 3:
      raise ValueError(f"config.data.gen_space='pixel' needs config.model.{key}=3 (RGB "
                       f"pixels are the latents), got {channels}")
  return LatentSpace("pixel", cfg.latent_size, cfg.latent_size, 3)


def vae_space(vae_config: Any, cfg: JanusFlowConfig) -> LatentSpace:
  """The SDXL-VAE space for `config.vae` (sizes, `scaling_factor`, `latent_mode`)."""
  vcfg = vae.config_from_dict(vae_config)
  mode = vae_config.get("latent_mode", "sample")
  if mode not in vae.LATENT_MODES:
    raise ValueError(f"config.vae.latent_mode={mode!r}; expected one of {vae.LATENT_MODES}")
  if vcfg.latent_channels != cfg.gen_encoder.in_channels:
    raise ValueError(f"config.vae.latent_channels={vcfg.latent_channels} but "
                     f"config.model.gen_encoder.in_channels={cfg.gen_encoder.in_channels}")
  module = vae.make_vae(vcfg, dtype=cfg.dtype, param_dtype=cfg.dtype)
  return LatentSpace("sdxl_vae", cfg.latent_size * vcfg.downsample_factor, cfg.latent_size,
                     vcfg.latent_channels, vcfg.scaling_factor, mode, module)


def from_config(config: Any, cfg: JanusFlowConfig) -> LatentSpace:
  """The run's space from `config.data.gen_space` (and `config.vae` for "sdxl_vae").

  Raises ValueError naming the key on an unknown kind, a missing `config.vae`, or sizes
  that do not fit the model.
  """
  kind = config.data.get("gen_space", "pixel")
  if kind not in KINDS:
    raise ValueError(f"config.data.gen_space={kind!r}; expected one of {KINDS}")
  if kind == "pixel":
    return pixel_space(cfg)
  if config.get("vae") is None:
    raise ValueError("config.data.gen_space='sdxl_vae' needs config.vae (at least "
                     "config.vae.path: the diffusers-layout SDXL-VAE directory)")
  return vae_space(config.vae, cfg)
