"""How every command-line program of the project starts, fails and exits.

train.py, sample.py, `python -m jf_jax.convert`, `python -m jf_jax.shapes` (absl
programs: `run_absl(main)`) and `python -m jf_jax.bench` (argparse: `ArgumentParser` and
`run_guarded`) share one behaviour:

* an ordinary user error (a missing file or checkpoint, a corrupt image, a bad setting:
  `USER_ERRORS`) prints one line, `PROGRAM: error: MESSAGE`, on stderr and exits with
  status `USER_ERROR_STATUS` (2, as argparse and most Unix tools do for usage errors);
* `--debug` or the environment variable JF_JAX_DEBUG=1 shows the traceback instead;
* a bad flag value prints one line and exits 2 (not the whole help);
* `--help` prints the help and exits 0 (absl's exits 1).

Anything else (a bug, an out-of-memory) keeps Python's full traceback.
"""

import argparse
import os
import sys
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags

USER_ERROR_STATUS = 2
DEBUG_ENV = "JF_JAX_DEBUG"
# The errors a user causes and fixes by changing a path, a file or a setting. Everything
# the project reports about user input is one of these (BadExample is a ValueError).
USER_ERRORS = (OSError, ValueError, app.UsageError)
_HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "-h")
_LIST_KEYS = "`python -m jf_jax.config_keys --config CONFIG_FILE` lists the keys"

_DEBUG = flags.DEFINE_bool("debug", False, f"Show the traceback of a user error (or set "
                           f"{DEBUG_ENV}=1).")


def debug_requested(argv: Sequence[str] = ()) -> bool:
  """Whether tracebacks are wanted: `--debug` in `argv` or JF_JAX_DEBUG=1."""
  return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def program_name(argv: Sequence[str]) -> str:
  """'train.py', 'sample.py' or 'python -m jf_jax.convert' from sys.argv."""
  if not argv:
    return "jf_jax"
  path = os.path.abspath(argv[0])
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not path.startswith(os.path.join(package_root, "jf_jax") + os.sep):
    return os.path.basename(path)
  module = os.path.splitext(os.path.relpath(path, package_root))[0].split(os.sep)
  return "python -m " + ".".join(module[:-1] if module[-1] == "__main__" else module)


def exit_with_message(program: str, message: str) -> NoReturn:
  """Prints `PROGRAM: error: MESSAGE` on stderr and exits with status 2."""
  sys.stderr.write(f"{program}: error: {message}\n")
  sys.stderr.flush()
  sys.exit(USER_ERROR_STATUS)


def _message(error: BaseException) -> str:
  """The error's own text, or its type if it has none. One line, unless the error lists
  several problems itself (a `validate.ConfigError`: one line per problem)."""
  if getattr(error, "problems", None):
    return str(error)
  return " ".join(str(error).split()) or type(error).__name__


def run_guarded(function: Callable[[], object], program: str, debug: bool) -> object:
  """Calls `function()`; a user error becomes one line and exit 2 unless `debug`."""
  try:
    return function()
  except USER_ERRORS as e:
    if debug:
      raise
    exit_with_message(program, _message(e))


def _parse_absl_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one-line errors and `--help` exiting 0."""
  program = program_name(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_message(program, _message(e))
  except SystemExit as e:  # absl's help flags exit 1 after printing the help
    if e.code == 1 and any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise
  except USER_ERRORS as e:  # e.g. a config file that does not exist or does not parse
    if debug_requested(argv):
      raise
    exit_with_message(program, _message(e))


def _raised_in_config_flags(tb) -> bool:
  """Whether a traceback passes through ml_collections' config flags (an override of a
  config key that does not exist raises AttributeError there)."""
  while tb is not None:
    if "config_flags" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def _excepthook(kind, error, tb) -> None:
  """For errors before `main` runs: ml_collections applies `--config.*` overrides of the
  default config file while the flag is defined, at the program's import."""
  config_key_error = (issubclass(kind, (AttributeError, KeyError))
                      and _raised_in_config_flags(tb))
  if debug_requested(sys.argv) or not (issubclass(kind, USER_ERRORS) or config_key_error):
    sys.__excepthook__(kind, error, tb)
    return
  message = _message(error)
  if config_key_error:
    message = (f"a --config.* flag names a key the config does not have ({message}); "
               f"{_LIST_KEYS}")
  sys.stdout.flush()
  sys.stderr.write(f"{program_name(sys.argv)}: error: {message}\n")
  sys.stderr.flush()
  os._exit(USER_ERROR_STATUS)  # pylint: disable=protected-access  (SystemExit is ignored here)


sys.excepthook = _excepthook


def _load_config_flags() -> None:
  """Loads every `--config` file and applies its `--config.*` overrides now (ml_collections
  does it lazily, at the first `.value`, possibly after slow work), so that a missing
  config file or an override of no config key fails before anything else."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if type(flag).__name__ == "_ConfigFlag":  # config_flags.DEFINE_config_file's
      try:
        if flag.value is not None:  # a config that failed to load raises only when read
          getattr(flag.value, "keys")
      except (AttributeError, KeyError) as e:
        raise ValueError(f"a --{name}.* flag names a key the config does not have "
                         f"({_message(e)}); {_LIST_KEYS}") from e


def run_absl(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)` with the shared error handling (module docstring)."""
  def guarded(argv):
    def load_and_run():
      _load_config_flags()
      return main(argv)
    return run_guarded(load_and_run, program_name(argv), _DEBUG.value or debug_requested())
  app.run(guarded, flags_parser=_parse_absl_flags)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a one-line error (no usage block) and a `--debug` flag."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument("--debug", action="store_true",
                      help=f"show the traceback of a user error (or {DEBUG_ENV}=1)")

  def error(self, message: str) -> NoReturn:
    exit_with_message(self.prog, message)
