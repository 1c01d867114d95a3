"""The task streams as grain datasets, and the fixed-layout batch of a training step.

Each task (und / text / gen / edit) is a grain `MapDataset` of rows (`task_rows`):

  source (any random-access data) -> shuffle (seeded, per task) -> repeat (a new order
  every epoch) -> map_with_index (record -> fixed-shape row, `processor.RowBuilder`)

so global slot k of a task is one row, a pure function of (seed, task, k). A training step
takes the next `rows` slots of every task (`layout.slots_before` says where each stream
stands at a step, across `config.batch.switch`), and process p builds the p-th contiguous
block of them, exactly the rows `pipeline.global_batch` places on it. `MixtureBatches(step)`
is therefore a pure function of the step: the global batch does not depend on the number
of processes or of loader workers, and the loader's state is the step (`loader.py`).

Bad examples (undecodable or wrong-size image, empty or over-long text) never stop the
run: the row becomes a zero-weight padding row (static shapes, processes stay in
lockstep) and the batch carries the reason (`skips`), which the loader counts in the
training process, whichever process built the batch. A skip says whether it is the
example's first draw (its slot lies in the task's first epoch, where every example is
drawn exactly once), so a bad file is counted once, however many epochs draw it.
"""

from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from jf_jax.data import layout
from jf_jax.data.processor import RowBuilder
from jf_jax.data.records import BadExample

TASKS = ("und", "text", "gen", "edit")  # appended: earlier tasks keep their seeds
_TASK_IDS = {name: i for i, name in enumerate(TASKS)}
# A converter turns a data item into a record (`records.py`); rng is per slot.
Converter = Callable[[Any, np.random.Generator], dict]


def task_seed(seed: int, task: str) -> int:
  """The task's shuffle seed (grain wants 0 <= seed < 2**32)."""
  return int(np.random.SeedSequence([seed, _TASK_IDS[task]]).generate_state(1)[0])


class BuildRow(grain.transforms.MapWithIndex):
  """(slot, item) -> (row, None), or (padding row, (reason, message, length)) for a bad
  example (length: the token count of a too-long row, else None)."""

  def __init__(self, task: str, convert: Converter, builder: RowBuilder, seed: int):
    self._task, self._convert, self._builder, self._seed = task, convert, builder, seed

  def map_with_index(self, index: int, element: Any):
    rng = np.random.default_rng([self._seed, _TASK_IDS[self._task], index])
    try:
      return self._builder.build(self._task, self._convert(element, rng)), None
    except BadExample as e:
      return self._builder.padding(self._task), (e.reason, str(e), e.length)


def task_rows(data: Sequence, convert: Converter, builder: RowBuilder, task: str, seed: int,
              shuffle: bool = True) -> grain.MapDataset:
  """Endless rows of one task: slot k -> (row, skip), a new seeded order every epoch."""
  if not len(data):
    raise ValueError(f"task {task!r} has no examples")
  ds = grain.MapDataset.source(data)
  if shuffle:
    ds = ds.shuffle(seed=task_seed(seed, task))
  return ds.repeat().map_with_index(BuildRow(task, convert, builder, seed))


class MixtureBatches:
  """step -> this process's rows of the global batch of that step (numpy, `layout.py`
  keys), with the real rows and the skipped examples it holds (`loader.py`'s element)."""

  def __init__(self, tasks: Mapping[str, tuple[Sequence, Converter]], builder: RowBuilder,
               batch_cfg: Any, seed: int, shuffle: bool = True, process_index: int = 0,
               process_count: int = 1):
    self._batch_cfg, self._builder = batch_cfg, builder
    self._index, self._count = process_index, process_count
    needed = set()
    for prefix, rows in layout.row_groups(batch_cfg):
      for task, n in rows.items():
        if n % process_count:
          raise ValueError(f"{prefix}.{task}_rows={n} is not divisible by the "
                           f"{process_count} processes")
        if n and task not in tasks:
          raise ValueError(f"{prefix}.{task}_rows={n} but the source has no {task} data")
        if n:
          needed.add(task)
    self._rows = {task: task_rows(*tasks[task], builder, task, seed, shuffle)
                  for task in sorted(needed)}
    self._sizes = {task: len(tasks[task][0]) for task in needed}  # examples per epoch

  def _task_batch(self, task: str, first: int, total: int, element: dict) -> None:
    local = total // self._count
    start = first + self._index * local
    built = [self._rows[task][slot] for slot in range(start, start + local)]
    for slot, (_, skip) in zip(range(start, start + local), built):
      if skip is not None:
        reason, message, length = skip
        element["skips"].append((task, reason, slot, message, slot < self._sizes[task],
                                 length))
    element["rows"][task] = sum(skip is None for _, skip in built)
    rows = [row for row, _ in built]
    template = rows[0] if rows else self._builder.padding(task)
    # Row key "ids" of task "und" -> batch key "und_ids" (layout.py).
    batch = element["batch"]
    batch.update({f"{task}_{k}": np.stack([r[k] for r in rows]) if rows else
                  np.zeros((0,) + v.shape, v.dtype) for k, v in template.items()})
    if task in ("gen", "edit"):
      batch[f"{task}_weights"] = np.asarray([skip is None for _, skip in built], np.float32
                                        ).reshape(local)

  def __call__(self, step: int) -> dict:
    rows = layout.rows_at(self._batch_cfg, step)
    first = layout.slots_before(self._batch_cfg, step)
    element = {"step": step, "batch": {}, "rows": {}, "skips": []}
    for task in TASKS:
      self._task_batch(task, first[task], rows[task], element)
    return element
