"""TensorBoard event files (tensorboardX, no TensorFlow) for the training metrics."""

import os

from tensorboardX import SummaryWriter


class MetricsWriter:
  """Scalars to `WORKDIR/tensorboard`; a no-op on non-leader processes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self._writer = SummaryWriter(os.path.join(workdir, "tensorboard")) if enabled else None

  def write(self, step: int, scalars: dict) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      if isinstance(value, (int, float)):
        self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
