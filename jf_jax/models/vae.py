"""SDXL-VAE (diffusers `AutoencoderKL`, `stabilityai/sdxl-vae`) in Linen, channels-last.

JanusFlow never trains the VAE: images in [-1, 1] are encoded once into latents
that the flow model sees scaled by 0.13025, and generated latents are unscaled and decoded.
Module and parameter names mirror diffusers (`down_blocks_0/resnets_1/norm1` for
`down_blocks.0.resnets.1.norm1`), so `checkpoint/vae_map.py` stays a dumb table. Numerics
follow diffusers: GroupNorm eps 1e-6, SiLU, single-head mid-block self-attention, downsample
by zero padding (bottom, right) then a stride-2 3x3 conv, upsample by nearest 2x then a 3x3
conv, posterior log-variance clamped to [-30, 20]. How latents are scaled, sampled and
decoded for the flow model: `models/latent_space.py`.
"""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import layers

Dtype = Any

SDXL_SCALING_FACTOR = 0.13025
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # diffusers `DiagonalGaussianDistribution` clamp
# Keys of `config.vae` that are not sizes: where the diffusers weights live, and which value
# of the posterior becomes the training latent ("sample": mean + std * noise, the spec's
# recommendation; "mean": deterministic). `config_from_dict` ignores them.
RUN_KEYS = ("path", "latent_mode")
LATENT_MODES = ("sample", "mean")
_BATCH_NHWC = ("act_batch", None, None, None)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Sizes of the image autoencoder; the defaults are `stabilityai/sdxl-vae`."""
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  norm_eps: float = 1e-6
  scaling_factor: float = SDXL_SCALING_FACTOR
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  @property
  def downsample_factor(self) -> int:
    """Image size / latent size (8 for the SDXL-VAE)."""
    return 2 ** (len(self.block_out_channels) - 1)


def validate(cfg: VAEConfig) -> None:
  """Fails early, naming the field, on sizes that cannot work."""
  for ch in cfg.block_out_channels:
    if ch % cfg.norm_num_groups:
      raise ValueError(f"vae.block_out_channels entry {ch} is not divisible by "
                       f"vae.norm_num_groups={cfg.norm_num_groups}")


def config_from_dict(d: Mapping[str, Any]) -> VAEConfig:
  """`VAEConfig` from a ConfigDict / dict (lists become tuples; unknown keys rejected,
  `RUN_KEYS` skipped)."""
  d = {k: v for k, v in dict(d).items() if k not in RUN_KEYS}
  known = {f.name for f in dataclasses.fields(VAEConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"unknown keys for VAEConfig: {unknown}; known: {sorted(known)}")
  if "block_out_channels" in d:
    d["block_out_channels"] = tuple(int(c) for c in d["block_out_channels"])
  cfg = VAEConfig(**d)
  validate(cfg)
  return cfg


# -------------------------------------------------------------------------- blocks
class ResnetBlock(nn.Module):
  """diffusers `ResnetBlock2D` without time embedding: GN-SiLU-conv x2 + (1x1) shortcut."""
  features: int
  num_groups: int
  eps: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, C_in] -> [b, H, W, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gn = dict(eps=self.eps, **kw)
    h = nn.silu(layers.group_norm(self.num_groups, name="norm1", **gn)(x))
    h = layers.conv(self.features, 3, name="conv1", **kw)(h)
    h = nn.silu(layers.group_norm(self.num_groups, name="norm2", **gn)(h))
    h = layers.conv(self.features, 3, name="conv2", **kw)(h)
    if x.shape[-1] != self.features:
      x = layers.conv(self.features, 1, name="conv_shortcut", **kw)(x)
    return x.astype(self.dtype) + h


class AttentionBlock(nn.Module):
  """diffusers mid-block `Attention` (one head of width C): x + to_out(attn(GN(x)))."""
  num_groups: int
  eps: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, C] -> same (self-attention over the H*W positions)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, height, width, c = x.shape
    h = layers.group_norm(self.num_groups, name="group_norm", eps=self.eps, **kw)(x)
    h = h.reshape(b, height * width, c)
    axes = ("conv_in", "conv_out")
    # [b, T, 1 head, C]; softmax scale 1/sqrt(C) as in diffusers (dim_head = C).
    q, k, v = (layers.dense(c, axes, name=n, **kw)(h)[:, :, None, :]
               for n in ("to_q", "to_k", "to_v"))
    o = jax.nn.dot_product_attention(q, k, v).reshape(b, height * width, c)
    o = layers.dense(c, axes, name="to_out_0", **kw)(o)
    return x.astype(self.dtype) + o.reshape(b, height, width, c)


class MidBlock(nn.Module):
  """`UNetMidBlock2D`: resnet, attention, resnet (constant width)."""
  num_groups: int
  eps: float
  add_attention: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, h, w, C] -> same."""
    kw = dict(num_groups=self.num_groups, eps=self.eps, dtype=self.dtype,
              param_dtype=self.param_dtype)
    x = ResnetBlock(x.shape[-1], name="resnets_0", **kw)(x)
    if self.add_attention:
      x = AttentionBlock(name="attentions_0", **kw)(x)
    return ResnetBlock(x.shape[-1], name="resnets_1", **kw)(x)


