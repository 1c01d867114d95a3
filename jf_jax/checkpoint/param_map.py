"""Declarative name table: official JanusFlow state dict <-> our Flax parameter tree.

Each `Rule` maps one official tensor name (with `{i}` for scanned layers or `{j}` for the
ConvNeXt blocks) to a path in our params and a layout transform:

  * `same`   - identical layout (embeddings, norms, biases, GRN weights, pos_embed);
  * `flat`   - official 1-D bias of a multi-dimensional output (fused qkv / kv biases);
  * `linear` - torch `Linear.weight` [out, in] -> kernel [in..., out...] (transpose, then
               reshape; `in_ndim` says how many leading kernel dims are inputs);
  * `conv`   - torch `Conv2d.weight` OIHW -> Flax HWIO.

Scanned layers (`{i}`) are stacked on a leading `layers` axis. The table is the single
source of truth for both directions (`to_params` and `to_official`). The rule builders
(`linear_rules`, `norm_rules`, `conv_rules`) and the transforms are shared with the other
tables (`vae_map` for the SDXL-VAE).
"""

import dataclasses
import math
from typing import Iterator

import numpy as np

from jf_jax.models.config import JanusFlowConfig

KINDS = ("same", "flat", "linear", "conv")


@dataclasses.dataclass(frozen=True)
class Rule:
  official: str            # e.g. 'language_model.model.layers.{i}.mlp.up_proj.weight'
  ours: tuple[str, ...]    # e.g. ('language_model', 'model', 'layers', 'mlp', ...)
  kind: str = "same"
  in_ndim: int = 1         # linear only: leading kernel dims that are input features
  num_layers: int = 0      # > 0: '{i}' rule stacked over this many layers


def linear_rules(official, ours, in_ndim=1, bias=True, bias_kind="same", num_layers=0):
  """Rules for a Linear layer: weight (+ bias)."""
  yield Rule(f"{official}.weight", ours + ("kernel",), "linear", in_ndim, num_layers)
  if bias:
    yield Rule(f"{official}.bias", ours + ("bias",), bias_kind, 1, num_layers)


def norm_rules(official, ours, bias=False, num_layers=0):
  """Rules for RMSNorm (weight -> scale) or LayerNorm (weight, bias)."""
  yield Rule(f"{official}.weight", ours + ("scale",), num_layers=num_layers)
  if bias:
    yield Rule(f"{official}.bias", ours + ("bias",), num_layers=num_layers)


def conv_rules(official, ours):
  """Rules for a Conv2d layer: weight (OIHW -> HWIO) and bias."""
  yield Rule(f"{official}.weight", ours + ("kernel",), "conv")
  yield Rule(f"{official}.bias", ours + ("bias",))


def _llm_rules(cfg: JanusFlowConfig) -> Iterator[Rule]:
  n = cfg.llm.num_layers
  src, dst = "language_model.model", ("language_model", "model")
  yield Rule(f"{src}.embed_tokens.weight", dst + ("embed_tokens", "embedding"))
  layer, ours = f"{src}.layers.{{i}}", dst + ("layers",)
  for proj in ("q_proj", "k_proj", "v_proj"):
    yield from linear_rules(f"{layer}.self_attn.{proj}", ours + ("self_attn", proj), bias=False,
                       num_layers=n)
  yield from linear_rules(f"{layer}.self_attn.o_proj", ours + ("self_attn", "o_proj"), in_ndim=2,
                     bias=False, num_layers=n)
  for proj in ("gate_proj", "up_proj", "down_proj"):
    yield from linear_rules(f"{layer}.mlp.{proj}", ours + ("mlp", proj), bias=False, num_layers=n)
  for norm in ("input_layernorm", "post_attention_layernorm"):
    yield from norm_rules(f"{layer}.{norm}", ours + (norm,), num_layers=n)
  yield from norm_rules(f"{src}.norm", dst + ("norm",))
  yield from linear_rules("language_model.lm_head", ("language_model", "lm_head"), bias=False)


def _siglip_rules(cfg: JanusFlowConfig) -> Iterator[Rule]:
  n = cfg.und_encoder.depth
  src, dst = "vision_und_enc_model.vision_tower", ("vision_und_enc_model", "vision_tower")
  yield Rule(f"{src}.pos_embed", dst + ("pos_embed",))
  yield from conv_rules(f"{src}.patch_embed.proj", dst + ("patch_embed", "proj"))
  blk, ours = f"{src}.blocks.{{i}}", dst + ("blocks",)
  yield from norm_rules(f"{blk}.norm1", ours + ("norm1",), bias=True, num_layers=n)
  yield from linear_rules(f"{blk}.attn.qkv", ours + ("attn", "qkv"), bias_kind="flat",
                     num_layers=n)
  yield from linear_rules(f"{blk}.attn.proj", ours + ("attn", "proj"), in_ndim=2, num_layers=n)
  yield from norm_rules(f"{blk}.norm2", ours + ("norm2",), bias=True, num_layers=n)
  yield from linear_rules(f"{blk}.mlp.fc1", ours + ("mlp", "fc1"), num_layers=n)
  yield from linear_rules(f"{blk}.mlp.fc2", ours + ("mlp", "fc2"), num_layers=n)
  yield from norm_rules(f"{src}.norm", dst + ("norm",), bias=True)
  if cfg.und_encoder.attn_pool:
    pool, ours = f"{src}.attn_pool", dst + ("attn_pool",)
    yield Rule(f"{pool}.latent", ours + ("latent",))
    yield from linear_rules(f"{pool}.q", ours + ("q",), bias_kind="flat")
    yield from linear_rules(f"{pool}.kv", ours + ("kv",), bias_kind="flat")
    yield from linear_rules(f"{pool}.proj", ours + ("proj",), in_ndim=2)
    yield from norm_rules(f"{pool}.norm", ours + ("norm",), bias=True)
    yield from linear_rules(f"{pool}.mlp.fc1", ours + ("mlp", "fc1"))
    yield from linear_rules(f"{pool}.mlp.fc2", ours + ("mlp", "fc2"))


