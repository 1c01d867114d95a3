"""Where the benchmark runner computes: a 1-D mesh of this process's devices, and this
process's share of the work.

Every device runs the same single-device program on its own rows (`jax.shard_map`, no
collectives), and the per-device batch is a flag, so a row's result does not depend on
how many devices (or processes) share the work. Processes do not talk to each other:
each takes every `process_count`-th item and writes its own outputs.
"""

from typing import Callable, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"
T = TypeVar("T")


def local_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh ('batch') of the first `num_devices` local devices (default all)."""
  devices = jax.local_devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"--devices={num_devices}: this process has {len(devices)} devices")
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.array(devices), (AXIS,))


def process_share(items: Sequence[T]) -> list[T]:
  """This process's items: every `process_count`-th one, from its index on."""
  return list(items[jax.process_index()::jax.process_count()])


def replicate(tree, mesh: jax.sharding.Mesh):
  """Copies a pytree (params) to every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_rows(x, mesh: jax.sharding.Mesh):
  """Splits an array's leading (row) axis over the mesh."""
  return jax.device_put(x, NamedSharding(mesh, P(AXIS)))


def per_device(fn: Callable, mesh: jax.sharding.Mesh, row_args: Sequence[bool]) -> Callable:
  """jit(shard_map(fn)): each device calls `fn` on its own rows.

  row_args[i] says whether positional argument i is split by rows (else replicated);
  every output is split by rows.
  """
  specs = tuple(P(AXIS) if rows else P() for rows in row_args)
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(AXIS),
                               check_vma=False))


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Repeats the last row up to `rows` rows (a fixed batch shape compiles once)."""
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)]) if len(x) < rows else x


def batches(n: int, size: int):
  """(start, stop) of consecutive batches of `size` over n items."""
  for start in range(0, n, size):
    yield start, min(start + size, n)
