"""Shardings from shapes: abstract variables -> logical specs -> NamedShardings.

State shardings never come from real arrays. `jax.eval_shape(init)` gives a tree whose
parameters are `nn.LogicallyPartitioned` boxes carrying logical axis names; the rules of
`jf_jax.parallel.rules` turn those into mesh shardings, and `jf_jax.testing.init_sharded` materialises the
variables directly in that layout. `assert_params_sufficiently_sharded` then guards against
a forgotten annotation silently replicating a large tensor on every device.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding

from jf_jax.parallel.paths import path_str


def logical_specs(abstract: Any) -> Any:
  """Tree of logical `PartitionSpec`s (unboxed structure; unannotated leaves -> P())."""
  return nn.get_partition_spec(abstract)


def mesh_shardings(abstract: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """Tree of `NamedSharding`s on `mesh` (unboxed structure of `abstract`)."""
  return nn.logical_to_mesh_sharding(logical_specs(abstract), mesh, rules)


def _is_sharded(sharding: Any) -> bool:
  """Whether a sharding splits its array over some mesh axis of size > 1."""
  if isinstance(sharding, NamedSharding):
    sizes = sharding.mesh.shape
    for entry in sharding.spec:
      axes = (entry,) if isinstance(entry, str) else entry
      if isinstance(axes, (tuple, list)) and any(sizes[a] > 1 for a in axes):
        return True
    return False
  return not sharding.is_fully_replicated


def _mesh_is_trivial(shardings: list[Any]) -> bool:
  """True when every sharding lives on a single device (nothing can be sharded)."""
  return all(len(s.device_set) == 1 for s in shardings)


def sharded_fraction(shardings_or_arrays: Any, abstract: Any) -> tuple[float, list]:
  """Fraction of parameter bytes that are sharded, and the unsharded leaves.

  Returns:
    (fraction, unsharded) with `unsharded` a list of (bytes, path, shape) sorted largest
    first. A layout on a single device counts as fully sharded.
  """
  shapes, treedef = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract))
  leaves = treedef.flatten_up_to(shardings_or_arrays)
  shardings = [x if isinstance(x, jax.sharding.Sharding) else x.sharding for x in leaves]
  if not shardings or _mesh_is_trivial(shardings):
    return 1.0, []
  total, unsharded = 0, []
  for (path, shape), sharding in zip(shapes, shardings):
    nbytes = shape.size * shape.dtype.itemsize
    total += nbytes
    if not _is_sharded(sharding):
      unsharded.append((nbytes, path_str(path), tuple(shape.shape)))
  if total == 0:
    return 1.0, []
  return 1.0 - sum(n for n, _, _ in unsharded) / total, sorted(unsharded, reverse=True)


def assert_params_sufficiently_sharded(shardings_or_arrays: Any, abstract: Any,
                                       threshold: float = 0.98) -> float:
  """Raises if fewer than `threshold` of parameter bytes are sharded.

  Args:
    shardings_or_arrays: tree (structure of the unboxed `abstract`) of shardings or arrays.
    abstract: the (boxed or unboxed) abstract parameter tree, for shapes and dtypes.
    threshold: minimum sharded byte fraction; 0 disables the check (e.g. pure data
      parallelism). A single-device layout passes trivially.

  Returns:
    The sharded fraction.
  """
  fraction, unsharded = sharded_fraction(shardings_or_arrays, abstract)
  if fraction < threshold:
    top = "\n".join(f"  {path} {shape}: {nbytes / 2**20:.2f} MiB"
                    for nbytes, path, shape in unsharded[:10])
    raise ValueError(
        f"only {fraction:.2%} of parameter bytes are sharded (< {threshold:.0%}); give these "
        f"a logical name mapped to a mesh axis of size > 1 (config.logical_axis_rules) "
        f"or lower the threshold. Largest unsharded:\n{top}")
  return fraction
