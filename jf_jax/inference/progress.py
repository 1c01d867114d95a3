"""A progress line per batch for long inference loops (the evaluation after training).

  progress = Progress("generation", total=200)
  for ...:                         # batches of 50
    ...
    progress(done)                 # prints "evaluation, generation  50/200 [####....] ..."

One printed line per call (not a carriage-return bar: the console is often a log file).
The ETA uses the batches after the first, which includes compiling the sampler.
"""

import time
from typing import Callable

_BAR = 20  # characters


class Progress:
  """Prints `label`'s progress over `total` items; `__call__(done)` after each batch."""

  def __init__(self, label: str, total: int, clock: Callable[[], float] = time.perf_counter,
               prefix: str = "evaluation", out: Callable[[str], None] | None = None):
    self._label, self._total, self._clock, self._prefix = label, total, clock, prefix
    self._out = out or (lambda line: print(line, flush=True))
    self._start = clock()
    self._first = None  # (clock, items) when the first batch (with its compile) was done

  def eta_s(self, done: int) -> float | None:
    """Seconds left at the rate of the batches after the first; None before there are any."""
    if self._first is None or done <= self._first[1]:
      return None
    t_first, n_first = self._first
    rate = (done - n_first) / max(self._clock() - t_first, 1e-9)
    return (self._total - done) / rate

  def line(self, done: int) -> str:
    filled = round(_BAR * done / max(self._total, 1))
    eta = self.eta_s(done)
    eta_text = "" if done >= self._total else (
        " eta ?" if eta is None else f" eta {eta:.0f} s")
    return (f"{self._prefix}, {self._label} {done}/{self._total} "
            f"[{'#' * filled}{'.' * (_BAR - filled)}] {self._clock() - self._start:.0f} s"
            f"{eta_text}")

  def __call__(self, done: int) -> None:
    if self._first is None:
      self._first = (self._clock(), done)
    self._out(self.line(done))
