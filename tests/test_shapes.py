"""Shapes, dtypes and small exact semantics of every module, on the tiny config.

Each test runs in float32 and bfloat16 compute (`dataclasses.replace(cfg, dtype=...)`);
parameters are always stored in float32. Parameters are random arrays of the shapes
`jax.eval_shape(module.init)` reports, which keeps the tests off XLA's slow compile of the
random initialisers; `eval_shape` still sees exactly what `init` would create (names, shapes,
dtypes and logical axis metadata). Also here: logical axis names on every parameter, the KV
cache against a full pass, HF `hidden_states[k]` semantics of `capture_layer`, the exact
parameter count of the released 1.3B configuration and config validation messages.
"""

import dataclasses
import functools
import math
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jf_jax import testing

from jf_jax import config_defaults
from jf_jax.models import attention
from jf_jax.models import config as model_config
from jf_jax.models import convnext
from jf_jax.models import gen_decoder
from jf_jax.models import gen_encoder
from jf_jax.models import janusflow
from jf_jax.models import layers
from jf_jax.models import llama
from jf_jax.models import repa
from jf_jax.models import rope
from jf_jax.models import sequence
from jf_jax.models import siglip
from jf_jax.models import timestep
import config_files

TINY = model_config.from_config_dict(config_defaults.model_tiny())
B = 2  # batch used throughout

