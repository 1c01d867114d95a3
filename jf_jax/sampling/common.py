"""Pieces both samplers share: the KV cache with logical axes and inference dtypes.

The cache is the explicit pytree of `jf_jax.models.llama.init_cache`,
{'k', 'v'}: [layers, batch, length, kv_heads, head_dim]; its logical names let it shard like
the activations (batch over data/fsdp, KV heads over tensor) under the logical axis rules.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import llama
from jf_jax.models.config import JanusFlowConfig

CACHE_AXES = ("layers", "act_batch", "act_len", "kv_heads", "head_dim")


def init_cache(cfg: JanusFlowConfig, batch: int, length: int) -> dict:
  """Empty LLM cache in the compute dtype, constrained to its logical sharding."""
  cache = llama.init_cache(cfg.llm, batch, length, cfg.dtype)
  return jax.tree.map(lambda x: nn.with_logical_constraint(x, CACHE_AXES), cache)


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts every floating leaf to `dtype` (inference params: read half the bytes)."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, tree)
