"""Generation decoder (official `ShallowUViTDecoder`): LLM features + skip -> velocity.

RMSNorm(LLM features) ++ encoder skip (channels, in that order) -> ConvNeXt x N at twice the
encoder width -> `Unpatchify` (RMSNorm -> 1x1 conv -> pixel shuffle) -> [batch, h, w, 4].
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import convnext
from jf_jax.models import layers
from jf_jax.models.config import GenDecoderConfig

Dtype = Any


def pixel_shuffle(x: jax.Array, patch: int) -> jax.Array:
  """torch `PixelShuffle` on NHWC: channel c*p*p + i*p + j -> (row h*p+i, col w*p+j, c).

  [batch, h, w, C*p*p] -> [batch, h*p, w*p, C].
  """
  b, h, w, c = x.shape
  out = c // (patch * patch)
  x = x.reshape(b, h, w, out, patch, patch)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, c
  return x.reshape(b, h * patch, w * patch, out)


class Unpatchify(nn.Module):
  """`out_convs.0`: RMSNorm -> 1x1 conv to out*p*p channels -> pixel shuffle."""
  out_channels: int
  patch_size: int
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.RMSNorm(self.norm_eps, name="norm", axis_name="gen_embed", **kw)(x)
    x = nn.Conv(self.out_channels * self.patch_size ** 2, (1, 1),
                kernel_init=nn.with_logical_partitioning(
                    layers.default_kernel_init,
                    ("conv_h", "conv_w", "gen_embed", "conv_out")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                       ("conv_out",)),
                name="unpatch_conv", **kw)(x)
    return pixel_shuffle(x, self.patch_size)


class ShallowUViTDecoder(nn.Module):
  """`vision_gen_dec_model`."""
  cfg: GenDecoderConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.input_norm = layers.RMSNorm(cfg.norm_eps, axis_name="gen_embed", **kw)
    self.mid_block = convnext.UVitBlock(cfg.num_blocks, cfg.norm_eps, cfg.depthwise, **kw)
    self.out_convs = [Unpatchify(cfg.out_channels, cfg.patch_size, cfg.norm_eps, **kw)]

  def __call__(self, x: jax.Array, skip: jax.Array, t_emb: jax.Array) -> jax.Array:
    """Decodes a velocity.

    Args:
      x: [batch, h', w', C] LLM features after the decoder aligner.
      skip: [batch, h', w', C] generation-encoder features (the long skip).
      t_emb: [batch, cond_dim].
    Returns:
      [batch, h'*p, w'*p, out_channels] velocity.
    """
    x = jnp.concatenate([self.input_norm(x), skip.astype(self.dtype)], axis=-1)
    x = self.mid_block(x, t_emb)
    for out_conv in self.out_convs:
      x = out_conv(x)
    return x