# The tiny shapes run in microseconds; XLA:CPU's LLVM optimisation passes dominate the test
# time, and turning them off cuts compile time about 2.5x without changing what is checked.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _normal(seed: int, shape, dtype=jnp.float32) -> jax.Array:
  """Gaussian test input, drawn with numpy (no eager XLA compiles for random bits)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32), dtype)


def _randint(seed: int, shape, high: int) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).integers(0, high, shape), jnp.int32)


def _positions(seq: int, offset: int = 0) -> jax.Array:
  """[B, seq] RoPE positions offset, offset + 1, ..."""
  return jnp.asarray(np.broadcast_to(offset + np.arange(seq, dtype=np.int32), (B, seq)))


def _causal(query_slots: np.ndarray, num_keys: int) -> jax.Array:
  """[1, 1, seq, keys] causal mask by slot (what `attention.causal_mask` builds)."""
  return jnp.asarray((np.arange(num_keys)[None, :] <= query_slots[:, None])[None, None])


def _random_like(abstract, seed: int = 0, std: float = 0.1):
  """Random arrays for an (unboxed) abstract variable tree; norm scales near one."""
  return testing.random_like(abstract, seed, std)


def _variables(module: nn.Module, *args, method=None, seed: int = 0, **kwargs):
  """Random variables for `module` (shapes from `eval_shape` of its init); also the boxes."""
  boxed = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *args, method=method, **kwargs))
  return _random_like(nn.unbox(boxed), seed), boxed


def _assert_params_float32(variables) -> None:
  for leaf in jax.tree.leaves(variables["params"]):
    assert leaf.dtype == jnp.float32, leaf


def _tol(dtype) -> dict:
  return dict(atol=1e-5, rtol=1e-5) if dtype == jnp.float32 else dict(atol=5e-2, rtol=5e-2)


@pytest.fixture(scope="module", params=[jnp.float32, jnp.bfloat16],
                ids=["float32", "bfloat16"])
def dtype(request):
  return request.param


@pytest.fixture(scope="module")
def cfg(dtype):
  return dataclasses.replace(TINY, dtype=dtype)


# ------------------------------------------------------------------------------ layers
def test_rms_norm(dtype):
  norm = layers.RMSNorm(eps=1e-6, dtype=dtype)
  x = _normal(1, (B, 3, 8), dtype)
  variables = nn.unbox(jit(norm.init)(jax.random.key(0), x))  # real init: scale is ones
  chex.assert_trees_all_equal(variables["params"]["scale"], jnp.ones((8,), jnp.float32))
  variables = {"params": {"scale": jnp.arange(1.0, 9.0, dtype=jnp.float32)}}
  y = jit(norm.apply)(variables, x)
  chex.assert_shape(y, (B, 3, 8))
  chex.assert_type(y, dtype)
  x32 = np.asarray(x, np.float32)
  expected = x32 / np.sqrt(np.mean(x32 ** 2, -1, keepdims=True) + 1e-6) * np.arange(1, 9)
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, **_tol(dtype))


def test_global_response_norm(dtype):
  grn = convnext.GlobalResponseNorm(dtype=dtype)
  x = _normal(1, (B, 3, 4, 16), dtype)
  variables = nn.unbox(jit(grn.init)(jax.random.key(0), x))
  chex.assert_shape([variables["params"]["weight"], variables["params"]["bias"]],
                    (1, 1, 1, 16))
  _assert_params_float32(variables)
  y = jit(grn.apply)(variables, x)  # zero-initialised weight and bias: identity
  chex.assert_type(y, dtype)
  chex.assert_trees_all_equal(y, x)
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(2, 1, 1, 1, 16)).astype(np.float32)
  y = jit(grn.apply)({"params": {"weight": w, "bias": b}}, x)
  x32 = np.asarray(x, np.float32)
  g = np.sqrt((x32 ** 2).sum(axis=(1, 2), keepdims=True))
  n = g / (g.mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(np.asarray(y, np.float32), b + (w * n + 1) * x32, **_tol(dtype))


# --------------------------------------------------------------------------- attention
def test_llama_attention_and_kv_cache_write(cfg, dtype):
  llm = cfg.llm
  attn = attention.LlamaAttention(llm.num_heads, llm.num_kv_heads, llm.head_dim,
                                  llm.rope_theta, dtype=dtype)
  seq, cache_len, index, new = 5, 8, 3, 2
  x = _normal(1, (B, seq, llm.embed_dim), dtype)
  positions = _positions(seq)
  mask = _causal(np.arange(seq), seq)
  variables, _ = _variables(attn, x, positions, mask)
  params = variables["params"]
  chex.assert_shape(params["q_proj"]["kernel"], (llm.embed_dim, llm.num_heads, llm.head_dim))
  chex.assert_shape([params["k_proj"]["kernel"], params["v_proj"]["kernel"]],
                    (llm.embed_dim, llm.num_kv_heads, llm.head_dim))
  chex.assert_shape(params["o_proj"]["kernel"], (llm.num_heads, llm.head_dim, llm.embed_dim))

  apply = jit(attn.apply)
  out, cache = apply(variables, x, positions, mask)
  chex.assert_shape(out, (B, seq, llm.embed_dim))
  chex.assert_type(out, dtype)
  assert cache is None

  # KV-cache mode: `new` tokens written at slot `index` of a `cache_len` cache.
  kv_shape = (B, cache_len, llm.num_kv_heads, llm.head_dim)
  cache = {"k": jnp.asarray(np.zeros(kv_shape), dtype), "v": jnp.asarray(np.zeros(kv_shape), dtype)}
  x_new = x[:, :new]
  pos_new = _positions(new, offset=index)
  mask_new = _causal(index + np.arange(new), cache_len)
  out, cache = apply(variables, x_new, pos_new, mask_new, cache, jnp.int32(index))
  chex.assert_shape(out, (B, new, llm.embed_dim))
  chex.assert_type(out, dtype)
  chex.assert_shape([cache["k"], cache["v"]], kv_shape)
  chex.assert_type([cache["k"], cache["v"]], dtype)
  written = slice(index, index + new)
  for name in ("k", "v"):  # untouched slots stay zero
    np.testing.assert_array_equal(np.asarray(cache[name][:, :index], np.float32), 0)
    np.testing.assert_array_equal(np.asarray(cache[name][:, index + new:], np.float32), 0)
  x32 = np.asarray(x_new, np.float32)
  k = np.einsum("bse,ekh->bskh", x32, np.asarray(params["k_proj"]["kernel"]))
  v = np.einsum("bse,ekh->bskh", x32, np.asarray(params["v_proj"]["kernel"]))
  cos, sin = rope.rope_cos_sin(pos_new, llm.head_dim, llm.rope_theta)
  k = rope.apply_rope(jnp.asarray(k), cos, sin)
  np.testing.assert_allclose(np.asarray(cache["k"][:, written], np.float32), k, **_tol(dtype))
  np.testing.assert_allclose(np.asarray(cache["v"][:, written], np.float32), v, **_tol(dtype))


def test_causal_padding_mask_equals_dense_mask(dtype):
  """`CausalPadding` (what llm.attention_impl='cudnn' passes) = the dense causal mask, on
  the XLA kernel, with left-padded keys; and through the whole scanned LLM."""
  q = _normal(1, (B, 6, 4, 8), dtype)
  k, v = _normal(2, (B, 6, 2, 8), dtype), _normal(3, (B, 6, 2, 8), dtype)
  key_valid = jnp.asarray(np.arange(6)[None, :] >= np.array([[0], [2]]))  # row 1: 2 pads
  dense = attention.attend(q, k, v, attention.causal_mask(jnp.arange(6), 6, key_valid))
  fused = jit(attention.attend, static_argnames="implementation")(
      q, k, v, attention.CausalPadding(key_valid), implementation="xla")
  chex.assert_trees_all_close(fused[:, 2:], dense[:, 2:], **_tol(dtype))  # valid queries
  # The cuDNN path pads the sequence to a kernel-friendly multiple (6 -> 8): same values,
  # and gradients through the padding stay finite and equal too.
  padded = attention.causal_padded_attention(q, k, v, key_valid, implementation="xla",
                                             seq_multiple=4)
  chex.assert_trees_all_close(padded[:, 2:], dense[:, 2:], **_tol(dtype))
  loss = lambda fn: jax.grad(lambda q: jnp.sum(fn(q)[:, 2:].astype(jnp.float32) ** 2))(q)
  grad_padded = loss(lambda q: attention.causal_padded_attention(q, k, v, key_valid,
                                                                 seq_multiple=4))
  grad_dense = loss(lambda q: attention.attend(
      q, k, v, attention.causal_mask(jnp.arange(6), 6, key_valid)))
  chex.assert_tree_all_finite(grad_padded)
  chex.assert_trees_all_close(grad_padded, grad_dense, **_tol(dtype))
  no_padding = attention.attend(q, k, v, attention.CausalPadding())
  chex.assert_trees_all_close(
      no_padding, attention.attend(q, k, v, attention.causal_mask(jnp.arange(6), 6, None)),
      **_tol(dtype))

  model = llama.LlamaModel(dataclasses.replace(TINY.llm, num_layers=2), dtype=dtype)
  x, positions = _normal(4, (B, 6, TINY.llm.embed_dim)), _positions(6)
  variables, _ = _variables(model, x, positions)
  run = jit(lambda v, mask: model.apply(v, x, positions, key_valid=key_valid, mask=mask)[0])
  chex.assert_trees_all_close(run(variables, attention.CausalPadding(key_valid))[:, 2:],
                              run(variables, None)[:, 2:], **_tol(dtype))


def test_attention_impl_is_validated():
  bad = config_defaults.model_tiny()
  bad.llm.attention_impl = "flash"
  with pytest.raises(ValueError, match="model.llm.attention_impl='flash'"):
    model_config.from_config_dict(bad)


# --------------------------------------------------------------------------------- LLM
@pytest.fixture(scope="module")
def llm_setup(cfg):
  """The tiny LLM, random params, input embeddings and one jitted full pass."""
  model = llama.LlamaForCausalLM(cfg.llm, dtype=cfg.dtype)
  seq = 7
  x = _normal(2, (B, seq, cfg.llm.embed_dim))
  positions = _positions(seq)
  # `forward_ids` touches the embedding, every layer and the lm_head.
  variables, _ = _variables(model, positions, method="forward_ids")

  @jit
  def run(variables, capture_layer):
    """capture_layer is traced, so every k shares one compilation."""
    hidden, captured, cache = model.apply(variables, x, positions,
                                          capture_layer=capture_layer)
    assert cache is None
    return hidden, captured, model.apply(variables, hidden, method="logits")

  return model, variables, x, positions, run


def test_llama_for_causal_lm(cfg, dtype, llm_setup):
  model, variables, x, positions, run = llm_setup
  llm = cfg.llm
  _assert_params_float32(variables)
  layer_params = variables["params"]["model"]["layers"]
  chex.assert_shape(layer_params["mlp"]["gate_proj"]["kernel"],
                    (llm.num_layers, llm.embed_dim, llm.mlp_dim))
  chex.assert_shape(layer_params["input_layernorm"]["scale"], (llm.num_layers, llm.embed_dim))
  chex.assert_shape(variables["params"]["lm_head"]["kernel"], (llm.embed_dim, llm.vocab_size))

  hidden, captured, logits = run(variables, 1)
  chex.assert_shape([hidden, captured], x.shape)
  chex.assert_type([hidden, captured], dtype)
  chex.assert_shape(logits, (B, x.shape[1], llm.vocab_size))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite((hidden, logits))

  hidden, captured, cache = jax.eval_shape(lambda v: model.apply(v, x, positions), variables)
  assert captured is None and cache is None
  ids = jnp.zeros((B, 3), jnp.int32)
  logits = jax.eval_shape(lambda v: model.apply(v, ids, method="forward_ids"), variables)
  chex.assert_shape(logits, (B, 3, llm.vocab_size))
  chex.assert_type(logits, jnp.float32)


def test_capture_layer_is_hf_hidden_states(cfg, dtype, llm_setup):
  """captured(k) = HF hidden_states[k]: embeddings, then each block's output, pre-norm."""
  _, variables, x, positions, run = llm_setup
  llm = cfg.llm
  block = llama.LlamaDecoderLayer(llm, dtype=dtype)
  mask = _causal(np.arange(x.shape[1]), x.shape[1])

  @jit
  def one_block(layer_params, h):
    (h, _), _ = block.apply({"params": layer_params}, (h, None), (0, None), positions, mask,
                            0, None)
    return h

  layer_params = variables["params"]["model"]["layers"]
  tol = _tol(dtype)
  hidden, captured, _ = run(variables, 0)
  chex.assert_trees_all_equal(captured, x.astype(dtype))  # k = 0: the input embeddings
  for k in range(1, llm.num_layers + 1):
    previous = captured
    _, captured, _ = run(variables, k)
    params_k = jax.tree.map(lambda p, i=k - 1: p[i], layer_params)
    np.testing.assert_allclose(np.asarray(captured, np.float32),
                               np.asarray(one_block(params_k, previous), np.float32), **tol)
  # k = num_layers: the last block's output, before the final norm.
  h = np.asarray(captured, np.float32)
  scale = np.asarray(variables["params"]["model"]["norm"]["scale"])
  normed = h / np.sqrt(np.mean(h * h, -1, keepdims=True) + llm.rms_norm_eps) * scale
  np.testing.assert_allclose(normed, np.asarray(hidden, np.float32), **tol)


