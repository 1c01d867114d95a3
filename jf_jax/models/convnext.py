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


def _grouped_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'same' per-channel convolution: x [b, H, W, C], kernel [k, k, 1, C]."""
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((pad, pad), (pad, pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def _sum_of_taps(padded: jax.Array, kernel: jax.Array, height: int, width: int) -> jax.Array:
  """sum_{i,j} padded[:, i:i+height, j:j+width, :] * kernel[i, j, 0], in float32.

  `padded` [b, height+k-1, width+k-1, C] is materialised first (optimization_barrier):
  otherwise XLA fuses whatever produced it into the sum and computes it k*k times.
  """
  k = kernel.shape[0]
  padded = jax.lax.optimization_barrier(padded)
  taps = kernel.astype(jnp.float32)
  out = None
  for i in range(k):
    for j in range(k):
      term = padded[:, i:i + height, j:j + width, :].astype(jnp.float32) * taps[i, j, 0]
      out = term if out is None else out + term
  return out


def _pad(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


@jax.custom_vjp
def depthwise_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same 'same' per-channel convolution as a sum over the k*k taps of shifted inputs.

  x [b, H, W, C], kernel [k, k, 1, C] -> [b, H, W, C]. XLA fuses the sum into one loop
  over the output; on XLA:CPU this runs ~16x faster than its grouped convolution
  (docs/benchmarks.md, "The CPU profile"). The input gradient is the same sum over the
  output gradient with the kernel flipped, the kernel gradient one reduction per tap;
  all are elementwise ops and reductions, which partition correctly with the batch
  sharded. Taps accumulate in float32 whatever the compute dtype, as a convolution's
  accumulator would.
  """
  pad = kernel.shape[0] // 2
  return _sum_of_taps(_pad(x, pad), kernel, x.shape[1], x.shape[2]).astype(x.dtype)


def _taps_fwd(x, kernel):
  return depthwise_taps(x, kernel), (x, kernel)


def _taps_bwd(residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  pad = k // 2
  height, width = x.shape[1], x.shape[2]
  dx = _sum_of_taps(_pad(g, pad), kernel[::-1, ::-1], height, width).astype(x.dtype)
  padded = jax.lax.optimization_barrier(_pad(x, pad).astype(jnp.float32))
  g32 = jax.lax.optimization_barrier(g.astype(jnp.float32))
  dk = jnp.stack([jnp.sum(padded[:, i:i + height, j:j + width, :] * g32, axis=(0, 1, 2))
                  for i in range(k) for j in range(k)])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


depthwise_taps.defvjp(_taps_fwd, _taps_bwd)


@jax.custom_vjp
def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """XLA's grouped convolution whose kernel gradient is computed tap by tap.

  XLA's SPMD partitioner computes a wrong kernel gradient for a grouped convolution when
  the batch is sharded (reproduced on the 8-device CPU mesh: the gradient is off by its
  own magnitude). The forward pass and the input gradient stay grouped convolutions; the
  kernel gradient is a `fori_loop` over the k*k taps of sum_{b,h,w} x_shifted * g, which
  partitions as plain reductions.
  """
  return _grouped_conv(x, kernel)


def _depthwise_fwd(x, kernel):
  return _grouped_conv(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda inp: _grouped_conv(inp, kernel), x)
  (dx,) = input_vjp(g)
  k, channels = kernel.shape[0], kernel.shape[-1]
  pad = k // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  g32 = g.astype(jnp.float32)

  def tap(index, grads):
    window = jax.lax.dynamic_slice(padded, (0, index // k, index % k, 0), x.shape)
    return grads.at[index].set(jnp.sum(window.astype(jnp.float32) * g32, axis=(0, 1, 2)))
  dk = jax.lax.fori_loop(0, k * k, tap, jnp.zeros((k * k, channels), jnp.float32))
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)

# `depthwise` of the generation towers' configs: how the 7x7 per-channel convolution runs
# (the same function either way; tests/test_convnext.py checks they agree).
DEPTHWISE_IMPLS = {"taps": depthwise_taps, "grouped": depthwise_conv}


class DepthwiseConv(nn.Module):
  """torch `Conv2d(C, C, k, padding=k//2, groups=C)`; params `kernel` [k, k, 1, C], `bias`."""
  kernel_size: int = 7
  impl: str = "grouped"  # a key of DEPTHWISE_IMPLS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, H, W, C] -> [batch, H, W, C]."""
    k, channels = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
        ("conv_h", "conv_w", None, "gen_embed")), (k, k, 1, channels), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ("gen_embed",)), (channels,), self.param_dtype)
    conv = DEPTHWISE_IMPLS[self.impl]
    out = conv(x.astype(self.dtype), jnp.asarray(kernel, self.dtype))
    return out + jnp.asarray(bias, self.dtype)


class ConvNeXtBlock(nn.Module):
  """depthwise 7x7 -> RMSNorm -> Linear(4C) -> GELU -> GRN -> Linear(C) -> +x -> FiLM(t)."""
  norm_eps: float = 1e-6
  ffn_factor: int = 4
  depthwise: str = "grouped"  # DepthwiseConv.impl
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
    x = DepthwiseConv(7, self.depthwise, name="depthwise", **kw)(x)
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
  depthwise: str = "grouped"  # DepthwiseConv.impl
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.res_blocks = [ConvNeXtBlock(self.norm_eps, depthwise=self.depthwise,
                                     dtype=self.dtype,
                                     param_dtype=self.param_dtype)
                       for _ in range(self.num_blocks)]

  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    for block in self.res_blocks:
      x = block(x, cond)
    return x