def _convnext_rules(official: str, ours: tuple[str, ...], num_blocks: int) -> Iterator[Rule]:
  for j in range(num_blocks):
    src, dst = f"{official}.mid_block.res_blocks.{j}", ours + ("mid_block", f"res_blocks_{j}")
    yield from conv_rules(f"{src}.depthwise", dst + ("depthwise",))
    yield from norm_rules(f"{src}.norm", dst + ("norm",))
    yield from linear_rules(f"{src}.channelwise_linear_1", dst + ("channelwise_linear_1",))
    yield Rule(f"{src}.channelwise_norm.weight", dst + ("channelwise_norm", "weight"))
    yield Rule(f"{src}.channelwise_norm.bias", dst + ("channelwise_norm", "bias"))
    yield from linear_rules(f"{src}.channelwise_linear_2", dst + ("channelwise_linear_2",))
    yield from linear_rules(f"{src}.cond_embeds_mapper", dst + ("cond_embeds_mapper",))


def _generation_rules(cfg: JanusFlowConfig) -> Iterator[Rule]:
  enc = ("vision_gen_enc_model",)
  yield from linear_rules("vision_gen_enc_model.time_embed.linear_1", enc + ("time_embed",
                                                                        "linear_1"))
  yield from linear_rules("vision_gen_enc_model.time_embed.linear_2", enc + ("time_embed",
                                                                        "linear_2"))
  yield from conv_rules("vision_gen_enc_model.in_conv", enc + ("in_conv",))
  yield from _convnext_rules("vision_gen_enc_model", enc, cfg.gen_encoder.num_blocks)
  dec = ("vision_gen_dec_model",)
  yield from _convnext_rules("vision_gen_dec_model", dec, cfg.gen_decoder.num_blocks)
  yield from norm_rules("vision_gen_dec_model.out_convs.0.norm", dec + ("out_convs_0", "norm"))
  yield from conv_rules("vision_gen_dec_model.out_convs.0.unpatch_conv",
                   dec + ("out_convs_0", "unpatch_conv"))
  yield from norm_rules("vision_gen_dec_model.input_norm", dec + ("input_norm",))


def _top_level_rules() -> Iterator[Rule]:
  yield from linear_rules("vision_und_enc_aligner", ("vision_und_enc_aligner",))
  yield Rule("beg_of_und_embed", ("beg_of_und_embed",))
  yield from linear_rules("vision_gen_enc_aligner", ("vision_gen_enc_aligner",))
  yield from norm_rules("vision_gen_dec_aligner_norm", ("vision_gen_dec_aligner_norm",))
  yield from linear_rules("vision_gen_dec_aligner", ("vision_gen_dec_aligner",))


# Our parameters with no official counterpart (new in training).
TRAINING_ONLY = ("repa_projector",)


def rules(cfg: JanusFlowConfig) -> list[Rule]:
  """All rules for a model config (one per official tensor name pattern)."""
  return [*_llm_rules(cfg), *_siglip_rules(cfg), *_top_level_rules(),
          *_generation_rules(cfg)]


def official_names(rule: Rule) -> list[str]:
  """Concrete official tensor names of a rule (one per layer for stacked rules)."""
  if rule.num_layers:
    return [rule.official.format(i=i) for i in range(rule.num_layers)]
  return [rule.official]


# ----------------------------------------------------------------- layout transforms
def official_shape(rule: Rule, our_shape: tuple[int, ...]) -> tuple[int, ...]:
  """Shape of one official tensor given our (per-layer) parameter shape."""
  if rule.kind == "same":
    return tuple(our_shape)
  if rule.kind == "flat":
    return (math.prod(our_shape),)
  if rule.kind == "linear":
    return (math.prod(our_shape[rule.in_ndim:]), math.prod(our_shape[:rule.in_ndim]))
  if rule.kind == "conv":
    kh, kw, cin, cout = our_shape
    return (cout, cin, kh, kw)
  raise ValueError(f"unknown rule kind {rule.kind!r} for {rule.official}")


def to_ours(rule: Rule, tensor: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
  """Official tensor -> our layout (per layer)."""
  if rule.kind == "linear":
    tensor = tensor.T
  elif rule.kind == "conv":
    tensor = tensor.transpose(2, 3, 1, 0)
  return np.ascontiguousarray(tensor.reshape(our_shape))


def to_official(rule: Rule, param: np.ndarray) -> np.ndarray:
  """Our (per-layer) parameter -> official layout."""
  shape = official_shape(rule, param.shape)
  if rule.kind == "linear":
    return np.ascontiguousarray(param.reshape(shape[::-1]).T)
  if rule.kind == "conv":
    return np.ascontiguousarray(param.transpose(3, 2, 0, 1))
  return param.reshape(shape)
