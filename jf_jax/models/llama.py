"""The shared LLM: a Llama-architecture decoder (DeepSeek-LLM 1.3B in the release).

Module and parameter names mirror transformers' `LlamaForCausalLM`
(`language_model.model.layers.{i}.self_attn.q_proj` ...) so the checkpoint table stays
dumb. Layers are stacked with `nn.scan` (leading `layers` axis on every layer parameter)
and optionally rematerialised with a named policy.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import attention
from jf_jax.models import layers
from jf_jax.models.config import LlamaConfig

Dtype = Any
ACT = ("act_batch", "act_len", "act_embed")


class LlamaMLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
    gate = layers.dense(self.mlp_dim, ("embed", "mlp"), name="gate_proj", **kw)(x)
    up = layers.dense(self.mlp_dim, ("embed", "mlp"), name="up_proj", **kw)(x)
    h = nn.with_logical_constraint(nn.silu(gate) * up, ("act_batch", "act_len", "act_mlp"))
    return layers.dense(x.shape[-1], ("mlp", "embed"), name="down_proj", **kw)(h)


class LlamaDecoderLayer(nn.Module):
  """Pre-norm block; written as a scan body: (carry, xs) -> (carry, ys).

  carry = (hidden [batch, seq, embed], captured hidden or None); xs = (layer index, this
  layer's KV cache or None); ys = updated cache or None.
  """
  cfg: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, xs, positions, mask, cache_index, capture_layer):
    h, captured = carry
    layer_index, cache = xs
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layers.RMSNorm(cfg.rms_norm_eps, name=name, axis_name="embed", **kw)
    attn_out, cache = attention.LlamaAttention(
        cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, name="self_attn",
        implementation=cfg.attention_impl, **kw)(norm("input_layernorm")(h), positions,
                                                 mask, cache, cache_index)
    h = h + attn_out
    h = h + LlamaMLP(cfg.mlp_dim, name="mlp", **kw)(norm("post_attention_layernorm")(h))
    h = nn.with_logical_constraint(h, ACT)
    if captured is not None:
      captured = jnp.where(layer_index + 1 == capture_layer, h, captured)
    return (h, captured), cache


class LlamaModel(nn.Module):
  """Embedding, scanned decoder layers and final norm (`language_model.model`)."""
  cfg: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.cfg
    self.embed_tokens = nn.Embed(
        cfg.vocab_size, cfg.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))
    body = layers.maybe_remat(LlamaDecoderLayer, cfg.remat_policy)
    self.layers = nn.scan(
        body, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, dtype=self.dtype, param_dtype=self.param_dtype)
    self.norm = layers.RMSNorm(cfg.rms_norm_eps, dtype=self.dtype,
                               param_dtype=self.param_dtype, axis_name="embed")

  def embed(self, ids: jax.Array) -> jax.Array:
    """[batch, seq] int -> [batch, seq, embed]."""
    return self.embed_tokens(ids)

  def __call__(self, x, positions, key_valid=None, cache=None, cache_index=0, mask=None,
               capture_layer=None):
    """Runs the decoder.

    Args:
      x: [batch, seq, embed] input embeddings.
      positions: [batch, seq] int RoPE positions.
      key_valid: [batch, keys] bool key-padding mask (keys = seq, or the cache length).
      cache: optional {'k', 'v'}: [layers, batch, cache_len, kv_heads, head_dim].
      cache_index: int scalar, cache slot of the first query.
      mask: optional explicit [batch, 1, seq, keys] bool mask (overrides causal+padding).
      capture_layer: optional int; also return HF `hidden_states[capture_layer]` (the
        output of the first `capture_layer` blocks, before the final norm).
    Returns:
      (normed final hidden [batch, seq, embed], captured or None, updated cache or None).
    """
    x = nn.with_logical_constraint(x.astype(self.dtype), ACT)
    seq = x.shape[1]
    if mask is None and cache is None and self.cfg.attention_impl != "xla":
      mask = attention.CausalPadding(key_valid)  # the fused kernel builds the mask itself
    elif mask is None:
      num_keys = seq if cache is None else cache["k"].shape[2]
      mask = attention.causal_mask(cache_index + jnp.arange(seq), num_keys, key_valid)
    captured = None
    if capture_layer is not None:
      captured = jnp.where(capture_layer == 0, x, jnp.zeros_like(x))
    xs = (jnp.arange(self.cfg.num_layers), cache)
    (h, captured), cache = self.layers((x, captured), xs, positions, mask, cache_index,
                                       capture_layer)
    return self.norm(h), captured, cache


class LlamaForCausalLM(nn.Module):
  """`language_model`: the decoder plus an untied `lm_head`."""
  cfg: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.model = LlamaModel(self.cfg, dtype=self.dtype, param_dtype=self.param_dtype)
    self.lm_head = layers.dense(self.cfg.vocab_size, ("embed", "vocab"), name="lm_head",
                                use_bias=False, dtype=self.dtype,
                                param_dtype=self.param_dtype)

  def embed(self, ids: jax.Array) -> jax.Array:
    return self.model.embed(ids)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[batch, seq, embed] -> [batch, seq, vocab] float32."""
    return self.lm_head(hidden).astype(jnp.float32)

  def __call__(self, x, positions, **kwargs):
    """Same as `LlamaModel.__call__`; returns (hidden, captured, cache)."""
    return self.model(x, positions, **kwargs)

  def forward_ids(self, ids: jax.Array, positions: jax.Array | None = None,
                  key_valid: jax.Array | None = None) -> jax.Array:
    """Token ids [batch, seq] -> logits [batch, seq, vocab] (full causal pass, no cache)."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    hidden, _, _ = self.model(self.embed(ids), positions, key_valid=key_valid)
    return self.logits(hidden)


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype: Dtype) -> dict:
  """Empty KV cache {'k', 'v'}: [layers, batch, length, kv_heads, head_dim]."""
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