def test_kv_cache_matches_full_pass(cfg, dtype, llm_setup):
  """Prefill + one-token steps through the LLM's cache == one full pass (f32: 1e-5)."""
  model, variables, x, positions, run = llm_setup
  full, _, _ = run(variables, 0)
  apply = jit(model.apply)
  cache_len = 12  # longer than the sequence: the unused slots must stay masked
  cache = llama.init_cache(cfg.llm, B, cache_len, dtype)
  outputs, start = [], 0
  for stop in range(4, x.shape[1] + 1):  # prefill 4 tokens, then decode one at a time
    out, _, cache = apply(variables, x[:, start:stop], positions[:, start:stop], cache=cache,
                          cache_index=jnp.int32(start))
    outputs.append(out)
    start = stop
  chex.assert_shape([cache["k"], cache["v"]], (cfg.llm.num_layers, B, cache_len,
                                               cfg.llm.num_kv_heads, cfg.llm.head_dim))
  chex.assert_type([cache["k"], cache["v"]], dtype)
  np.testing.assert_array_equal(np.asarray(cache["k"][:, :, x.shape[1]:], np.float32), 0)
  tol = dict(atol=1e-5, rtol=0) if dtype == jnp.float32 else _tol(dtype)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(outputs, axis=1), np.float32),
                             np.asarray(full, np.float32), **tol)


