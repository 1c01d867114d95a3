"""Declarative name table: diffusers `AutoencoderKL` state dict <-> our `vae.AutoencoderKL`.

Official names are those of `diffusion_pytorch_model.safetensors` in `stabilityai/sdxl-vae`
(= `diffusers.AutoencoderKL(...).state_dict()`), e.g.
`encoder.down_blocks.0.resnets.1.norm1.weight` -> `encoder/down_blocks_0/resnets_1/norm1/
scale`. Rules, transforms and the checked conversion are shared with the JanusFlow table
(`param_map`, `convert_hf`): GroupNorm weight -> scale, Conv2d OIHW -> HWIO, Linear
[out, in] -> kernel [in, out]. Loading reads safetensors with numpy (no torch) and reports
every missing, unused and mis-shaped key at once.
"""

import os
from typing import Any, Iterator, Mapping

import flax.linen as nn
import numpy as np

from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint.param_map import Rule
from jf_jax.checkpoint.param_map import conv_rules
from jf_jax.checkpoint.param_map import linear_rules
from jf_jax.checkpoint.param_map import norm_rules
from jf_jax.models import vae
from jf_jax.models.vae import VAEConfig

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# Attention names written by diffusers < 0.14 (e.g. older SD 1.x VAEs); renamed on load.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _resnet_rules(official: str, ours: tuple[str, ...], shortcut: bool) -> Iterator[Rule]:
  for norm, conv in (("norm1", "conv1"), ("norm2", "conv2")):
    yield from norm_rules(f"{official}.{norm}", ours + (norm,), bias=True)
    yield from conv_rules(f"{official}.{conv}", ours + (conv,))
  if shortcut:
    yield from conv_rules(f"{official}.conv_shortcut", ours + ("conv_shortcut",))


def _mid_block_rules(official: str, ours: tuple[str, ...], cfg: VAEConfig) -> Iterator[Rule]:
  yield from _resnet_rules(f"{official}.resnets.0", ours + ("resnets_0",), False)
  if cfg.mid_block_add_attention:
    src, dst = f"{official}.attentions.0", ours + ("attentions_0",)
    yield from norm_rules(f"{src}.group_norm", dst + ("group_norm",), bias=True)
    for proj in ("to_q", "to_k", "to_v"):
      yield from linear_rules(f"{src}.{proj}", dst + (proj,))
    yield from linear_rules(f"{src}.to_out.0", dst + ("to_out_0",))
  yield from _resnet_rules(f"{official}.resnets.1", ours + ("resnets_1",), False)


def _blocks_rules(part: str, cfg: VAEConfig) -> Iterator[Rule]:
  """`down_blocks` of the encoder or `up_blocks` of the decoder."""
  down = part == "encoder"
  chans = cfg.block_out_channels if down else tuple(reversed(cfg.block_out_channels))
  kind, num_layers = ("down", cfg.layers_per_block) if down else ("up", cfg.layers_per_block + 1)
  for i, ch in enumerate(chans):
    src, dst = f"{part}.{kind}_blocks.{i}", (part, f"{kind}_blocks_{i}")
    in_ch = chans[max(i - 1, 0)]
    for j in range(num_layers):
      yield from _resnet_rules(f"{src}.resnets.{j}", dst + (f"resnets_{j}",),
                               shortcut=j == 0 and in_ch != ch)
    if i < len(chans) - 1:
      sampler = f"{kind}samplers"
      yield from conv_rules(f"{src}.{sampler}.0.conv", dst + (f"{sampler}_0", "conv"))


def _tower_rules(part: str, cfg: VAEConfig) -> Iterator[Rule]:
  yield from conv_rules(f"{part}.conv_in", (part, "conv_in"))
  yield from _blocks_rules(part, cfg)
  yield from _mid_block_rules(f"{part}.mid_block", (part, "mid_block"), cfg)
  yield from norm_rules(f"{part}.conv_norm_out", (part, "conv_norm_out"), bias=True)
  yield from conv_rules(f"{part}.conv_out", (part, "conv_out"))


def rules(cfg: VAEConfig) -> list[Rule]:
  """All rules of a VAE config."""
  table = [*_tower_rules("encoder", cfg), *_tower_rules("decoder", cfg)]
  if cfg.use_quant_conv:
    table += conv_rules("quant_conv", ("quant_conv",))
  if cfg.use_post_quant_conv:
    table += conv_rules("post_quant_conv", ("post_quant_conv",))
  return table


def abstract_params(cfg: VAEConfig, param_dtype=np.float32):
  """Unboxed `jax.ShapeDtypeStruct` tree of the VAE params (nothing allocated)."""
  module = vae.make_vae(cfg, param_dtype=param_dtype)
  return nn.unbox(vae.abstract_variables(module)).get("params", {})


def expected_official_shapes(cfg: VAEConfig) -> dict[str, tuple]:
  """diffusers tensor name -> shape the config expects."""
  return convert_hf.expected_shapes(rules(cfg), abstract_params(cfg))


def rename_legacy_keys(state: Mapping[str, Any]) -> dict[str, Any]:
  """Maps pre-0.14 diffusers attention names (`query`, `proj_attn`, ...) to current ones."""
  out = {}
  for key, value in state.items():
    parts = key.split(".")
    if len(parts) > 2 and ".attentions." in key and parts[-2] in _LEGACY_ATTENTION:
      key = ".".join(parts[:-2] + [_LEGACY_ATTENTION[parts[-2]], parts[-1]])
    out[key] = value
  return out


def to_params(state: Mapping[str, np.ndarray], cfg: VAEConfig, dtype=np.float32,
              source: str = "VAE checkpoint") -> dict:
  """diffusers state dict -> our params (checked: every missing/unused/mis-shaped key named).

  Args:
    state: diffusers name -> array (NCHW conv and [out, in] linear layouts).
    cfg: the VAE config the checkpoint must match.
    dtype: storage dtype of the returned params.
    source: how error messages name the checkpoint.
  Returns:
    Nested dict of numpy arrays shaped like `abstract_params(cfg)`.
  """
  return convert_hf.params_from_state(rename_legacy_keys(state), rules(cfg),
                                      abstract_params(cfg), dtype, source)


def to_state_dict(params: Mapping[str, Any], cfg: VAEConfig, dtype=None
                  ) -> dict[str, np.ndarray]:
  """Our params -> diffusers state dict (same names and layouts as `state_dict()`)."""
  return convert_hf.state_from_params(params, rules(cfg), dtype)


def weight_files(path: str) -> list[str]:
  """The safetensors file(s) holding the VAE weights of a file or directory.

  In a directory: `diffusion_pytorch_model.safetensors` (directly or under `vae/`, as in a
  full pipeline repo) wins over other files, since `stabilityai/sdxl-vae` also ships the
  single-file `sdxl_vae.safetensors` with original-LDM names; otherwise all `*.safetensors`.
  """
  if os.path.isfile(path):
    return [path]
  for candidate in (os.path.join(path, WEIGHTS_NAME), os.path.join(path, "vae", WEIGHTS_NAME)):
    if os.path.isfile(candidate):
      return [candidate]
  return convert_hf.safetensors_files(path)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """All tensors of the VAE weight file(s) as numpy arrays."""
  return convert_hf.read_safetensors(weight_files(path))


def load_vae(directory: str, cfg: VAEConfig = VAEConfig(), dtype=np.float32) -> dict:
  """Reads diffusers VAE weights (file or directory) into our params tree."""
  return to_params(read_state_dict(directory), cfg, dtype, source=directory)
