"""Rotary position embeddings with the rotate-half pairing of HF Llama.

HF pairs dimension i with i + head_dim/2 (not interleaved neighbours), so the official q/k
projection weights load without any permutation.
"""

import jax
import jax.numpy as jnp


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables for integer positions.

  Args:
    positions: [batch, seq] int.
  Returns:
    (cos, sin), each [batch, seq, head_dim] float32 (frequencies repeated for both halves).
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, s, head_dim/2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def _rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates `x` [batch, seq, heads, head_dim] by per-position angles (cos/sin [b, s, d]).

  Like HF, the tables are cast to the activation dtype before use.
  """
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + _rotate_half(x) * sin
