"""Training metrics: TensorBoard event files (tensorboardX, no TensorFlow) and
`WORKDIR/metrics.jsonl` (one {"step": ..., name: value} line per logged step, full
precision; read by tests and scripts). Local or gs:// workdirs (`data/storage.py`)."""

import json

from tensorboardX import SummaryWriter

from jf_jax.data import storage


class MetricsWriter:
  """Scalars to `WORKDIR/tensorboard`; a no-op on non-leader processes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self._writer = SummaryWriter(storage.join(workdir, "tensorboard")) if enabled else None
    self._jsonl = storage.join(workdir, "metrics.jsonl")

  def write(self, step: int, scalars: dict) -> None:
    if self._writer is None:
      return
    numbers = {k: v for k, v in scalars.items() if isinstance(v, (int, float))}
    for name, value in numbers.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()
    storage.append_text(self._jsonl, json.dumps({"step": step, **numbers}) + "\n")

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
