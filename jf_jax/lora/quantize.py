"""Weight-only post-training quantization through Qwix (`qwix.PtqProvider`).

  qmodel = quantized_model(model, "int8")
  qparams = quantize_params(params, abstract_quantized(qmodel))   # once, at load

`qmodel` computes every matched layer's dot_general on the int8 kernel and its per-output-
channel scale (absmax calibration); activations stay in the compute dtype. The same
`quantize_params` builds a QLoRA run's frozen base.

Scanned layers: a kernel stacked over `nn.scan`'s `layers` axis must get one scale per
layer. Qwix records how to quantize from inside the scan body (per-layer axes), so the
quantizer is vmapped over the leading stacked axes until its scale has the abstract
scale's shape (`qwix.quantize_params` would quantize the stack as one array).
"""

from typing import Any

import flax.linen as nn
import jax
import qwix
from qwix._src.providers.ptq import WithAux  # the type of Qwix's quantized-param leaves

from jf_jax.lora import model as lora_model
from jf_jax.models import janusflow

# The LLM's projections and its output head: ~all of its matmul weights (the token
# embedding is a lookup, not a dot_general).
DEFAULT_TARGETS = r"language_model/(model/layers/(self_attn|mlp)/\w+_proj|lm_head)"
QTYPES = ("int8", "nf4")
# Blockwise scales for 4-bit NormalFloat (as QLoRA's 64-element blocks); int8 is per channel.
TILE_SIZE = {"int8": None, "nf4": 64}


def check_qtype(qtype: str, setting: str) -> str:
  if qtype not in QTYPES:
    raise ValueError(f"{setting}={qtype!r} is not a supported quantization; expected one "
                     f"of {QTYPES}")
  return qtype


def quantized_model(model: janusflow.JanusFlow, qtype: str = "int8",
                    targets: str = DEFAULT_TARGETS, setting: str = "--quantize"
                    ) -> janusflow.JanusFlow:
  """`model` with weight-only `qtype` kernels in the modules matching `targets`."""
  rule = qwix.QuantizationRule(module_path=targets, weight_qtype=check_qtype(qtype, setting),
                               tile_size=TILE_SIZE[qtype])
  return lora_model.wrap(model, qwix.PtqProvider([rule]))


def abstract_quantized(qmodel: janusflow.JanusFlow) -> Any:
  """Unboxed abstract params of a Qwix-wrapped model (quantized leaves are `WithAux`)."""
  return nn.unbox(janusflow.abstract_params(qmodel))["params"]


def _quantize_leaf(value: jax.Array, abstract: WithAux, scale_dtype) -> WithAux:
  how = abstract.how
  def quantize(x):
    return qwix.quantize(x, how.qtype, channelwise_axes=how.channelwise_axes,
                         tiled_axes=how.tiled_axes,
                         calibration_method=how.calibration_method,
                         scale_dtype=scale_dtype or x.dtype)
  want = abstract.array.scale.shape
  for _ in range(value.ndim):  # one vmap per stacked (scanned) leading axis
    if jax.eval_shape(quantize, value).scale.shape == tuple(want):
      return abstract.replace(array=quantize(value))
    quantize = jax.vmap(quantize)
  raise ValueError(f"cannot quantize a {value.shape} kernel to scales {want}")


def quantize_params(params: Any, abstract: Any, scale_dtype=None) -> Any:
  """Quantizes the leaves of `params` that are `WithAux` in `abstract` (same structure,
  dicts); other leaves pass through. `scale_dtype`: the scales' dtype (None: each
  kernel's)."""
  def leaf(value, abs_leaf):
    if isinstance(abs_leaf, WithAux):
      return _quantize_leaf(value, abs_leaf, scale_dtype)
    return value
  return jax.tree.map(leaf, params, abstract,
                      is_leaf=lambda x: isinstance(x, WithAux))


def quantize_for_inference(model: janusflow.JanusFlow, params: Any, qtype: str,
                           dtype) -> tuple[janusflow.JanusFlow, Any]:
  """(quantized model, its params) from float params, quantized once (jitted); scales in
  the compute `dtype`."""
  qmodel = quantized_model(model, qtype)
  abstract = abstract_quantized(qmodel)
  return qmodel, jax.jit(lambda p: quantize_params(p, abstract, dtype))(params)


def param_bytes(params: Any) -> int:
  """Bytes of every array in a (possibly quantized) params tree."""
  return int(sum(x.nbytes for x in jax.tree.leaves(params)))
