"""JanusFlow wrapped by Qwix: LoRA adapters (and, for QLoRA, a quantized base).

`qwix.apply_lora_to_model` intercepts the model's methods: while one runs, every
`jax.lax.dot_general` of a module whose path fully matches `config.lora.targets` (e.g.
'language_model/model/layers/self_attn/q_proj') adds `alpha / rank * x @ A @ B`, with
A [*layers, in, rank] and B [*layers, rank, out] created as params `kernel_lora_a`,
`kernel_lora_b` beside the kernel (inside `nn.scan`, stacked over layers and named with
the kernel's logical axes, so they shard like it).

Every public JanusFlow method is intercepted, so the train step (`method="understand"`)
and the samplers' module functions (which call `module.llm`, `module.embed_tokens`, ...)
both see the adapters. Methods must be called through the wrapped instance (by name), not
as `JanusFlow.understand`, which is the unwrapped function.
"""

from typing import Any

import flax
import flax.linen as nn
import qwix

from jf_jax.lora import params as lora_params
from jf_jax.models import janusflow

METHODS = ("__call__", "und_features", "encode_und_images", "embed_understanding",
           "understand", "text_logits", "encode_gen_inputs", "decode_velocity",
           "generate_velocity", "project_repa", "llm", "llm_logits", "embed_tokens")


def enabled(config) -> bool:
  """Whether a run config trains LoRA adapters (`config.lora.rank` > 0)."""
  return int(((config.get("lora") or {}).get("rank")) or 0) > 0


def wrap(model: janusflow.JanusFlow, provider) -> janusflow.JanusFlow:
  """`model` with `provider` (Qwix LoRA or PTQ) intercepting all its methods."""
  return qwix.apply_lora_to_model(model, provider, methods=METHODS)


def provider(lora_cfg) -> qwix.LoraProvider:
  """The Qwix provider of `config.lora`: one rule over `targets`."""
  from jf_jax.lora import quantize  # pylint: disable=g-import-not-at-top (cycle)
  qtype = lora_cfg.base_quant or None
  if qtype is not None:
    quantize.check_qtype(qtype, "config.lora.base_quant")
  rule = qwix.LoraRule(module_path=lora_cfg.targets, rank=int(lora_cfg.rank),
                       alpha=float(lora_cfg.alpha), weight_qtype=qtype,
                       tile_size=quantize.TILE_SIZE[qtype] if qtype else None)
  return qwix.LoraProvider([rule])


def lora_model(model: janusflow.JanusFlow, lora_cfg) -> tuple[janusflow.JanusFlow, Any]:
  """(wrapped model, its boxed abstract params), checked against `config.lora`.

  Raises:
    ValueError: `targets` matches no module's dot_general, or `rank` exceeds the width
      (in or out features) of an adapted layer.
  """
  prov = provider(lora_cfg)
  wrapped = wrap(model, prov)
  boxed = janusflow.abstract_params(wrapped)["params"]
  has_adapters = any(lora_params.is_adapter(lora_params.path_str(p))
                     for p in flax.traverse_util.flatten_dict(boxed))
  if prov.get_unused_rules() or not has_adapters:
    raise ValueError(f"config.lora.targets={lora_cfg.targets!r} matches no module with a "
                     "dense kernel; module paths look like "
                     "'language_model/model/layers/self_attn/q_proj'")
  check_rank(nn.unbox(boxed), int(lora_cfg.rank))
  return wrapped, boxed


def check_rank(abstract: Any, rank: int) -> None:
  """An adapter's rank must not exceed its layer's input or output width."""
  for path, a in flax.traverse_util.flatten_dict(abstract).items():
    if not path[-1].endswith("_lora_a"):
      continue
    b = flax.traverse_util.flatten_dict(abstract)[path[:-1] + (path[-1][:-1] + "b",)]
    width = min(a.shape[-2], b.shape[-1])
    if rank > width:
      raise ValueError(f"config.lora.rank={rank} exceeds the width {width} of "
                       f"{lora_params.path_str(path[:-1] + (path[-1][:-7],))} "
                       f"(in {a.shape[-2]}, out {b.shape[-1]})")


def scale(lora_cfg) -> float:
  """The adapters' output scale `alpha / rank` (Qwix's convention)."""
  return float(lora_cfg.alpha) / int(lora_cfg.rank)
