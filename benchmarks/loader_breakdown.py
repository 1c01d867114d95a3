r"""Where a batch's time goes through the grain loader: the diagnostic behind
`input_pipeline.py`'s worker figures.

For each worker count it splits the cost of one JPEG batch (the rows of
`input_pipeline.py`) into

* build: the batch function itself (wall and CPU), timed inside whichever process runs
  it (the loop's process with 0 workers, a worker otherwise);
* worker overhead: the rest of the workers' CPU per batch (grain's copy into shared
  memory, pickling the element onto the queue, its state bookkeeping, and the resource
  tracker process that records each shared-memory segment), from the CPU counters in
  /proc of this process's children;
* the loop's process: its CPU per batch in total, the part spent in `next()` (grain's
  hand-over: reading the queue, opening the shared memory), the part spent turning the
  arrays into plain numpy arrays, and the rest, which its threads burn while the loop
  waits (polling). What a copy out of shared memory would cost is printed beside it.

It also times batches built by 1 and 2 independent processes with no hand-over and no
loop process at all: the most any number of workers could deliver on this machine.

  python benchmarks/loader_breakdown.py --config configs/tiny_shapes.py --workers 0,1,2
"""

from concurrent import futures
import multiprocessing as mp
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import cloudpickle
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks import input_pipeline  # pylint: disable=wrong-import-position
from jf_jax.data import loader as loader_lib  # pylint: disable=wrong-import-position
from jf_jax.data import pipeline  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position

# The flags of input_pipeline.py (--config, --workers, --batches, --warmup, --num_jpegs,
# --image_size, --patch_size): the same rows as its JPEG figures.
_CONFIG, _WORKERS = input_pipeline._CONFIG, input_pipeline._WORKERS  # pylint: disable=protected-access
_BATCHES, _WARMUP = input_pipeline._BATCHES, input_pipeline._WARMUP  # pylint: disable=protected-access
_NUM_JPEGS = input_pipeline._NUM_JPEGS  # pylint: disable=protected-access
_MIN_SHM = flags.DEFINE_integer("min_shm_bytes", -1, "Smallest array handed over in shared "
                                "memory (-1: the loader's own setting).")


class TimedBatches:
  """The batch function, with its own wall and CPU seconds (of the thread that runs it)
  and the pid of its process inside each element."""

  def __init__(self, batches):
    self._batches = batches

  def __call__(self, step: int) -> dict:
    wall, cpu = time.perf_counter(), time.thread_time()
    element = self._batches(step)
    element["timing"] = (time.perf_counter() - wall, time.thread_time() - cpu, os.getpid())
    return element


def _cpu_seconds(pid: int) -> float:
  """utime + stime of a process (all its threads), from /proc."""
  with open(f"/proc/{pid}/stat", encoding="ascii") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
  pids = []
  for task in os.listdir(f"/proc/{os.getpid()}/task"):
    try:
      with open(f"/proc/{os.getpid()}/task/{task}/children", encoding="ascii") as f:
        pids += [int(p) for p in f.read().split()]
    except OSError:
      pass
  return pids


def _build_alone(pickled_batches: bytes, steps: range, start_at: float) -> tuple:
  """Builds `steps` in this process from wall-clock `start_at` on (so processes started
  together overlap); (seconds, CPU seconds)."""
  batches = cloudpickle.loads(pickled_batches)
  batches(steps[0] + 10_000)  # warm-up: imports, first-use caches
  time.sleep(max(0.0, start_at - time.time()))
  wall, cpu = time.perf_counter(), time.process_time()
  for step in steps:
    batches(step)
  return time.perf_counter() - wall, time.process_time() - cpu


def independent_builds(config, procs: int) -> tuple[float, float, float]:
  """(batches/s, mean build wall ms, mean build CPU ms) of `procs` processes each
  building its own batches at the same time, with no hand-over and no loop process: the
  most any number of workers could deliver on this machine (wall above CPU: the
  processes waited for a core)."""
  config = config.copy_and_resolve_references()
  cfg = model_config.from_config_dict(config.model)
  source = pipeline.make_source(config, cfg, process_index=0, process_count=1)
  pickled = cloudpickle.dumps(source._batches)  # pylint: disable=protected-access
  n = _BATCHES.value
  start_at = time.time() + 5.0 + 2.0 * procs
  with futures.ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
    runs = [pool.submit(_build_alone, pickled, range(i * n, (i + 1) * n), start_at)
            for i in range(procs)]
    walls, cpus = zip(*(r.result() for r in runs))
  return procs * n / max(walls), 1000 * sum(walls) / (procs * n), 1000 * sum(cpus) / (procs * n)


