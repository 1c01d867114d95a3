"""Stopping a training run early on a signal: SIGTERM (preemption) and Ctrl-C (SIGINT).

While the loop runs, either signal only sets a flag (`StopRequest`). The loop finishes the
step in flight, saves a checkpoint of that step and raises `Stopped`; train.py prints one
line and exits with the signal's status (below), skipping the evaluation, so nothing is
written that looks final (no `main_job.json`). Running the same command again resumes.

A second Ctrl-C exits at once, without saving: the first one restores the operating
system's default action for SIGINT, which ends the process even while it waits inside
XLA or Orbax (a Python handler would only run when that call returns). Outside the loop
(model init, encoder pre-training, evaluation) Ctrl-C also has the default action: there
is nothing to save, and no traceback is printed (`ctrl_c_exits_quietly`).

train.py exits with 128 + the signal's number (what a shell reports for a process that
signal ended, and what schedulers such as Kubernetes or SLURM expect of a terminated job):
PREEMPTED (143) after SIGTERM, INTERRUPTED (130) after Ctrl-C, each with the checkpoint of
the step it stopped at saved. The README's "Exit statuses" table lists all of them.
"""

import os
import signal
import sys

PREEMPTED = 128 + signal.SIGTERM    # 143: SIGTERM; checkpoint saved at the step it stopped
INTERRUPTED = 128 + signal.SIGINT   # 130: Ctrl-C; checkpoint saved at the step it stopped

EXIT_STATUS = {signal.SIGTERM: PREEMPTED, signal.SIGINT: INTERRUPTED}


class Stopped(Exception):
  """Training stopped early on a signal, after saving the checkpoint of `step`."""

  def __init__(self, signum: int, step: int):
    self.signal_name = signal.Signals(signum).name
    self.step = step
    self.exit_status = EXIT_STATUS[signum]
    super().__init__(f"{self.signal_name}: stopped at step {step}, checkpoint saved; run "
                     "the same command again to resume (exit status "
                     f"{self.exit_status})")


def ctrl_c_exits_quietly() -> None:
  """Ctrl-C ends the process at once with no traceback (the default action of SIGINT)."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


class StopRequest:
  """While installed, SIGTERM and SIGINT set `signum` instead of ending the process.

  The loop checks `requested` once per step; `restore()` puts back the handlers found.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signum = None
    self._previous = {s: signal.signal(s, self._handle) for s in signals}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is None:
      self.signum = signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.SIG_DFL)  # the next Ctrl-C ends the process
      hint = "; Ctrl-C again to exit at once without saving"
    else:
      hint = ""
    # os.write, not print: a handler that prints while the loop prints can raise
    # "reentrant call" inside the buffered stream.
    os.write(sys.stderr.fileno(), (
        f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then "
        f"exiting{hint}\n").encode())

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
