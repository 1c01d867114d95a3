"""The training loop's meter: throughput, ETA, data wait and non-finite steps.

One object instead of loose counters in the loop (as big_vision's `chrono`). Per logging
window it measures tokens/s and images/s, the wall time the loop waited for its input
(getting the next batch and placing it on the devices) per step and as a fraction of the
window's time; over the whole run, the ETA and the non-finite steps.

The ETA leaves out compiling: a step that compiles (the first, and the first after the
mixture switch) and the `warmup_steps` after it are not timed, and each compile starts
the timing again (the new shapes have their own step time). The time between two
`step_done` calls is one step's: the loop reads each step's non-finite flag one step
later, so the host never runs more than one step ahead.

  meter = Meter(num_steps, max_nonfinite_in_row=10)
  for step in ...:
    with meter.data_wait():
      batch = ...                           # next(source), device_put
    state, metrics = step_fn(state, batch)
    meter.step_done(tokens, images, recompiled)  # global counts; did this step compile?
    meter.nonfinite(metrics["nonfinite"], step + 1)
    if log_now:
      scalars = meter.summary(step + 1)     # closes the window
"""

import contextlib
import time
from typing import Any, Callable, Iterator

from absl import logging
import jax


class Meter:
  """Counts steps, tokens, images and data-wait time; `summary` reads and resets them.

  Args:
    total_steps: the step the run ends at (for the ETA).
    max_nonfinite_in_row: `nonfinite` raises once this many steps in a row had a
      non-finite loss or gradient.
    clock: seconds as a float (`time.perf_counter`; tests pass a fake one).
    warmup_steps: steps after a compiling step left out of the ETA's timing.
  """

  def __init__(self, total_steps: int, max_nonfinite_in_row: int,
               clock: Callable[[], float] = time.perf_counter, warmup_steps: int = 2):
    self._clock = clock
    self._total = total_steps
    self._max_in_row = max_nonfinite_in_row
    self._warmup_steps = warmup_steps
    self._run_start = clock()
    self._last_step_end = self._run_start
    self._steps_done = 0
    # Steps timed for the ETA since the last compile (and their seconds); untimed left.
    self._timed_steps, self._timed_s, self._untimed_left = 0, 0.0, 0
    self.nonfinite_total, self._nonfinite_in_row = 0, 0
    self._pending = None  # (flag, step) of the last dispatched step, read one step later
    self._reset_window()

  def _reset_window(self) -> None:
    self._window_start = self._clock()
    self._window_steps, self._window_tokens, self._window_images = 0, 0, 0
    self._window_wait = 0.0

  @contextlib.contextmanager
  def data_wait(self) -> Iterator[None]:
    """Times the enclosed block as waiting for input."""
    start = self._clock()
    try:
      yield
    finally:
      self._window_wait += self._clock() - start

  def step_done(self, tokens: int, images: int, recompiled: bool = False) -> None:
    """One step dispatched, its batch holding `tokens` LLM tokens and `images` images
    (global counts: all processes); `recompiled`: its call compiled the step."""
    now = self._clock()
    step_s, self._last_step_end = now - self._last_step_end, now
    if recompiled:
      self._timed_steps, self._timed_s = 0, 0.0
      self._untimed_left = 1 + self._warmup_steps
    if self._untimed_left:
      self._untimed_left -= 1
    else:
      self._timed_steps += 1
      self._timed_s += step_s
    self._steps_done += 1
    self._window_steps += 1
    self._window_tokens += tokens
    self._window_images += images

  def nonfinite(self, flag: Any, step: int) -> None:
    """Queues `step`'s non-finite flag (a device scalar) and counts the one queued before,
    so the host never waits for the step it has just dispatched."""
    self._count_pending()
    self._pending = (flag, step)

  def _count_pending(self) -> None:
    if self._pending is None:
      return
    flag, step = self._pending
    self._pending = None
    bad = int(jax.device_get(flag))
    self._nonfinite_in_row = self._nonfinite_in_row + 1 if bad else 0
    self.nonfinite_total += bad
    if bad:
      logging.warning("step %d: non-finite loss or gradient; state left unchanged", step)
    if self._nonfinite_in_row >= self._max_in_row:
      raise FloatingPointError(
          f"{self._nonfinite_in_row} steps in a row had a non-finite loss or gradient "
          f"(last at step {step}); each left the state unchanged. Lower "
          "config.optim.learning_rate or raise config.train.max_nonfinite_in_row.")

  def eta_s(self, step: int) -> float:
    """Seconds from `step` to `total_steps` at the mean time of the steps timed since the
    last compile (before there are any: the mean since the meter started, compiles
    included, an overestimate)."""
    if self._timed_steps:
      return (self._total - step) * self._timed_s / self._timed_steps
    rate = self._steps_done / max(self._clock() - self._run_start, 1e-9)
    return (self._total - step) / max(rate, 1e-9)

  def summary(self, step: int) -> dict[str, float]:
    """The window's figures (and the non-finite count so far); starts a new window.

    Keys: tokens_per_s, images_per_s, step_ms, data_wait_ms_per_step,
    data_wait_fraction (of the window's wall time), eta_s, nonfinite_total.
    """
    self._count_pending()
    elapsed = max(self._clock() - self._window_start, 1e-9)
    steps = max(self._window_steps, 1)
    out = dict(tokens_per_s=self._window_tokens / elapsed,
               images_per_s=self._window_images / elapsed,
               step_ms=1e3 * elapsed / steps,
               data_wait_ms_per_step=1e3 * self._window_wait / steps,
               data_wait_fraction=self._window_wait / elapsed,
               eta_s=self.eta_s(step),
               nonfinite_total=self.nonfinite_total)
    self._reset_window()
    return out
