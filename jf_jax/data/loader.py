"""The loader: batches of a step function served by grain, with workers, prefetch, a
resumable state and bad-example counts.

A pipeline is a picklable function `batches(step) -> element`, where an element is

  {"step": int, "batch": {layout key: numpy rows of this process},
   "rows": {task: real rows in it},
   "skips": [(task, reason, slot, message, first_draw, length), ...]}

(`mixture.MixtureBatches`, `pipeline.SyntheticBatches`). The loader runs it as the grain
pipeline

  MapDataset.range(step, ...) -> map(batches) -> to_iter_dataset -> mp_prefetch(workers)

`workers` = 0 builds each batch in the calling process when it is asked for (tests,
debugging); n > 0 spawns n grain worker processes that build whole batches ahead (each
keeps `prefetch` ready), handed out in step order, so the batches are the same for any
number of workers. `device_batches` adds the device prefetch: a background thread places
the next batch on the accelerators (with its sharding) while the current step runs.

Everything a worker learns travels inside the element, so the loader counts real rows
and skipped examples (per task and reason) in the training process, for exactly the
batches handed out: the state {"step": next step, "stats": counters} is the same with any
number of workers or processes, and a run resumed from it gets the batches it would have
seen (the range starts at the saved step).
"""

import sys
from typing import Any, Callable, Iterator

from absl import flags
from absl import logging
import grain
import numpy as np

from jf_jax.data.mixture import TASKS


def _empty_stats() -> dict:
  return {"rows": {t: 0 for t in TASKS}, "skipped": {}, "draws": {}, "longest": {}}


def _allow_unparsed_flags() -> None:
  """grain's worker processes read absl flags; a program that does not parse them (a
  test, a notebook) gets the defaults instead of an error."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# Arrays smaller than this cross from a worker pickled with the element rather than in a
# shared-memory segment of their own: a segment costs a handful of system calls and a
# message to the resource tracker at each end, more than copying a few KB of tokens.
_MIN_SHARED_MEMORY_BYTES = 1 << 16


def _plain_arrays(batch: dict) -> dict:
  """The batch as plain numpy arrays without copying the pixels.

  grain hands a worker's large arrays out as views of a shared-memory segment each,
  unlinked when the last reference to it is dropped. A plain `ndarray` view keeps its
  segment alive exactly as long as the caller keeps the rows (then frees it, not at
  interpreter exit) and pickles its data like any array. Copying instead cost the loop's
  process ~3 ms of CPU per 10 MB batch, on the cores the workers need."""
  return {k: v if type(v) is np.ndarray else v.view(np.ndarray) for k, v in batch.items()}


class Loader:
  """`next()` -> this process's numpy rows of the next batch; `get_state`/`set_state`."""

  def __init__(self, batches: Callable[[int], dict], workers: int = 0, prefetch: int = 2,
               counts_examples: bool = True):
    if workers < 0 or prefetch < 1:
      raise ValueError(f"config.data.workers={workers} must be >= 0 and "
                       f"config.data.prefetch={prefetch} >= 1")
    self._batches, self._workers, self._prefetch = batches, workers, prefetch
    self._counts = counts_examples
    self._step, self._stats = 0, _empty_stats()
    self._iterators = []

  def dataset(self) -> grain.IterDataset:
    """The grain pipeline from the current step on."""
    ds = grain.MapDataset.range(self._step, sys.maxsize).map(self._batches)
    # No reader threads: a batch is built by the process that iterates it (or its workers).
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if self._workers:
      _allow_unparsed_flags()
      ds = grain.experimental.WithOptionsIterDataset(
          ds, grain.experimental.DatasetOptions(min_shm_size=_MIN_SHARED_MEMORY_BYTES))
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._workers, per_worker_buffer_size=self._prefetch))
    return ds

  # -- state -------------------------------------------------------------------------------

  def get_state(self) -> dict:
    """JSON: the next step and (mixture sources) this process's counters as of the last
    batch handed out (a multi-process run restores the primary process's counters)."""
    state = {"step": self._step}
    if self._counts:
      state["stats"] = self.stats()
    return state

  def set_state(self, state: dict) -> None:
    """Continue from a `get_state()`; iterators already handed out stop being valid."""
    if "step" not in state:
      raise ValueError(f"not an input-pipeline state (keys {sorted(state)}): a checkpoint "
                       "from before the grain loader cannot be resumed by it")
    self.close()
    self._step = int(state["step"])
    stats = state.get("stats", {})
    self._stats = {"rows": {t: int(stats.get("rows", {}).get(t, 0)) for t in TASKS}}
    for key in ("skipped", "draws", "longest"):
      self._stats[key] = {k: int(v) for k, v in stats.get(key, {}).items()}

  def stats(self) -> dict:
    """Counters so far: {'rows': real rows per task, 'skipped': {'task/reason': distinct
    bad examples}, 'draws': {'task/reason': skipped rows, every epoch's draw},
    'longest': {'task/reason': longest row in tokens (too-long rows)}}."""
    return {key: dict(value) for key, value in self._stats.items()}

  # -- batches -----------------------------------------------------------------------------

  def _take(self, element: dict) -> None:
    """Counts a batch as handed out (its rows, its skipped examples)."""
    if element["step"] != self._step:
      raise RuntimeError(f"loader expected step {self._step}, got {element['step']}")
    self._step += 1
    for task, n in element["rows"].items():
      self._stats["rows"][task] += n
    for task, reason, slot, message, first_draw, length in element["skips"]:
      key = f"{task}/{reason}"
      draws = self._stats["draws"][key] = self._stats["draws"].get(key, 0) + 1
      if length is not None:
        self._stats["longest"][key] = max(length, self._stats["longest"].get(key, 0))
      if first_draw:
        self._stats["skipped"][key] = self._stats["skipped"].get(key, 0) + 1
      if str(draws).rstrip("0") == "1":  # 1st, 10th, 100th, ...
        logging.warning("skipped bad %s example (slot %d: %s); %d rows skipped for this "
                        "reason so far", task, slot, message, draws)

  def _iterator(self, ds: grain.IterDataset):
    it = iter(ds)
    self._iterators.append(it)
    return it

  def __next__(self) -> dict:
    if not self._iterators:
      self._iterator(self.dataset())
    element = next(self._iterators[0])
    self._take(element)
    return _plain_arrays(element["batch"])

  def __iter__(self):
    return self

  def device_batches(self, place: Callable[[dict], Any]) -> Iterator[tuple[dict, Any]]:
    """(numpy rows, placed batch) of each next step; `place(rows)` (e.g. to global arrays
    with the batch sharding) runs in a background thread that keeps one batch placed
    ahead, so the copy to the accelerators overlaps the running step."""
    self.close()
    ds = self.dataset().map(lambda element: (element, place(element["batch"])))
    it = self._iterator(grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=1))
    for element, placed in it:
      self._take(element)
      yield _plain_arrays(element["batch"]), placed

  def close(self) -> None:
    """Stops worker processes and prefetch threads (a later `next` starts again)."""
    for it in self._iterators:
      if hasattr(it, "close"):
        it.close()
    self._iterators = []
