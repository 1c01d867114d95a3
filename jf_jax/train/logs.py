"""A quiet console and the full log in `WORKDIR/log.txt`.

Libraries log through Python's `logging` (absl's handler prints each record to stderr):
Orbax writes ~70 INFO lines per checkpoint save, tfds its dataset info (and a WARNING
for every custom config, `ROUTINE_WARNINGS`), JAX the backends it could not start ("Unable
to initialize backend 'tpu'" on a CPU machine). The project's own lines are printed
(progress, scores). So:

  logs.quiet_console("warning")    # at start-up: the console shows WARNING and above
  logs.to_file(workdir)            # once the workdir is known: everything to log.txt

`quiet_console(level)` sets the console's threshold (train.py's `--log_level`; an explicit
absl `--verbosity` asks for its level instead) while records from INFO up are still made
and kept in memory; `to_file` writes them and every later one to `WORKDIR/log.txt`, and
copies the console's own stdout and stderr writes there too, so the file holds what the
console showed plus the library lines it did not. C++ logging of XLA (written to the file
descriptor, not through Python) stays on the console; `TF_CPP_MIN_LOG_LEVEL` controls it.
"""

import logging
import logging.handlers
import os
import sys
from typing import TextIO

from absl import flags
from absl import logging as absl_logging

LOG_NAME = "log.txt"
LEVELS = ("debug", "info", "warning", "error")
# Records buffered until the log file is opened (start-up: a few hundred at INFO).
_BUFFER_RECORDS = 100_000


# Library records at WARNING that are routine, not a problem: log.txt only, whatever the
# console level. (file path fragment, message prefix).
ROUTINE_WARNINGS = (
    ("tensorflow_datasets", "Using custom data configuration"),  # every shapes-world load
)

_buffer: logging.handlers.MemoryHandler | None = None


def _not_routine(record: logging.LogRecord) -> bool:
  """The console's filter: False for `ROUTINE_WARNINGS` (below ERROR)."""
  if record.levelno >= logging.ERROR:
    return True
  message = str(record.msg)
  return not any(path in record.pathname and message.startswith(prefix)
                 for path, prefix in ROUTINE_WARNINGS)


def _console_level(level: str) -> int:
  if level not in LEVELS:
    raise ValueError(f"--log_level={level!r} must be one of {', '.join(LEVELS)}")
  chosen = getattr(logging, level.upper())
  if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
    chosen = min(chosen, absl_logging.get_absl_logger().getEffectiveLevel())
  return chosen


def quiet_console(level: str = "warning") -> None:
  """Console threshold `level`; library records from INFO up are kept for the log file."""
  global _buffer
  console = _console_level(level)
  file_level = min(console, logging.INFO)
  absl_logging.set_verbosity(absl_logging.converter.standard_to_absl(file_level))
  console_handler = absl_logging.get_absl_handler()
  console_handler.setLevel(console)
  if console > logging.INFO and _not_routine not in console_handler.filters:
    console_handler.addFilter(_not_routine)
  logging.getLogger().setLevel(file_level)
  logging.captureWarnings(True)  # Python warnings become records: console and file
  if _buffer is None:
    _buffer = logging.handlers.MemoryHandler(_BUFFER_RECORDS, flushLevel=logging.CRITICAL + 1)
    _buffer.setLevel(file_level)
    logging.getLogger().addHandler(_buffer)


class _Tee:
  """A text stream that also writes to the log file (the console's own lines)."""

  def __init__(self, stream: TextIO, log: TextIO):
    self._stream, self._log = stream, log

  def write(self, text: str) -> int:
    self._log.write(text)
    return self._stream.write(text)

  def flush(self) -> None:
    self._stream.flush()
    self._log.flush()

  def __getattr__(self, name):  # fileno, isatty, encoding, ...
    return getattr(self._stream, name)


def to_file(workdir: str) -> str:
  """From now on (and the records kept since `quiet_console`) everything to
  `WORKDIR/log.txt`, appended: a resumed run adds to its log. Returns the path.

  A `gs://` workdir gets no log file (an object cannot be appended to); the console
  still shows what `quiet_console` lets through.
  """
  global _buffer
  if workdir.startswith("gs://"):
    return ""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(os.path.abspath(workdir), LOG_NAME)
  log = open(path, "a", buffering=1, encoding="utf-8")  # pylint: disable=consider-using-with
  handler = logging.StreamHandler(log)
  handler.setFormatter(absl_logging.PythonFormatter())  # absl's I1203 ... prefix
  handler.setLevel(_buffer.level if _buffer is not None else logging.INFO)
  if _buffer is not None:
    _buffer.setTarget(handler)
    _buffer.flush()
    logging.getLogger().removeHandler(_buffer)
    _buffer = None
  logging.getLogger().addHandler(handler)
  # The absl handler keeps the stderr it was made with, so console records do not reach
  # the tee below: each record is written to the file once, by `handler`.
  sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
  return path
