"""Stops a run whose task silently drops out: the share of a task's rows that are skipped.

A bad example becomes a zero-weight padding row (`data/mixture.py`), so a task whose rows
are all bad (e.g. every understanding conversation longer than `batch.und_seq_len`)
trains nothing while the run looks healthy. The guard reads the loader's counters
(`data/loader.py` `stats()`) after every batch and, per window of
`config.train.skip_window` steps, the share of each task's rows that were skipped:

* in the run's first window (steps 0 to skip_window), a task all of whose rows were
  skipped stops the run;
* in any later window, a share above `config.train.max_skip_rate` (0.5) stops it;

with a `TaskDroppedError` naming the task, the reasons, the longest row seen and the key
to change (`--config.batch.und_seq_len`, at least the longest). Smaller shares are shown
per reason in the progress line (`log_rates`, one figure per logging interval).
"""

from typing import Any

from jf_jax.data.mixture import TASKS

SEQ_KEYS = {"und": "batch.und_seq_len", "text": "batch.text_seq_len",
            "gen": "batch.gen_prompt_len", "edit": "batch.edit_prompt_len"}
FILE_KEYS = {"und": "data.und_files", "text": "data.text_files", "gen": "data.gen_files",
             "edit": "data.edit_files"}


class TaskDroppedError(ValueError):
  """A task's rows were (nearly) all skipped; the message says why and what to change."""


def _window_counts(now: dict, base: dict) -> dict[str, tuple[int, dict[str, int]]]:
  """{task: (rows drawn, {reason: rows skipped})} between two `stats()` snapshots."""
  out = {}
  for task in TASKS:
    skipped = {}
    for key, n in now.get("draws", {}).items():
      name, reason = key.split("/", 1)
      if name == task and n - base.get("draws", {}).get(key, 0):
        skipped[reason] = n - base.get("draws", {}).get(key, 0)
    real = now.get("rows", {}).get(task, 0) - base.get("rows", {}).get(task, 0)
    out[task] = (real + sum(skipped.values()), skipped)
  return out


def _copy(stats: dict) -> dict:
  return {key: dict(value) for key, value in stats.items()}


class SkipGuard:
  """Checks the skip share of every task per window of steps; see the module docstring.

  Args:
    config: the run's config (`train.skip_window`, `train.max_skip_rate`, the batch's
      sequence lengths for the message).
    start_step: the step the run (or its resumption) starts at.
    stats: the loader's counters at `start_step` (`Loader.stats()`).
  """

  def __init__(self, config: Any, start_step: int, stats: dict):
    self._config = config
    self._window = int(config.train.get("skip_window", 20))
    self._max_rate = float(config.train.get("max_skip_rate", 0.5))
    self._window_start, self._window_base = start_step, _copy(stats)
    self._log_base = _copy(stats)

  def observe(self, step: int, stats: dict) -> None:
    """After the batch of step `step - 1` is handed out (`step` steps done); raises
    TaskDroppedError at the end of a window in which a task dropped out."""
    if step - self._window_start < self._window:
      return
    first_window = self._window_start == 0
    for task, (drawn, skipped) in _window_counts(stats, self._window_base).items():
      total = sum(skipped.values())
      if drawn and (total == drawn if first_window else total / drawn > self._max_rate):
        raise TaskDroppedError(self._message(task, drawn, skipped, stats, step))
    self._window_start, self._window_base = step, _copy(stats)

  def log_rates(self, stats: dict) -> dict[str, float]:
    """{'data/skip_rate/TASK/REASON': share of the task's rows} since the last call."""
    rates = {}
    for task, (drawn, skipped) in _window_counts(stats, self._log_base).items():
      for reason, n in sorted(skipped.items()):
        rates[f"data/skip_rate/{task}/{reason}"] = n / drawn
    self._log_base = _copy(stats)
    return rates

  def _message(self, task: str, drawn: int, skipped: dict[str, int], stats: dict,
               step: int) -> str:
    total = sum(skipped.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in
                        sorted(skipped.items(), key=lambda item: -item[1]))
    text = (f"task {task!r} dropped out: {total} of its {drawn} rows in steps "
            f"{self._window_start}-{step} were skipped ({reasons})")
    main_reason = max(skipped, key=skipped.get)
    longest = stats.get("longest", {}).get(f"{task}/{main_reason}")
    if main_reason == "too_long" and longest:
      key = SEQ_KEYS[task]
      now = self._config.batch.get(key.split(".")[1])
      return (f"{text}; the longest row seen is {longest} tokens, {key}={now}: raise "
              f"--config.{key} to at least {longest}")
    if main_reason == "wrong_size":
      return (f"{text}: images are not {self._config.data.image_size} px; set "
              "--config.data.resize_images=True to resize them")
    return (f"{text}; the warnings above show examples (check --config.{FILE_KEYS[task]}); "
            f"--config.train.max_skip_rate={self._max_rate} allows more")


def progress_text(metrics: dict[str, float]) -> str:
  """' | skipped und/too_long 12%, gen/wrong_size 3% (7 examples)' for the progress line
  ('' when nothing was skipped)."""
  rates = {k[len("data/skip_rate/"):]: v for k, v in metrics.items()
           if k.startswith("data/skip_rate/")}
  total = metrics.get("data/skipped_total", 0)
  if not rates and not total:
    return ""
  shares = ", ".join(f"{name} {rate:.0%}" for name, rate in rates.items())
  return f" | skipped {shares or 'none now'} ({total:.0f} examples)"