class Downsample(nn.Module):
  """`Downsample2D(padding=0)`: zero pad (0, 1) on H and W, then a stride-2 3x3 conv."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, C] -> [b, H/2, W/2, C]."""
    return layers.conv(x.shape[-1], 3, strides=2, padding=((0, 1), (0, 1)), name="conv",
                       dtype=self.dtype, param_dtype=self.param_dtype)(x)


class Upsample(nn.Module):
  """`Upsample2D`: nearest-neighbour 2x, then a 3x3 conv."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, C] -> [b, 2H, 2W, C]."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return layers.conv(c, 3, name="conv", dtype=self.dtype,
                       param_dtype=self.param_dtype)(x.reshape(b, 2 * h, 2 * w, c))


class UpDownBlock(nn.Module):
  """`DownEncoderBlock2D` / `UpDecoderBlock2D`: resnets, then an optional resampler."""
  features: int
  num_layers: int
  num_groups: int
  eps: float
  resample: str | None = None  # 'down', 'up' or None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, C_in] -> [b, H', W', features] (H' = H/2, 2H or H)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for j in range(self.num_layers):
      x = ResnetBlock(self.features, self.num_groups, self.eps, name=f"resnets_{j}", **kw)(x)
    if self.resample == "down":
      x = Downsample(name="downsamplers_0", **kw)(x)
    elif self.resample == "up":
      x = Upsample(name="upsamplers_0", **kw)(x)
    return x


class Encoder(nn.Module):
  """diffusers `vae.Encoder` (double_z): image -> 2 * latent_channels moments."""
  cfg: VAEConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, H, W, in_channels] -> [b, H/f, W/f, 2 * latent_channels] (f = downsample)."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = dict(num_groups=cfg.norm_num_groups, eps=cfg.norm_eps)
    chans = cfg.block_out_channels
    x = layers.conv(chans[0], 3, name="conv_in", **kw)(x)
    for i, ch in enumerate(chans):
      x = UpDownBlock(ch, cfg.layers_per_block, resample="down" if i < len(chans) - 1 else None,
                      name=f"down_blocks_{i}", **norm, **kw)(x)
    x = MidBlock(add_attention=cfg.mid_block_add_attention, name="mid_block", **norm, **kw)(x)
    x = nn.silu(layers.group_norm(cfg.norm_num_groups, eps=cfg.norm_eps, name="conv_norm_out",
                                  **kw)(x))
    return layers.conv(2 * cfg.latent_channels, 3, name="conv_out", **kw)(x)


class Decoder(nn.Module):
  """diffusers `vae.Decoder` (group norm): latents -> image."""
  cfg: VAEConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """[b, h, w, latent_channels] -> [b, h*f, w*f, out_channels]."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = dict(num_groups=cfg.norm_num_groups, eps=cfg.norm_eps)
    chans = tuple(reversed(cfg.block_out_channels))
    x = layers.conv(chans[0], 3, name="conv_in", **kw)(z)
    x = MidBlock(add_attention=cfg.mid_block_add_attention, name="mid_block", **norm, **kw)(x)
    for i, ch in enumerate(chans):
      x = UpDownBlock(ch, cfg.layers_per_block + 1,
                      resample="up" if i < len(chans) - 1 else None,
                      name=f"up_blocks_{i}", **norm, **kw)(x)
    x = nn.silu(layers.group_norm(cfg.norm_num_groups, eps=cfg.norm_eps, name="conv_norm_out",
                                  **kw)(x))
    return layers.conv(cfg.out_channels, 3, name="conv_out", **kw)(x)


