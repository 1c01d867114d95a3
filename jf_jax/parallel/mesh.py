"""Device mesh ('data', 'fsdp', 'tensor') from config, distributed init, startup checks.

`config.mesh` holds one size per axis; exactly one may be -1 and takes the remaining
devices. The default (data=1, fsdp=-1, tensor=1) is pure FSDP. Axes are `AxisType.Auto`
so Linen's logical constraints and `jax.jit` shardings drive the partitioner (jax's own
default for `make_mesh` is Explicit, which Linen does not use).
"""

import math
from typing import Any, Sequence

from absl import logging
import jax
from jax.sharding import AxisType
from jax.sharding import Mesh

from jf_jax.parallel.rules import MESH_AXES


def _axis_size(mesh_config: Any, name: str) -> int:
  """`config.mesh.<name>` as an int (missing means 1)."""
  get = mesh_config.get if hasattr(mesh_config, "get") else (
      lambda k, d: getattr(mesh_config, k, d))
  return int(get(name, 1))


def resolve_mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, ...]:
  """Sizes of ('data', 'fsdp', 'tensor') with a -1 filled in; errors name config keys."""
  sizes = {a: _axis_size(mesh_config, a) for a in MESH_AXES}
  fill = [a for a, s in sizes.items() if s == -1]
  bad = [a for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ValueError(f"config.mesh.{bad[0]} = {sizes[bad[0]]}: mesh sizes must be >= 1 "
                     "(or -1 for one axis)")
  if len(fill) > 1:
    raise ValueError(f"only one of config.mesh.{{data,fsdp,tensor}} may be -1; got -1 for "
                     f"{', '.join('config.mesh.' + a for a in fill)}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % known:
      fixed = ", ".join(f"config.mesh.{a}={s}" for a, s in sizes.items() if s != -1)
      raise ValueError(f"{num_devices} devices are not divisible by {fixed} (product "
                       f"{known}), so config.mesh.{fill[0]}=-1 cannot fill the rest")
    sizes[fill[0]] = num_devices // known
  elif known != num_devices:
    desc = ", ".join(f"config.mesh.{a}={s}" for a, s in sizes.items())
    raise ValueError(f"mesh {desc} has {known} devices but {num_devices} are available; "
                     "set one axis to -1 or fix the sizes")
  return tuple(sizes[a] for a in MESH_AXES)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  mesh = jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)
  logging.info("mesh %s over %d devices", dict(zip(MESH_AXES, shape)), len(devices))
  return mesh


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` unless the run is single-process.

  With all arguments None nothing happens (a single host); on a TPU pod or SLURM cluster
  pass `num_processes` (> 1) and let JAX auto-detect what is left None. Safe to call twice.

  Returns:
    True if JAX's distributed runtime is initialised after the call.
  """
  if not jax.distributed.is_initialized():
    if coordinator_address is None and num_processes in (None, 1):
      return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    logging.info("jax.distributed: process %d of %d", jax.process_index(),
                 jax.process_count())
  # Also when the caller initialised jax.distributed itself.
  _no_persistent_cache_on_cpu()
  return True


def _no_persistent_cache_on_cpu() -> None:
  """Turns JAX's persistent compilation cache off for a multi-process CPU run.

  On XLA:CPU a train step loaded from that cache (instead of compiled in the process)
  was seen to deadlock every time in its first gloo collectives: the processes sat in
  different collectives (one in an all-reduce, the other in an all-to-all), while the
  same run compiled in-process passed. TPU and GPU runs keep the cache.
  """
  if jax.devices()[0].platform != "cpu" or not jax.config.jax_compilation_cache_dir:
    return
  logging.warning("multi-process CPU run: the persistent compilation cache (%s) is turned "
                  "off; executables loaded from it deadlock in XLA:CPU's gloo collectives",
                  jax.config.jax_compilation_cache_dir)
  jax.config.update("jax_enable_compilation_cache", False)


def check_divisibility(global_batch: int, mesh: Mesh, num_heads: int, num_kv_heads: int,
                       batch_key: str = "config.batch.global_size") -> None:
  """Startup checks that the batch and heads split evenly over the mesh.

  The batch is sharded over ('data', 'fsdp') and must also split evenly over processes;
  attention heads are sharded over 'tensor'. Call once per separately sharded batch (e.g.
  per task) with `batch_key` naming its config field.
  """
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch % batch_shards:
    raise ValueError(f"{batch_key}={global_batch} is not divisible by "
                     f"config.mesh.data * config.mesh.fsdp = {batch_shards}")
  if global_batch % jax.process_count():
    raise ValueError(f"{batch_key}={global_batch} is not divisible by the "
                     f"process count {jax.process_count()}")
  tensor = mesh.shape["tensor"]
  for key, heads in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
    if heads % tensor:
      raise ValueError(f"config.model.llm.{key}={heads} is not divisible by "
                       f"config.mesh.tensor={tensor}")
