"""Multi-head attention (with grouped KV heads) over `jax.nn.dot_product_attention`.

`LlamaAttention` mirrors the official `self_attn` module (q/k/v/o projections, no bias) and
supports a KV cache passed as an explicit pytree, so samplers can prefill a prompt once.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import layers
from jf_jax.models import rope

Dtype = Any


def causal_mask(query_slots: jax.Array, num_keys: int, key_valid: jax.Array | None) -> jax.Array:
  """Boolean attention mask: causal by slot index and key padding.

  Args:
    query_slots: [seq] int, the cache slot (or sequence index) of each query.
    num_keys: number of key slots T.
    key_valid: [batch, T] bool, False for padding keys; None means all valid.
  Returns:
    [batch or 1, 1, seq, T] bool.
  """
  keys = jnp.arange(num_keys)
  mask = keys[None, :] <= query_slots[:, None]  # [s, t]
  mask = mask[None, None]
  if key_valid is not None:
    mask = mask & key_valid[:, None, None, :]
  return mask


@flax.struct.dataclass
class CausalPadding:
  """A causal mask over keys = queries, plus key padding, left for the kernel to build.

  What `LlamaModel` passes instead of a dense `causal_mask` when the config asks for a
  fused kernel (`llm.attention_impl`): `jax.nn.dot_product_attention(is_causal=True)`
  applies causality inside the kernel; key padding, when given, goes in as a
  [batch, 1, seq, seq] mask. key_valid: [batch, seq] bool, or None (all valid).
  """
  key_valid: jax.Array | None = None


# cuDNN's fused (flash) attention trains only on sequence lengths that are multiples of 64.
CUDNN_SEQ_MULTIPLE = 64


def causal_padded_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                            key_valid: jax.Array | None, scale: float | None = None,
                            implementation: str | None = None,
                            seq_multiple: int = 1) -> jax.Array:
  """Causal attention with key padding, built by the kernel (`is_causal=True`).

  q [b, s, n, h], k/v [b, s, kv, h]; key_valid [b, s] bool or None. The sequence is
  zero-padded at the end to a multiple of `seq_multiple` for kernels that need it: the
  extra keys come after every real query, so causality hides them, and the extra queries'
  outputs are dropped. They are marked valid so no row is fully masked (NaN-free).
  """
  s = q.shape[1]
  extra = -s % seq_multiple
  if extra:
    pad = lambda x: jnp.pad(x, ((0, 0), (0, extra), (0, 0), (0, 0)))
    q, k, v = pad(q), pad(k), pad(v)
    if key_valid is not None:
      key_valid = jnp.pad(key_valid, ((0, 0), (0, extra)), constant_values=True)
  padding = None
  if key_valid is not None:  # full query length: cuDNN's bias may not broadcast it
    padding = jnp.broadcast_to(key_valid[:, None, None, :],
                               (q.shape[0], 1, q.shape[1], k.shape[1]))
  out = jax.nn.dot_product_attention(q, k, v, mask=padding, scale=scale, is_causal=True,
                                     implementation=implementation)
  return out[:, :s]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: "jax.Array | CausalPadding | None",
           scale: float | None = None, implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention; q [b, s, n, h], k/v [b, t, kv, h] (n % kv == 0).

  mask: a dense [b or 1, 1, s, t] bool mask, None (no mask), or `CausalPadding` (s == t).
  implementation: `jax.nn.dot_product_attention`'s ("xla", "cudnn"; None = its default),
    used with `CausalPadding` only: dense masks (cached decoding) always take its default.
    With "cudnn" the sequence is padded to a multiple of `CUDNN_SEQ_MULTIPLE`.
  """
  if isinstance(mask, CausalPadding):
    multiple = CUDNN_SEQ_MULTIPLE if implementation == "cudnn" else 1
    return causal_padded_attention(q, k, v, mask.key_valid, scale, implementation, multiple)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)


class LlamaAttention(nn.Module):
  """Causal self-attention with RoPE; grouped KV heads when num_kv_heads < num_heads."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None  # jax.nn.dot_product_attention's, with CausalPadding

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               cache: dict | None = None, cache_index: jax.Array | None = None):
    """Runs attention.

    Args:
      x: [batch, seq, embed].
      positions: [batch, seq] RoPE positions.
      mask: [batch or 1, 1, seq, keys] bool (keys = seq, or cache length with a cache),
        or `CausalPadding` (no cache).
      cache: optional {'k', 'v'}: [batch, cache_len, kv_heads, head_dim]; the new keys and
        values are written at `cache_index` and attention runs over the whole cache.
      cache_index: int scalar, first cache slot of this call.
    Returns:
      ([batch, seq, embed], updated cache or None).
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
    q = layers.dense((self.num_heads, self.head_dim), ("embed", "q_heads", "head_dim"),
                     name="q_proj", **kw)(x)
    k = layers.dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"),
                     name="k_proj", **kw)(x)
    v = layers.dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"),
                     name="v_proj", **kw)(x)
    cos, sin = rope.rope_cos_sin(positions, self.head_dim, self.rope_theta)
    q = rope.apply_rope(q, cos, sin)
    k = rope.apply_rope(k, cos, sin)
    q = nn.with_logical_constraint(q, ("act_batch", "act_len", "act_heads", None))
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype),
                                              cache_index, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype),
                                              cache_index, axis=1)
      cache = {"k": k, "v": v}
    out = attend(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                 implementation=self.implementation)
    out = layers.dense(x.shape[-1], ("q_heads", "head_dim", "embed"), axis=(-2, -1),
                       name="o_proj", **kw)(out)
    return out, cache
