"""Pieces both samplers share: the KV cache with logical axes, inference dtypes, params.

The cache is the explicit pytree of `jf_jax.models.llama.init_cache`,
{'k', 'v'}: [layers, batch, length, kv_heads, head_dim]; its logical names let it shard like
the activations (batch over data/fsdp, KV heads over tensor) under the logical axis rules.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jf_jax.models import janusflow
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


def random_params(cfg: JanusFlowConfig, seed: int = 0, std: float = 0.02) -> Any:
  """Random params of the model's shapes, for tests and benchmarks (drawn on device).

  Shapes come from `jax.eval_shape` of the real init. All values come from ONE normal draw
  sliced into the leaves: XLA compiles one RNG op quickly, while one per leaf (or the
  real initialisers) takes minutes on CPU. Norm scales are near one so activations stay
  well scaled through the layers.
  """
  abstract = nn.unbox(janusflow.abstract_params(janusflow.JanusFlow(cfg)))["params"]
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  sizes = [int(np.prod(leaf.shape)) for _, leaf in leaves]
  offsets = np.cumsum([0] + sizes)

  @jax.jit
  def draw(key):
    flat = std * jax.random.normal(key, (int(offsets[-1]),), jnp.float32)
    out = []
    for (path, leaf), start, size in zip(leaves, offsets, sizes):
      x = flat[start:start + size].reshape(leaf.shape)
      if getattr(path[-1], "key", None) == "scale":
        x = x + 1.0
      out.append(x.astype(leaf.dtype))
    return out

  return jax.tree_util.tree_unflatten(treedef, draw(jax.random.key(seed)))


def random_like(abstract: Any, seed: int = 0, std: float = 0.02) -> Any:
  """numpy-drawn random arrays for an (unboxed) abstract tree; norm scales near one."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    x = rng.normal(0.0, std, leaf.shape).astype(np.float32)
    if getattr(path[-1], "key", None) == "scale":
      x += 1.0
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def numpy_random_params(cfg: JanusFlowConfig, seed: int = 0, std: float = 0.02) -> Any:
  """Like `random_params`, drawn with numpy (no compile at all; for tiny configs)."""
  abstract = nn.unbox(janusflow.abstract_params(janusflow.JanusFlow(cfg)))["params"]
  return random_like(abstract, seed, std)
