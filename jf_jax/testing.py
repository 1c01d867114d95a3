"""Helpers for tests and benchmarks (random params of a model's shapes, sharded init).

Kept out of the packages the production path imports: nothing in `jf_jax/` outside the
command-line tools and benchmarks calls these.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from jf_jax.models import janusflow
from jf_jax.models.config import JanusFlowConfig
from jf_jax.parallel import partition


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


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules: Sequence[tuple[str, Any]],
                 *args: Any) -> tuple[Any, Any]:
  """Runs `init_fn(*args)` under jit with out_shardings derived from `jax.eval_shape`.

  Args:
    init_fn: e.g. `functools.partial(model.init, method=...)` returning boxed variables.
    mesh: the device mesh.
    rules: logical axis rules.
    *args: positional arguments of `init_fn` (PRNG keys, example inputs).

  Returns:
    (variables, shardings): unboxed variables laid out on `mesh` and their NamedShardings.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = partition.mesh_shardings(abstract, mesh, rules)
    unboxed_init = lambda *a: nn.unbox(init_fn(*a))
    variables = jax.jit(unboxed_init, out_shardings=shardings)(*args)
  return variables, shardings