def _check_spatial(x: jax.Array, factor: int, what: str) -> None:
  if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
    raise ValueError(f"{what} must be [batch, H, W, C] with H and W multiples of {factor}; "
                     f"got shape {x.shape}")


# -------------------------------------------------------------------------- models
class AutoencoderKL(nn.Module):
  """The SDXL-VAE. `encode` / `decode` are the entry points; `__call__` (for `init`) runs both.

  Outputs are float32 whatever the compute `dtype` (the official code runs the VAE in bfloat16).
  """
  cfg: VAEConfig = VAEConfig()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = Encoder(cfg, **kw)
    self.decoder = Decoder(cfg, **kw)
    if cfg.use_quant_conv:
      self.quant_conv = layers.conv(2 * cfg.latent_channels, 1, **kw)
    if cfg.use_post_quant_conv:
      self.post_quant_conv = layers.conv(cfg.latent_channels, 1, **kw)

  def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior of the latents (unscaled; see `scale_latents`).

    Args:
      images: [b, H, W, in_channels] in [-1, 1]; H, W multiples of `downsample_factor`.
    Returns:
      (mean, logvar), each [b, H/f, W/f, latent_channels] float32 (f = 8 for SDXL);
      logvar clamped to [-30, 20].
    """
    _check_spatial(images, self.cfg.downsample_factor, "images")
    x = nn.with_logical_constraint(images.astype(self.dtype), _BATCH_NHWC)
    moments = self.encoder(x)
    if self.cfg.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

  def decode(self, latents: jax.Array) -> jax.Array:
    """Unscaled latents [b, h, w, latent_channels] -> images [b, h*f, w*f, out_channels].

    f = `downsample_factor` (8 for the SDXL-VAE); float32, roughly in [-1, 1] (not clipped).
    """
    z = nn.with_logical_constraint(latents.astype(self.dtype), _BATCH_NHWC)
    if self.cfg.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Reconstruction from the posterior mean: [b, H, W, 3] -> [b, H, W, 3] float32."""
    mean, _ = self.encode(images)
    return self.decode(mean)


def make_vae(cfg: VAEConfig, dtype: Dtype = jnp.bfloat16,
             param_dtype: Dtype = jnp.float32) -> nn.Module:
  """The `AutoencoderKL` of a config (checked)."""
  validate(cfg)
  return AutoencoderKL(cfg, dtype=dtype, param_dtype=param_dtype)


def abstract_variables(module: nn.Module, image_size: int | None = None):
  """Boxed `eval_shape` variables of a VAE module (nothing allocated)."""
  size = image_size or 8 * module.cfg.downsample_factor
  images = jax.ShapeDtypeStruct((1, size, size, module.cfg.in_channels), jnp.float32)
  return jax.eval_shape(lambda x: module.init(jax.random.key(0), x), images)


def posterior_sample(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
  """The posterior sample for given standard-normal noise `eps` (diffusers'
  `DiagonalGaussianDistribution.sample`), float32; all three [b, h, w, latent_channels]."""
  return mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps
