"""Folding LoRA adapters into the base kernels: W' = W + (alpha / rank) * A @ B.

Qwix's adapter of a dense kernel W [*stack, *in, *out] (`*stack`: nn.scan's layers axis)
is A [*stack, prod(in), rank] and B [*stack, rank, prod(out)]; their product, reshaped to
W's shape, is the change of W. The merged params are a plain JanusFlow's: they give the
adapter model's outputs (within float32 rounding) with no LoRA at inference.

A QLoRA run's adapters were trained against the quantized base; merged into the float
base they differ from the trained model by the base's quantization error.
"""

from typing import Any

import flax
import jax.numpy as jnp

from jf_jax.lora import params as lora_params


def merge_adapters(params: Any, scale: float) -> Any:
  """`params` (base + adapters, nested dicts of arrays) with every adapter folded into its
  kernel and removed; kernels keep their dtype (the product is taken in float32)."""
  flat = flax.traverse_util.flatten_dict(params)
  adapters = [k for k in flat if k[-1].endswith("_lora_a")]
  if not adapters:
    raise ValueError("no LoRA adapters (*_lora_a / *_lora_b params) to merge")
  for a_key in adapters:
    weight_key = a_key[:-1] + (a_key[-1][:-len("_lora_a")],)
    b_key = a_key[:-1] + (a_key[-1][:-1] + "b",)
    kernel, a, b = flat[weight_key], flat.pop(a_key), flat.pop(b_key)
    delta = jnp.einsum("...cr,...rm->...cm", a.astype(jnp.float32), b.astype(jnp.float32))
    flat[weight_key] = (kernel.astype(jnp.float32)
                        + scale * delta.reshape(kernel.shape)).astype(kernel.dtype)
  return flax.traverse_util.unflatten_dict(flat)


def adapter_count(params: Any) -> int:
  """Number of adapter parameters (both factors) in a tree."""
  return sum(v.size for k, v in flax.traverse_util.flatten_dict(params).items()
             if lora_params.is_adapter(lora_params.path_str(k)))
