"""Parity against PyTorch references, with random weights sent through our conversion code.

One official-layout state dict (official key names) is assembled from PyTorch reference
modules with random weights: transformers' `LlamaForCausalLM` for the LLM, transformers'
`SiglipVisionModel` for the SigLIP tower (its separate q/k/v renamed and fused into the
official timm-style names here), diffusers' `Timesteps`/`TimestepEmbedding`, and small
PyTorch modules written below from the official `uvit.py` description (ConvNeXt block,
`ShallowUViTEncoder`, `ShallowUViTDecoder`, timm's `AttentionPoolLatent`). The dict goes
through `convert_hf.to_params` once, and our modules run on the converted params. Every
comparison is float32 on both sides (tiny config; JAX matmuls at 'highest' precision from
conftest).

Tolerance: max |ours - torch| <= ATOL * max(1, max |torch|) with ATOL = 1e-4, i.e. 1e-4
absolute for outputs of order one, relative for larger ones.
"""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.embeddings import Timesteps
from torch import nn
from transformers import LlamaConfig
from transformers import LlamaForCausalLM
from transformers import SiglipVisionConfig
from transformers import SiglipVisionModel
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from jf_jax import config_defaults
from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import params_io
from jf_jax.models import convnext
from jf_jax.models import gen_decoder
from jf_jax.models import gen_encoder
from jf_jax.models import janusflow
from jf_jax.models import siglip
from jf_jax.models.config import from_config_dict

ATOL = 1e-4
SIGLIP = "vision_und_enc_model.vision_tower"
# Token ids of the tiny vocabulary used by the composite checks.
BOS, PAD, BOI, IMG, EOI = 1, 2, 5, 6, 7