# ------------------------------------------------------------------------------ SigLIP
def test_siglip_vision_transformer(cfg, dtype):
  und = cfg.und_encoder
  vit = siglip.VisionTransformer(und, dtype=dtype)
  images = _normal(3, (B, und.image_size, und.image_size, 3))
  variables, _ = _variables(vit, images)
  _assert_params_float32(variables)
  params = variables["params"]
  chex.assert_shape(params["pos_embed"], (1, und.num_patches, und.width))
  chex.assert_shape(params["patch_embed"]["proj"]["kernel"],
                    (und.patch_size, und.patch_size, 3, und.width))
  head_dim = und.width // und.num_heads
  chex.assert_shape(params["blocks"]["attn"]["qkv"]["kernel"],
                    (und.depth, und.width, 3, und.num_heads, head_dim))
  assert "attn_pool" in params  # stored by the checkpoint even though never run

  features, pooled = jit(lambda v, i: vit.apply(v, i, pool=True))(variables, images)
  chex.assert_shape(features, (B, und.num_patches, und.width))
  chex.assert_shape(pooled, (B, und.width))
  chex.assert_type([features, pooled], dtype)
  chex.assert_tree_all_finite((features, pooled))
  # pool=False returns the same features alone (shape check without another compile).
  plain = jax.eval_shape(vit.apply, variables, images)
  chex.assert_shape(plain, (B, und.num_patches, und.width))
  chex.assert_type(plain, dtype)

  with pytest.raises(ValueError, match="model.und_encoder.image_size"):
    vit.apply(variables, images[:, :-8])


