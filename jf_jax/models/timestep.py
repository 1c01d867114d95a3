"""Time conditioning of the generation encoder.

`timestep_features` is diffusers' `Timesteps(dim, flip_sin_to_cos=True,
downscale_freq_shift=0)` (cos half first); `TimestepEmbedding` is diffusers'
`TimestepEmbedding` (linear_1 -> SiLU -> linear_2). The model is fed 1000*t.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import layers

Dtype = Any


def timestep_features(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal features of (already scaled) timesteps.

  Args:
    timesteps: [batch] float (the model's time axis is 1000*t).
  Returns:
    [batch, dim] float32: concat[cos(t*f_k), sin(t*f_k)], f_k = exp(-ln(max_period)*k/half).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """`time_embed`: linear_1 -> SiLU -> linear_2 (no activation after linear_2)."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, dim] -> [batch, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.dense(self.features, ("gen_embed", "embed"), name="linear_1", **kw)(x)
    return layers.dense(self.features, ("embed", None), name="linear_2",
                        **kw)(nn.silu(h))
