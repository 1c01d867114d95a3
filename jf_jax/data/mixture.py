"""A deterministic, resumable, per-process mixture of three task streams.

Each task (und / text / gen) reads its own random-access data (a tfds array_record source
or a list) through its own index stream: global slot k -> example `perm_e[k % N]` with a
fresh seeded permutation per epoch e = k // N. A batch takes the next `rows` slots of every
task, and process p builds the p-th contiguous block of them, exactly the rows
`global_batch` places on it. So the global batch does not depend on the number of
processes, and the whole iterator state is three slot cursors: JSON, the same on every
process, saved in the Orbax checkpoint (`loop.py`), resume-exact.

Bad examples (undecodable or wrong-size image, empty or over-long text) never stop the
run: the row becomes a zero-weight padding row (static shapes, processes stay in
lockstep), the reason is counted (`stats()`, also saved in the state) and logged at the
1st, 10th, 100th, ... occurrence.
"""

from typing import Any, Callable, Mapping, Sequence

from absl import logging
import numpy as np

from jf_jax.data.processor import RowBuilder
from jf_jax.data.records import BadExample

TASKS = ("und", "text", "gen")
_TASK_IDS = {name: i for i, name in enumerate(TASKS)}
# A converter turns a data item into a record (`records.py`); rng is per slot.
Converter = Callable[[Any, np.random.Generator], dict]


class IndexStream:
  """Global slot -> example index; a new seeded permutation of [0, size) every epoch."""

  def __init__(self, size: int, seed: int, task: str, shuffle: bool = True):
    if size <= 0:
      raise ValueError(f"task {task!r} has no examples")
    self.size, self._seed, self._task, self._shuffle = size, seed, _TASK_IDS[task], shuffle
    self._epoch, self._perm = -1, None

  def __call__(self, slot: int) -> int:
    epoch, pos = divmod(slot, self.size)
    if not self._shuffle:
      return pos
    if epoch != self._epoch:
      rng = np.random.default_rng([self._seed, self._task, epoch])
      self._epoch, self._perm = epoch, rng.permutation(self.size)
    return int(self._perm[pos])


class MixtureSource:
  """`next()` -> this process's rows of the next global batch (numpy, `layout.py` keys)."""

  def __init__(self, tasks: Mapping[str, tuple[Sequence, Converter]],
               rows: Mapping[str, int], builder: RowBuilder, seed: int,
               process_index: int = 0, process_count: int = 1, shuffle: bool = True):
    self._tasks, self._builder, self._seed = tasks, builder, seed
    self._index, self._count, self._shuffle = process_index, process_count, shuffle
    self._streams = {}
    self.set_rows(rows)
    self._cursor = {t: 0 for t in TASKS}
    self._stats = {"rows": {t: 0 for t in TASKS}, "skipped": {}}

  def set_rows(self, rows: Mapping[str, int]) -> None:
    """Rows per task of the batches from now on (`config.batch.switch`); the cursors go
    on where they are, so a resumed run that sets the same rows continues exactly."""
    for task, n in rows.items():
      if n % self._count:
        raise ValueError(f"config.batch.{task}_rows={n} is not divisible by the "
                         f"{self._count} processes")
      if n and task not in self._tasks:
        raise ValueError(f"config.batch.{task}_rows={n} but the source has no {task} data")
    self._rows = dict(rows)
    for task, n in rows.items():
      if n and task not in self._streams:
        self._streams[task] = IndexStream(len(self._tasks[task][0]), self._seed, task,
                                          self._shuffle)

  # -- state -------------------------------------------------------------------------------

  def get_state(self) -> dict:
    """JSON: the slot cursors (the same on every process) and this process's counters
    (a multi-process run restores the primary process's counters everywhere)."""
    return {"cursor": dict(self._cursor), "stats": {"rows": dict(self._stats["rows"]),
                                                     "skipped": dict(self._stats["skipped"])}}

  def set_state(self, state: Mapping) -> None:
    if "cursor" not in state:
      raise ValueError(f"not a MixtureSource state: keys {sorted(state)}")
    self._cursor = {t: int(state["cursor"].get(t, 0)) for t in TASKS}
    stats = state.get("stats", {})
    self._stats = {"rows": {t: int(stats.get("rows", {}).get(t, 0)) for t in TASKS},
                   "skipped": {k: int(v) for k, v in stats.get("skipped", {}).items()}}

  def stats(self) -> dict:
    """{'rows': real rows built per task, 'skipped': {'task/reason': count}} (this process)."""
    return {"rows": dict(self._stats["rows"]), "skipped": dict(self._stats["skipped"])}

  # -- batches -----------------------------------------------------------------------------

  def _row(self, task: str, slot: int) -> tuple[dict[str, np.ndarray], bool]:
    """(row, real) for a global slot; a bad example gives (padding row, False)."""
    data, convert = self._tasks[task]
    index = self._streams[task](slot)
    try:
      record = convert(data[index], np.random.default_rng([self._seed, _TASK_IDS[task], slot]))
      row = self._builder.build(task, record)
    except BadExample as e:
      self._count_skip(task, e.reason, index, str(e))
      return self._builder.padding(task), False
    self._stats["rows"][task] += 1
    return row, True

  def _count_skip(self, task: str, reason: str, index: int, message: str) -> None:
    key = f"{task}/{reason}"
    n = self._stats["skipped"].get(key, 0) + 1
    self._stats["skipped"][key] = n
    if str(n).rstrip("0") == "1":  # 1st, 10th, 100th, ...
      logging.warning("skipped bad %s example %d (%s); %d skipped for this reason so far",
                      task, index, message, n)

  def _task_batch(self, task: str) -> dict[str, np.ndarray]:
    total = self._rows.get(task, 0)
    local = total // self._count
    start = self._cursor[task] + self._index * local
    self._cursor[task] += total
    if local:
      rows, real = zip(*(self._row(task, slot) for slot in range(start, start + local)))
    else:  # a task with no rows this stage still has its (empty) keys
      rows, real = [], []
    template = rows[0] if rows else self._builder.padding(task)
    # Row key "ids" of task "und" -> batch key "und_ids" (layout.py).
    out = {f"{task}_{k}": np.stack([r[k] for r in rows]) if rows else
           np.zeros((0,) + v.shape, v.dtype) for k, v in template.items()}
    if task == "gen":
      out["gen_weights"] = np.asarray(real, np.float32).reshape(len(real))
    return out

  def __next__(self) -> dict[str, np.ndarray]:
    batch = {}
    for task in TASKS:
      batch.update(self._task_batch(task))
    return batch

  def __iter__(self):
    return self