# -------------------------------------------------------------------------- generation
def test_timestep_embedding(cfg, dtype):
  dim, features = cfg.gen_encoder.channels, cfg.llm.embed_dim
  t = jnp.array([0.0, 500.0])
  feats = timestep.timestep_features(t, dim)
  chex.assert_shape(feats, (B, dim))
  chex.assert_type(feats, jnp.float32)
  np.testing.assert_array_equal(feats[0], np.r_[np.ones(dim // 2), np.zeros(dim // 2)])  # cos first
  module = timestep.TimestepEmbedding(features, dtype=dtype)
  variables, _ = _variables(module, feats)
  chex.assert_shape(variables["params"]["linear_1"]["kernel"], (dim, features))
  chex.assert_shape(variables["params"]["linear_2"]["kernel"], (features, features))
  out = jit(module.apply)(variables, feats.astype(dtype))
  chex.assert_shape(out, (B, features))
  chex.assert_type(out, dtype)


def test_convnext_block(cfg, dtype):
  channels, cond_dim = cfg.gen_encoder.channels, cfg.llm.embed_dim
  block = convnext.ConvNeXtBlock(cfg.gen_encoder.norm_eps, dtype=dtype)
  x = _normal(4, (B, 4, 4, channels))
  cond = _normal(5, (B, cond_dim))
  variables, _ = _variables(block, x, cond)
  _assert_params_float32(variables)
  params = variables["params"]
  chex.assert_shape(params["depthwise"]["kernel"], (7, 7, 1, channels))
  chex.assert_shape(params["channelwise_linear_1"]["kernel"], (channels, 4 * channels))
  chex.assert_shape([params["channelwise_norm"]["weight"], params["channelwise_norm"]["bias"]],
                    (1, 1, 1, 4 * channels))
  chex.assert_shape(params["cond_embeds_mapper"]["kernel"], (cond_dim, 2 * channels))
  y = jit(block.apply)(variables, x, cond)
  chex.assert_shape(y, x.shape)
  chex.assert_type(y, dtype)
  chex.assert_tree_all_finite(y)


def test_gen_encoder_and_decoder(cfg, dtype):
  enc_cfg, embed = cfg.gen_encoder, cfg.llm.embed_dim
  size, p, c = cfg.latent_size, enc_cfg.patch_size, enc_cfg.channels
  encoder = gen_encoder.ShallowUViTEncoder(enc_cfg, embed, dtype=dtype)
  z = _normal(6, (B, size, size, enc_cfg.in_channels))
  t = jnp.array([0.0, 999.0])
  enc_vars, _ = _variables(encoder, z, t)
  _assert_params_float32(enc_vars)
  chex.assert_shape(enc_vars["params"]["in_conv"]["kernel"], (p, p, enc_cfg.in_channels, c))
  feats, t_emb = jit(encoder.apply)(enc_vars, z, t)
  chex.assert_shape(feats, (B, size // p, size // p, c))
  chex.assert_shape(t_emb, (B, embed))
  chex.assert_type([feats, t_emb], dtype)

  decoder = gen_decoder.ShallowUViTDecoder(cfg.gen_decoder, dtype=dtype)
  dec_vars, _ = _variables(decoder, feats, feats, t_emb)
  _assert_params_float32(dec_vars)
  params = dec_vars["params"]
  chex.assert_shape(params["input_norm"]["scale"], (c,))
  chex.assert_shape(params["mid_block"]["res_blocks_0"]["depthwise"]["kernel"],
                    (7, 7, 1, 2 * c))  # decoder blocks run at twice the encoder width
  chex.assert_shape(params["out_convs_0"]["unpatch_conv"]["kernel"],
                    (1, 1, 2 * c, cfg.gen_decoder.out_channels * p * p))
  velocity = jit(decoder.apply)(dec_vars, feats, feats, t_emb)
  chex.assert_shape(velocity, z.shape)
  chex.assert_type(velocity, dtype)
  chex.assert_tree_all_finite((feats, t_emb, velocity))


def test_pixel_shuffle_matches_torch_layout():
  # torch PixelShuffle(2): input channel c*4 + i*2 + j -> output (2h+i, 2w+j, c).
  x = jnp.arange(1 * 2 * 3 * 8, dtype=jnp.float32).reshape(1, 2, 3, 8)
  y = gen_decoder.pixel_shuffle(x, 2)
  chex.assert_shape(y, (1, 4, 6, 2))
  for h, w, c, i, j in [(0, 0, 0, 0, 0), (1, 2, 1, 1, 0), (0, 1, 1, 0, 1), (1, 0, 0, 1, 1)]:
    assert y[0, 2 * h + i, 2 * w + j, c] == x[0, h, w, c * 4 + i * 2 + j]


def test_repa_projector(cfg, dtype):
  rcfg, width = cfg.repa, cfg.und_encoder.width
  proj = repa.RepaProjector(rcfg.hidden_dim, width, rcfg.num_layers, dtype=dtype)
  h = _normal(7, (B, 5, cfg.llm.embed_dim), dtype)
  variables, _ = _variables(proj, h)
  _assert_params_float32(variables)
  params = variables["params"]
  assert sorted(params) == [f"dense_{i}" for i in range(rcfg.num_layers)]
  chex.assert_shape(params["dense_0"]["kernel"], (cfg.llm.embed_dim, rcfg.hidden_dim))
  chex.assert_shape(params[f"dense_{rcfg.num_layers - 1}"]["kernel"], (rcfg.hidden_dim, width))
  out = jit(proj.apply)(variables, h)
  chex.assert_shape(out, (B, 5, width))
  chex.assert_type(out, dtype)


# ---------------------------------------------------------------------------- sequence
def test_merge_embeddings_places_kth_image_embedding(dtype):
  rng = np.random.default_rng(0)
  text = rng.normal(size=(2, 7, 4)).astype(np.float32)
  images = rng.normal(size=(2, 3, 4)).astype(np.float32)
  flagged = [[1, 2, 5], [0, 3, 6]]
  mask = np.zeros((2, 7), bool)
  for row, cols in enumerate(flagged):
    mask[row, cols] = True
  out = sequence.merge_embeddings(jnp.asarray(text, dtype), jnp.asarray(images),
                                  jnp.asarray(mask))
  chex.assert_shape(out, text.shape)
  chex.assert_type(out, dtype)
  out = np.asarray(out, np.float32)
  for row, cols in enumerate(flagged):
    for k, col in enumerate(cols):
      np.testing.assert_array_equal(out[row, col], np.asarray(jnp.asarray(images[row, k], dtype),
                                                              np.float32))
  np.testing.assert_array_equal(out[~mask], np.asarray(jnp.asarray(text, dtype),
                                                       np.float32)[~mask])


# ---------------------------------------------------------------------------- JanusFlow
@pytest.fixture(scope="module")
def janus(cfg):
  model = janusflow.JanusFlow(cfg)
  boxed = janusflow.abstract_params(model)
  return model, {"params": _random_like(nn.unbox(boxed)["params"], std=0.05)}


def test_janusflow_understand(cfg, dtype, janus):
  model, variables = janus
  _assert_params_float32(variables)
  n_img, seq = 1, cfg.num_und_tokens + 5
  size = cfg.und_encoder.image_size
  ids = _randint(8, (B, seq), cfg.llm.vocab_size)
  images = _normal(9, (B, n_img, size, size, 3))
  image_mask = np.zeros((B, seq), bool)
  image_mask[:, 2:2 + cfg.num_und_tokens] = True
  attention_mask = np.ones((B, seq), bool)
  attention_mask[1, 0] = False  # a left-padded row

  @jit
  def run(variables, ids, images):
    return model.apply(variables, ids, images, image_mask, attention_mask=attention_mask,
                       capture_layer=cfg.repa.layer, method="understand")

  logits, hidden, captured = run(variables, ids, images)
  chex.assert_shape(logits, (B, seq, cfg.llm.vocab_size))
  chex.assert_type(logits, jnp.float32)
  chex.assert_shape([hidden, captured], (B, seq, cfg.llm.embed_dim))
  chex.assert_type([hidden, captured], dtype)
  chex.assert_tree_all_finite((logits, hidden))
  # Image embeddings reach the LLM: changing the image changes the image positions only
  # through attention (text before the image is causally untouched).
  logits2, _, _ = run(variables, ids, images + 1.0)
  # (Row 1's first query has its only key padded, so it attends everywhere; skip it.)
  np.testing.assert_array_equal(logits2[0, :2], logits[0, :2])
  np.testing.assert_array_equal(logits2[1, 1], logits[1, 1])
  assert not np.allclose(logits2[:, 2:], logits[:, 2:])
  encoded = jax.eval_shape(lambda v: model.apply(v, images, method="encode_und_images"),
                           variables)
  chex.assert_shape(encoded, (B, n_img * cfg.num_und_tokens, cfg.llm.embed_dim))


def test_janusflow_generate_velocity(cfg, dtype, janus):
  model, variables = janus
  size, channels = cfg.latent_size, cfg.gen_encoder.in_channels
  prompt = _randint(10, (B, 4), cfg.llm.vocab_size)
  prompt_mask = np.ones((B, 4), bool)
  prompt_mask[1, 1:] = False  # a CFG row: BOS only
  z_t = _normal(11, (B, size, size, channels))
  t = jnp.array([0.25, 0.75])

  @jit
  def run(variables, z_t, t):
    return model.apply(variables, prompt, z_t, t, prompt_mask=prompt_mask,
                       capture_layer=cfg.repa.layer, method="generate_velocity")

  velocity, captured = run(variables, z_t, t)
  chex.assert_shape(velocity, (B, size, size, channels))
  chex.assert_type(velocity, dtype)
  chex.assert_shape(captured, (B, cfg.num_gen_tokens, cfg.llm.embed_dim))
  chex.assert_type(captured, dtype)
  chex.assert_tree_all_finite((velocity, captured))
  projected = jax.eval_shape(lambda v, h: model.apply(v, h, method="project_repa"),
                             variables, captured)
  chex.assert_shape(projected, (B, cfg.num_gen_tokens, cfg.und_encoder.width))
  plain = jax.eval_shape(
      lambda v: model.apply(v, prompt, z_t, t, method="generate_velocity"), variables)
  chex.assert_shape(plain, velocity.shape)  # without capture_layer: velocity alone
  chex.assert_type(plain, dtype)


# ------------------------------------------------------------- parameters and configs
def _assert_all_logically_partitioned(boxed) -> int:
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  bad = [(leaf.names if isinstance(leaf, nn.Partitioned) else None,
          getattr(getattr(leaf, "value", leaf), "shape", None)) for leaf in leaves
         if not isinstance(leaf, nn.LogicallyPartitioned) or len(leaf.names) != leaf.value.ndim]
  assert not bad, f"parameters without one logical name per dimension: {bad}"
  assert not set(boxed) - {"params"}, sorted(boxed)
  return len(leaves)


def test_every_parameter_has_logical_axis_names():
  boxed = janusflow.abstract_params(janusflow.JanusFlow(TINY))
  assert _assert_all_logically_partitioned(boxed) == len(jax.tree.leaves(nn.unbox(boxed)))
  # Scanned stacks name their leading axis 'layers'.
  layer_q = boxed["params"]["language_model"]["model"]["layers"]["self_attn"]["q_proj"]
  assert layer_q["kernel"].names[0] == "layers"
  vit_qkv = boxed["params"]["vision_und_enc_model"]["vision_tower"]["blocks"]["attn"]["qkv"]
  assert vit_qkv["kernel"].names[0] == "layers"


EXPECTED_1P3B = {
    "language_model": 1_652_656_128,
    "vision_und_enc_model": 316_283_904,
    "vision_gen_enc_model": 21_614_336,
    "vision_gen_dec_model": 50_561_296,
    "vision_und_enc_aligner": 2_099_200,
    "vision_gen_enc_aligner": 1_574_912,
    "vision_gen_dec_aligner": 1_573_632,
    "vision_gen_dec_aligner_norm": 2_048,
    "beg_of_und_embed": 2_048,
}


def test_1p3b_parameter_count():
  cfg = model_config.from_config_dict(config_files.load("janusflow_1p3b").model)
  boxed = janusflow.abstract_params(janusflow.JanusFlow(cfg))
  _assert_all_logically_partitioned(boxed)
  params = nn.unbox(boxed)["params"]
  _assert_params_float32({"params": params})
  counts = {name: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
            for name, tree in params.items()}
  repa_count = counts.pop("repa_projector")
  assert counts == EXPECTED_1P3B
  assert sum(counts.values()) == 2_046_367_504
  widths = [2048, 2048, 2048, 1024]  # embed -> hidden -> hidden -> SigLIP width, biases
  assert repa_count == sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _tiny_with(**overrides):
  model = config_defaults.model_tiny()
  for dotted, value in overrides.items():
    node = model
    *parents, leaf = dotted.split(".")
    for name in parents:
      node = node[name]
    node[leaf] = value
  return model


@pytest.mark.parametrize("overrides,key", [
    ({"llm.num_kv_heads": 3}, "model.llm.num_kv_heads"),
    ({"llm.head_dim": 15}, "model.llm.head_dim"),
    ({"und_encoder.image_size": 30}, "model.und_encoder.image_size"),
    ({"und_encoder.num_heads": 5}, "model.und_encoder.num_heads"),
    ({"latent_size": 7}, "model.latent_size"),
    ({"gen_decoder.patch_size": 4}, "model.gen_decoder.patch_size"),
    ({"repa.layer": 5}, "model.repa.layer"),
    ({"dtype": "float64"}, "float64"),
])
def test_config_validation_names_the_key(overrides, key):
  with pytest.raises(ValueError, match=re.escape(key)):
    model_config.from_config_dict(_tiny_with(**overrides))


def test_config_rejects_unknown_keys():
  model = config_defaults.model_tiny().to_dict()
  model["llm"]["num_expert"] = 2
  with pytest.raises(ValueError, match="num_expert"):
    model_config.from_config_dict(model)
  model = config_defaults.model_tiny().to_dict()
  model["image_tokens"] = 3
  with pytest.raises(ValueError, match="image_tokens"):
    model_config.from_config_dict(model)


def test_tiny_config_file_matches_defaults():
  # configs/tiny.py's model is base_config()'s: model_tiny() in pixel space.
  assert model_config.from_config_dict(config_files.load("tiny").model) == (
      model_config.from_config_dict(config_defaults.base_config().model))
