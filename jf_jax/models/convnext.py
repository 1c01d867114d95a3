"""ConvNeXt block with GlobalResponseNorm and time-conditioned FiLM (official `uvit.py`).

Channels-last throughout ([batch, H, W, C]); weights load from the official NCHW layout by
the conversion table. Shared by the generation encoder (C = 768) and decoder (C = 1536).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import layers

Dtype = Any


class GlobalResponseNorm(nn.Module):
  """ConvNeXt-V2 GRN: out = bias + (weight * n + 1) * x, n = |x|_HW / mean_C(|x|_HW)."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, H, W, D] -> same."""
    dim = x.shape[-1]
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                        (None, None, None, "gen_mlp"))
    # Official parameter shape [1, 1, 1, D] kept so it broadcasts over NHWC directly.
    weight = self.param("weight", init, (1, 1, 1, dim), self.param_dtype)
    bias = self.param("bias", init, (1, 1, 1, dim), self.param_dtype)
    x32 = x.astype(jnp.float32)
    gx = jnp.sqrt(jnp.sum(x32 * x32, axis=(1, 2), keepdims=True))
    nx = (gx / (jnp.mean(gx, axis=-1, keepdims=True) + 1e-6)).astype(self.dtype)
    weight, bias = jnp.asarray(weight, self.dtype), jnp.asarray(bias, self.dtype)
    return bias + (weight * nx + 1) * x.astype(self.dtype)


class ConvNeXtBlock(nn.Module):
  """depthwise 7x7 -> RMSNorm -> Linear(4C) -> GELU -> GRN -> Linear(C) -> +x -> FiLM(t)."""
  norm_eps: float = 1e-6
  ffn_factor: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    """Runs the block.

    Args:
      x: [batch, H, W, C].
      cond: [batch, cond_dim] time embedding t_emb.
    Returns:
      [batch, H, W, C].
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    channels = x.shape[-1]
    x = x.astype(self.dtype)  # the residual is in compute dtype too (output dtype = dtype)
    residual = x
    x = nn.Conv(channels, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=channels,
                kernel_init=nn.with_logical_partitioning(
                    layers.default_kernel_init,
                    ("conv_h", "conv_w", None, "gen_embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                       ("gen_embed",)),
                name="depthwise", **kw)(x)
    x = layers.RMSNorm(self.norm_eps, name="norm", axis_name="gen_embed", **kw)(x)
    x = layers.dense(channels * self.ffn_factor, ("gen_embed", "gen_mlp"),
                     name="channelwise_linear_1", **kw)(x)
    x = GlobalResponseNorm(name="channelwise_norm", **kw)(layers.gelu_exact(x))
    x = layers.dense(channels, ("gen_mlp", "gen_embed"), name="channelwise_linear_2", **kw)(x)
    x = x + residual
    film = layers.dense(2 * channels, ("embed", "gen_embed"), name="cond_embeds_mapper",
                        **kw)(nn.silu(cond.astype(self.dtype)))
    scale, shift = jnp.split(film, 2, axis=-1)  # first C is scale, last C is shift
    return shift[:, None, None, :] + x * (1 + scale[:, None, None, :])


class UVitBlock(nn.Module):
  """`mid_block`: a stack of ConvNeXt blocks (no down/upsampling in JanusFlow)."""
  num_blocks: int
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.res_blocks = [ConvNeXtBlock(self.norm_eps, dtype=self.dtype,
                                     param_dtype=self.param_dtype)
                       for _ in range(self.num_blocks)]

  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    for block in self.res_blocks:
      x = block(x, cond)
    return x