def _report(name, ours, ref, mask=None):
  """Asserts the scaled max abs diff and prints it (visible with `pytest -s` / `-rA`)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
  diff = np.abs(ours - ref)
  if mask is not None:
    diff, ref = diff[mask], ref[mask]
  scale = max(1.0, float(np.abs(ref).max()))
  err = float(diff.max())
  print(f"parity {name}: max abs diff {err:.3e} (max |ref| {np.abs(ref).max():.3g})")
  assert np.isfinite(ours).all(), name
  assert err <= ATOL * scale, f"{name}: max abs diff {err:.3e} > {ATOL * scale:.3e}"
  return err


def _jit_apply(module, params, *args, **static):
  """`module.apply({'params': params}, *args, **static)` under one jit (one compile)."""
  return jax.jit(lambda p, *a: module.apply({"params": p}, *a, **static))(params, *args)


def _t(x):
  return torch.from_numpy(np.ascontiguousarray(x))


def _nchw(x):
  return _t(np.asarray(x).transpose(0, 3, 1, 2))


def _nhwc(x):
  return x.detach().permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------- PyTorch references
class RefGRN(nn.Module):
  """ConvNeXt-V2 global response norm on channels-last input, params [1, 1, 1, D]."""

  def __init__(self, dim):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
    self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))

  def forward(self, x):
    spatial = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
    n = spatial / (spatial.mean(dim=-1, keepdim=True) + 1e-6)
    return self.bias + (self.weight * n + 1.0) * x


class RefConvNeXt(nn.Module):
  """Official ConvNeXt block (NCHW): dw7x7 -> RMSNorm -> MLP with GRN -> +x -> FiLM."""

  def __init__(self, channels, cond_dim, eps):
    super().__init__()
    self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
    self.norm = LlamaRMSNorm(channels, eps=eps)
    self.channelwise_linear_1 = nn.Linear(channels, 4 * channels)
    self.channelwise_norm = RefGRN(4 * channels)
    self.channelwise_linear_2 = nn.Linear(4 * channels, channels)
    self.cond_embeds_mapper = nn.Linear(cond_dim, 2 * channels)

  def forward(self, x, cond):
    h = self.depthwise(x).permute(0, 2, 3, 1)
    h = F.gelu(self.channelwise_linear_1(self.norm(h)))  # exact (erf) GELU
    h = self.channelwise_linear_2(self.channelwise_norm(h)).permute(0, 3, 1, 2)
    h = h + x
    film = self.cond_embeds_mapper(F.silu(cond))
    scale, shift = film[:, :film.shape[1] // 2], film[:, film.shape[1] // 2:]
    return h * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class RefUVitBlock(nn.Module):

  def __init__(self, channels, cond_dim, eps, num_blocks):
    super().__init__()
    self.res_blocks = nn.ModuleList(
        [RefConvNeXt(channels, cond_dim, eps) for _ in range(num_blocks)])

  def forward(self, x, cond):
    for block in self.res_blocks:
      x = block(x, cond)
    return x


class RefEncoder(nn.Module):
  """`ShallowUViTEncoder` with the JanusFlow config (patchify conv, no down/upsampling)."""

  def __init__(self, in_ch, channels, patch, cond_dim, eps, num_blocks):
    super().__init__()
    self.time_proj = Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)
    self.time_embed = TimestepEmbedding(channels, cond_dim, sample_proj_bias=True)
    self.in_conv = nn.Conv2d(in_ch, channels, patch, stride=patch, padding=0)
    self.mid_block = RefUVitBlock(channels, cond_dim, eps, num_blocks)

  def forward(self, z, timesteps):
    t_emb = self.time_embed(self.time_proj(timesteps).to(z.dtype))
    x = self.mid_block(self.in_conv(z), t_emb)
    return x, t_emb, [x]


class RefUnpatchify(nn.Module):

  def __init__(self, in_ch, out_ch, patch, eps):
    super().__init__()
    self.norm = LlamaRMSNorm(in_ch, eps=eps)
    self.unpatch_conv = nn.Conv2d(in_ch, out_ch * patch * patch, 1)
    self.pixel_shuffle = nn.PixelShuffle(patch)

  def forward(self, x):
    x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return self.pixel_shuffle(self.unpatch_conv(x))


class RefDecoder(nn.Module):
  """`ShallowUViTDecoder`: norm(x) ++ skip -> ConvNeXt x N at 2C -> Unpatchify."""

  def __init__(self, channels, out_ch, patch, cond_dim, eps, num_blocks):
    super().__init__()
    self.mid_block = RefUVitBlock(2 * channels, cond_dim, eps, num_blocks)
    self.out_convs = nn.ModuleList([RefUnpatchify(2 * channels, out_ch, patch, eps)])
    self.input_norm = LlamaRMSNorm(channels, eps=eps)

  def forward(self, x, hs, t_emb):
    x = self.input_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    x = torch.cat([x, hs.pop()], dim=1)
    x = self.mid_block(x, t_emb)
    for conv in self.out_convs:
      x = conv(x)
    return x


class RefMlp(nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class RefAttentionPoolLatent(nn.Module):
  """timm's MAP head as the official ViT builds it (one latent, no pos embed, no qk-norm)."""

  def __init__(self, dim, heads, mlp_hidden, eps):
    super().__init__()
    self.heads = heads
    self.latent = nn.Parameter(torch.zeros(1, 1, dim))
    self.q = nn.Linear(dim, dim)
    self.kv = nn.Linear(dim, 2 * dim)
    self.proj = nn.Linear(dim, dim)
    self.norm = nn.LayerNorm(dim, eps=eps)
    self.mlp = RefMlp(dim, mlp_hidden)

  def forward(self, x):
    b, n, c = x.shape
    hd = c // self.heads
    q = self.q(self.latent.expand(b, -1, -1)).view(b, 1, self.heads, hd).transpose(1, 2)
    k, v = self.kv(x).view(b, n, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
    out = self.proj(out)
    out = out + self.mlp(self.norm(out))
    return out[:, 0]


class RefTopLevel(nn.Module):
  """The official top-level modules other than the LLM and the SigLIP tower."""

  def __init__(self, cfg):
    super().__init__()
    embed, und, enc, dec = cfg.llm.embed_dim, cfg.und_encoder, cfg.gen_encoder, cfg.gen_decoder
    self.vision_und_enc_aligner = nn.Linear(und.width, embed)
    self.beg_of_und_embed = nn.Parameter(torch.zeros(1, embed))
    self.vision_gen_enc_model = RefEncoder(enc.in_channels, enc.channels, enc.patch_size,
                                           embed, enc.norm_eps, enc.num_blocks)
    self.vision_gen_enc_aligner = nn.Linear(enc.channels, embed)
    self.vision_gen_dec_model = RefDecoder(enc.channels, dec.out_channels, dec.patch_size,
                                           embed, dec.norm_eps, dec.num_blocks)
    self.vision_gen_dec_aligner_norm = LlamaRMSNorm(embed, eps=cfg.llm.rms_norm_eps)
    self.vision_gen_dec_aligner = nn.Linear(embed, enc.channels)


def _randomize(module, gen):
  """Non-trivial random values for every parameter (norm scales, GRN and biases too)."""
  with torch.no_grad():
    for name, p in module.named_parameters():
      leaf = name.rsplit(".", 1)[-1]
      if "channelwise_norm" in name:  # GRN weight/bias [1, 1, 1, D], zero at init
        std, mean = 0.5, 0.0
      elif p.ndim == 1 and leaf == "weight":  # RMSNorm / LayerNorm scales
        std, mean = 0.2, 1.0
      elif p.ndim == 1:  # biases
        std, mean = 0.1, 0.0
      elif leaf in ("latent", "beg_of_und_embed") or "embed_tokens" in name or (
          "position_embedding" in name):
        std, mean = 1.0, 0.0
      else:  # Linear [out, in] / Conv [out, in/groups, kh, kw]
        std, mean = float(np.prod(p.shape[1:])) ** -0.5, 0.0
      p.copy_(torch.randn(p.shape, generator=gen) * std + mean)


def _siglip_to_official(hf_state, depth):
  """HF `SiglipVisionModel` names -> the official timm-style names (fused qkv)."""
  out = {
      "pos_embed": hf_state["embeddings.position_embedding.weight"][None],
      "patch_embed.proj.weight": hf_state["embeddings.patch_embedding.weight"],
      "patch_embed.proj.bias": hf_state["embeddings.patch_embedding.bias"],
      "norm.weight": hf_state["post_layernorm.weight"],
      "norm.bias": hf_state["post_layernorm.bias"],
  }
  renamed = (("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
             ("self_attn.out_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"),
             ("mlp.fc2", "mlp.fc2"))
  for i in range(depth):
    src, dst = f"encoder.layers.{i}", f"blocks.{i}"
    for kind in ("weight", "bias"):
      # timm's fused qkv: output rows [q (heads x head_dim) | k | v].
      out[f"{dst}.attn.qkv.{kind}"] = torch.cat(
          [hf_state[f"{src}.self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
      for hf_name, name in renamed:
        out[f"{dst}.{name}.{kind}"] = hf_state[f"{src}.{hf_name}.{kind}"]
  return {f"{SIGLIP}.{k}": v for k, v in out.items()}


@dataclasses.dataclass
class Refs:
  cfg: object
  llm: LlamaForCausalLM
  vit: SiglipVisionModel
  pool: RefAttentionPoolLatent
  top: RefTopLevel
  params: dict

  def apply(self, method, *args):
    """Runs `JanusFlow(cfg).<method>(*args)` on the converted params."""
    return _jit_apply(janusflow.JanusFlow(self.cfg), self.params, *args, method=method)


@pytest.fixture(scope="module")
def refs():
  torch.manual_seed(0)
  cfg = from_config_dict(config_defaults.model_tiny())
  llm_cfg, und = cfg.llm, cfg.und_encoder
  assert llm_cfg.num_kv_heads < llm_cfg.num_heads  # exercise grouped KV heads
  llm = LlamaForCausalLM(LlamaConfig(
      vocab_size=llm_cfg.vocab_size, hidden_size=llm_cfg.embed_dim,
      intermediate_size=llm_cfg.mlp_dim, num_hidden_layers=llm_cfg.num_layers,
      num_attention_heads=llm_cfg.num_heads, num_key_value_heads=llm_cfg.num_kv_heads,
      head_dim=llm_cfg.head_dim, rms_norm_eps=llm_cfg.rms_norm_eps,
      rope_theta=llm_cfg.rope_theta, max_position_embeddings=256, hidden_act="silu",
      tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
      attn_implementation="eager"))
  vit = SiglipVisionModel(SiglipVisionConfig(
      hidden_size=und.width, intermediate_size=und.mlp_dim, num_hidden_layers=und.depth,
      num_attention_heads=und.num_heads, image_size=und.image_size,
      patch_size=und.patch_size, hidden_act="gelu", layer_norm_eps=und.layer_norm_eps,
      vision_use_head=False, attn_implementation="eager"))
  pool = RefAttentionPoolLatent(und.width, und.num_heads, und.mlp_dim, und.layer_norm_eps)
  top = RefTopLevel(cfg)
  gen = torch.Generator().manual_seed(1)
  for module in (llm, vit, pool, top):
    _randomize(module, gen)
    module.eval().float()

  state = {f"language_model.{k}": v for k, v in llm.state_dict().items()}
  state.update(_siglip_to_official(vit.state_dict(), und.depth))
  state.update({f"{SIGLIP}.attn_pool.{k}": v for k, v in pool.state_dict().items()})
  state.update(top.state_dict())
  state = {k: v.detach().numpy().copy() for k, v in state.items()}
  params = convert_hf.to_params(state, cfg, params_io.abstract_params(cfg), source="torch")
  return Refs(cfg, llm, vit, pool, top, params)


# ---------------------------------------------------------------------------- tests
def test_llm_logits_match_transformers(refs):
  rng = np.random.default_rng(0)
  ids = rng.integers(0, refs.cfg.llm.vocab_size, size=(2, 11))
  ours = refs.apply(janusflow.JanusFlow.text_logits, ids)
  with torch.no_grad():
    ref = refs.llm(input_ids=_t(ids)).logits.numpy()
  _report("llm logits", ours, ref)


def test_llm_logits_left_padded(refs):
  """Left padding with HF-generate positions (cumsum(mask) - 1); valid positions only."""
  rng = np.random.default_rng(1)
  ids = rng.integers(0, refs.cfg.llm.vocab_size, size=(3, 12))
  mask = np.ones_like(ids, bool)
  mask[1, :4] = False
  mask[2, :9] = False
  ids = np.where(mask, ids, PAD)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  ours = refs.apply(janusflow.JanusFlow.text_logits, ids, mask, positions)
  with torch.no_grad():
    ref = refs.llm(input_ids=_t(ids), attention_mask=_t(mask.astype(np.int64)),
                   position_ids=_t(positions)).logits.numpy()
  _report("llm logits (left-padded)", ours, ref, mask=mask)


def test_siglip_features_match_transformers(refs):
  und = refs.cfg.und_encoder
  images = np.random.default_rng(2).normal(
      size=(2, und.image_size, und.image_size, 3)).astype(np.float32)
  ours = refs.apply(janusflow.JanusFlow.und_features, images)
  with torch.no_grad():
    ref = refs.vit(pixel_values=_nchw(images)).last_hidden_state.numpy()
  _report("siglip features", ours, ref)


def test_siglip_attention_pool_matches_timm_reference(refs):
  und = refs.cfg.und_encoder
  images = np.random.default_rng(3).normal(
      size=(2, und.image_size, und.image_size, 3)).astype(np.float32)
  tower = siglip.VisionTransformer(und, dtype=refs.cfg.dtype,
                                   param_dtype=refs.cfg.param_dtype)
  variables = refs.params["vision_und_enc_model"]["vision_tower"]
  feats, pooled = _jit_apply(tower, variables, images, pool=True)
  with torch.no_grad():
    ref_feats = refs.vit(pixel_values=_nchw(images)).last_hidden_state
    ref_pooled = refs.pool(ref_feats).numpy()
  _report("siglip features (tower)", feats, ref_feats.numpy())
  _report("siglip attn_pool", pooled, ref_pooled)


def test_timestep_embedding_matches_diffusers(refs):
  enc_cfg = refs.cfg.gen_encoder
  timesteps = np.array([0.0, 33.25, 500.0, 968.0], np.float32)
  z = np.random.default_rng(4).normal(
      size=(4, refs.cfg.latent_size, refs.cfg.latent_size, enc_cfg.in_channels)
  ).astype(np.float32)
  encoder = gen_encoder.ShallowUViTEncoder(enc_cfg, refs.cfg.llm.embed_dim,
                                           dtype=refs.cfg.dtype,
                                           param_dtype=refs.cfg.param_dtype)
  variables = refs.params["vision_gen_enc_model"]
  _, t_emb = _jit_apply(encoder, variables, z, timesteps)
  ref_enc = refs.top.vision_gen_enc_model
  with torch.no_grad():
    ref = ref_enc.time_embed(ref_enc.time_proj(_t(timesteps))).numpy()
  _report("timestep embedding", t_emb, ref)


def test_convnext_block_matches_reference(refs):
  """One encoder block (C) and one decoder block (2C), FiLM on a random condition."""
  rng = np.random.default_rng(5)
  embed = refs.cfg.llm.embed_dim
  cond = rng.normal(size=(2, embed)).astype(np.float32)
  for where, channels in (("vision_gen_enc_model", refs.cfg.gen_encoder.channels),
                          ("vision_gen_dec_model", 2 * refs.cfg.gen_encoder.channels)):
    x = rng.normal(size=(2, 5, 6, channels)).astype(np.float32)
    block = convnext.ConvNeXtBlock(refs.cfg.gen_encoder.norm_eps, dtype=refs.cfg.dtype,
                                   param_dtype=refs.cfg.param_dtype)
    variables = refs.params[where]["mid_block"]["res_blocks_1"]
    ours = _jit_apply(block, variables, x, cond)
    ref_block = getattr(refs.top, where).mid_block.res_blocks[1]
    with torch.no_grad():
      ref = _nhwc(ref_block(_nchw(x), _t(cond)))
    _report(f"convnext block ({where})", ours, ref)


def test_gen_encoder_matches_reference(refs):
  cfg = refs.cfg
  rng = np.random.default_rng(6)
  z = rng.normal(size=(2, cfg.latent_size, cfg.latent_size, 4)).astype(np.float32)
  timesteps = np.array([33.25, 968.0], np.float32)
  encoder = gen_encoder.ShallowUViTEncoder(cfg.gen_encoder, cfg.llm.embed_dim,
                                           dtype=cfg.dtype, param_dtype=cfg.param_dtype)
  feats, t_emb = _jit_apply(encoder, refs.params["vision_gen_enc_model"], z,
                              timesteps)
  with torch.no_grad():
    ref_feats, ref_t_emb, hs = refs.top.vision_gen_enc_model(_nchw(z), _t(timesteps))
  assert len(hs) == 1 and hs[0] is ref_feats
  _report("gen encoder features", feats, _nhwc(ref_feats))
  _report("gen encoder t_emb", t_emb, ref_t_emb.numpy())


def test_gen_decoder_matches_reference(refs):
  """Skip concat order (LLM features first) and PixelShuffle layout."""
  cfg = refs.cfg
  rng = np.random.default_rng(7)
  hp = cfg.latent_size // cfg.gen_encoder.patch_size
  x = rng.normal(size=(2, hp, hp, cfg.gen_encoder.channels)).astype(np.float32)
  skip = rng.normal(size=x.shape).astype(np.float32) * 3.0
  t_emb = rng.normal(size=(2, cfg.llm.embed_dim)).astype(np.float32)
  decoder = gen_decoder.ShallowUViTDecoder(cfg.gen_decoder, dtype=cfg.dtype,
                                           param_dtype=cfg.param_dtype)
  ours = _jit_apply(decoder, refs.params["vision_gen_dec_model"], x, skip, t_emb)
  with torch.no_grad():
    ref = _nhwc(refs.top.vision_gen_dec_model(_nchw(x), [_nchw(skip)], _t(t_emb)))
  assert ours.shape == (2, cfg.latent_size, cfg.latent_size, cfg.gen_decoder.out_channels)
  _report("gen decoder velocity", ours, ref)


def _torch_velocity(refs, prompt_ids, prompt_mask, z, t):
  """The official demo's velocity evaluation, composed from the reference modules."""
  top = refs.top
  with torch.no_grad():
    prefix = refs.llm.get_input_embeddings()(_t(prompt_ids))
    x_emb, t_emb, hs = top.vision_gen_enc_model(_nchw(z), _t(t) * 1000.0)
    tokens = top.vision_gen_enc_aligner(x_emb.flatten(2).permute(0, 2, 1))
    llm_in = torch.cat([prefix, t_emb[:, None], tokens], dim=1)
    mask = torch.ones(llm_in.shape[:2], dtype=torch.int64)
    mask[:, :prompt_ids.shape[1]] = _t(prompt_mask.astype(np.int64))
    hidden = refs.llm.model(inputs_embeds=llm_in, attention_mask=mask).last_hidden_state
    n = tokens.shape[1]
    h = top.vision_gen_dec_aligner(top.vision_gen_dec_aligner_norm(hidden[:, -n:]))
    b, c = h.shape[0], h.shape[-1]
    side = x_emb.shape[-1]
    h = h.reshape(b, side, side, c).permute(0, 3, 1, 2)
    return _nhwc(top.vision_gen_dec_model(h, hs, t_emb))


def test_generate_velocity_matches_official_composition(refs):
  """Cond rows and CFG-uncond rows (BOS, then pads with mask 0), as in the official demo."""
  cfg = refs.cfg
  rng = np.random.default_rng(8)
  cond = np.concatenate([[BOS], rng.integers(10, cfg.llm.vocab_size, size=6)])
  prompt_ids = np.stack([cond, cond, cond, cond])
  prompt_ids[2:, 1:] = PAD
  prompt_mask = np.ones_like(prompt_ids, bool)
  prompt_mask[2:, 1:] = False
  z = rng.normal(size=(2, cfg.latent_size, cfg.latent_size, 4)).astype(np.float32)
  z = np.concatenate([z, z])
  t = np.array([0.0, 0.5, 0.0, 0.5], np.float32)
  ours = refs.apply(janusflow.JanusFlow.generate_velocity, prompt_ids, z, t, prompt_mask)
  ref = _torch_velocity(refs, prompt_ids, prompt_mask, z, t)
  _report("generate_velocity (cond)", ours[:2], ref[:2])
  _report("generate_velocity (uncond)", ours[2:], ref[2:])


def test_understand_matches_official_merge(refs):
  """beg_of_und_embed + aligned SigLIP tokens overwrite the image slots; then HF logits."""
  cfg = refs.cfg
  und = cfg.und_encoder
  rng = np.random.default_rng(9)
  n_img = und.num_patches
  row = np.concatenate([[BOS], rng.integers(10, cfg.llm.vocab_size, size=3), [BOI],
                        [IMG] * n_img, [EOI], rng.integers(10, cfg.llm.vocab_size, size=4)])
  pad = 3
  ids = np.stack([row, np.concatenate([[PAD] * pad, row[:-pad]])])
  attn = np.ones_like(ids, bool)
  attn[1, :pad] = False
  image_mask = (ids == BOI) | (ids == IMG)
  images = rng.normal(size=(2, 1, und.image_size, und.image_size, 3)).astype(np.float32)
  logits, _, _ = refs.apply(janusflow.JanusFlow.understand, ids, images, image_mask, attn)

  top = refs.top
  with torch.no_grad():
    feats = refs.vit(pixel_values=_nchw(images[:, 0])).last_hidden_state
    img_emb = top.vision_und_enc_aligner(feats)
    boi = top.beg_of_und_embed[0].view(1, 1, -1).expand(img_emb.shape[0], 1, -1)
    img_emb = torch.cat([boi, img_emb], dim=1)
    embeds = refs.llm.get_input_embeddings()(_t(ids)).clone()
    embeds[_t(image_mask)] = img_emb.reshape(-1, img_emb.shape[-1])
    ref = refs.llm(inputs_embeds=embeds, attention_mask=_t(attn.astype(np.int64))).logits
  _report("understand logits", logits, ref.numpy(), mask=attn)