def breakdown(config, workers: int) -> dict:
  """Per-batch milliseconds of each part (see the module docstring)."""
  config = config.copy_and_resolve_references()
  cfg = model_config.from_config_dict(config.model)
  source = pipeline.make_source(config, cfg, process_index=0, process_count=1)
  loader = loader_lib.Loader(TimedBatches(source._batches), workers,  # pylint: disable=protected-access
                             config.data.get("prefetch", 2))
  it = iter(loader.dataset())
  try:
    for _ in range(_WARMUP.value):
      next(it)
    kids = _children()
    kid_cpu = {p: _cpu_seconds(p) for p in kids}
    builds, next_wall, next_cpu, plain_cpu, copy_cpu = [], 0.0, 0.0, 0.0, 0.0
    start, cpu0 = time.perf_counter(), _cpu_seconds(os.getpid())
    for _ in range(_BATCHES.value):
      w, c = time.perf_counter(), time.process_time()
      element = next(it)
      next_wall += time.perf_counter() - w
      next_cpu += time.process_time() - c
      c = time.process_time()
      rows = loader_lib._plain_arrays(element["batch"])  # pylint: disable=protected-access
      plain_cpu += time.process_time() - c
      c = time.process_time()
      {k: np.array(v) for k, v in element["batch"].items()}  # what a copy would cost
      copy_cpu += time.process_time() - c
      del rows
      builds.append(element["timing"])
    elapsed = time.perf_counter() - start
    main_cpu = _cpu_seconds(os.getpid()) - cpu0
    kid_cpu = sum(_cpu_seconds(p) - kid_cpu[p] for p in kids)
  finally:
    it.close() if hasattr(it, "close") else None
  n = _BATCHES.value
  ms = lambda s: 1000 * s / n
  build_wall = sum(b[0] for b in builds)
  build_cpu = sum(b[1] for b in builds)
  in_loop = workers == 0
  return dict(
      batches_s=n / elapsed, batch_bytes=sum(v.nbytes for v in element["batch"].values()),
      build_wall=ms(build_wall), build_cpu=ms(build_cpu),
      worker_cpu=ms(kid_cpu), worker_overhead=ms(kid_cpu - (0 if in_loop else build_cpu)),
      main_cpu=ms(main_cpu - copy_cpu), next_wall=ms(next_wall), next_cpu=ms(next_cpu),
      handover_cpu=ms(next_cpu - (build_cpu if in_loop else 0)), plain_cpu=ms(plain_cpu),
      copy_cpu=ms(copy_cpu), idle_cpu=ms(main_cpu - next_cpu - plain_cpu - copy_cpu))


def main(argv):
  del argv
  if _MIN_SHM.value >= 0:
    loader_lib._MIN_SHARED_MEMORY_BYTES = _MIN_SHM.value  # pylint: disable=protected-access
  folder = tempfile.mkdtemp(prefix="jpegs_")
  input_pipeline.write_jpegs(folder, _NUM_JPEGS.value)
  config = input_pipeline.jpeg_config(_CONFIG.value, folder)
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {_BATCHES.value} "
        f"batches after {_WARMUP.value}; ms per batch:")
  for workers in (int(w) for w in _WORKERS.value):
    r = breakdown(config, workers)
    print(f"workers {workers}: {r['batches_s']:.2f} batches/s ({1000 / r['batches_s']:.0f} "
          f"ms/batch), {r['batch_bytes'] / 1e6:.1f} MB/batch | build wall {r['build_wall']:.1f}"
          f" cpu {r['build_cpu']:.1f} | workers' cpu {r['worker_cpu']:.1f} (overhead beyond "
          f"build {r['worker_overhead']:.1f}) | loop process cpu {r['main_cpu']:.1f} = next() "
          f"{r['next_cpu']:.1f} (hand-over {r['handover_cpu']:.1f}, wall {r['next_wall']:.1f})"
          f" + plain views {r['plain_cpu']:.1f} + while waiting {r['idle_cpu']:.1f} | (a copy "
          f"instead of views: {r['copy_cpu']:.1f}, not in the total) | load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
  for procs in (1, 2):
    rate, wall, cpu = independent_builds(config, procs)
    print(f"{procs} independent process(es) building batches, no hand-over: {rate:.2f} "
          f"batches/s, build wall {wall:.1f} cpu {cpu:.1f} ms/batch (load "
          f"{os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
  app.run(main)
