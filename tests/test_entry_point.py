"""Every command-line program: a user error is one line on stderr and exit status 2,
--debug / JF_JAX_DEBUG=1 show the traceback, --help exits 0, a bad flag value is one line.

Runs the programs as subprocesses, as a user would; all of them at once (each spends its
few seconds importing JAX).
"""

import os
import subprocess
import sys

import pytest

from jf_jax import entry_point

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/jf_jax_ckpt"

# name -> (argv after `python`, extra environment, what the run must show)
CASES = {
    "sample_missing_checkpoint": (["sample.py", f"--checkpoint={MISSING}", "--prompt=a"], {}),
    "sample_debug": (["sample.py", f"--checkpoint={MISSING}", "--prompt=a", "--debug"], {}),
    "sample_debug_env": (["sample.py", f"--checkpoint={MISSING}", "--prompt=a"],
                         {entry_point.DEBUG_ENV: "1"}),
    "sample_bad_flag_value": (["sample.py", f"--checkpoint={MISSING}", "--num=four"], {}),
    "sample_help": (["sample.py", "--help"], {}),
    "convert_missing_source": (["-m", "jf_jax.convert", f"--src={MISSING}",
                                "--dst=/tmp/jf_jax_never_written"], {}),
    "bench_missing_checkpoint": (["-m", "jf_jax.bench", "vqa", f"--checkpoint={MISSING}",
                                  "--out=/tmp/jf_jax_never", "--questions=q.jsonl",
                                  "--image_root=."], {}),
    "bench_bad_flag_value": (["-m", "jf_jax.bench", "geneval", f"--checkpoint={MISSING}",
                              "--out=/tmp/o", "--metadata=m", "--steps=ten"], {}),
    "train_unknown_config_key": (["train.py", "--config=configs/tiny.py",
                                  "--config.train.num_stepz=3"], {}),
    "shapes_missing_checkpoint": (["-m", "jf_jax.shapes", f"--checkpoint={MISSING}"], {}),
}


@pytest.fixture(scope="module")
def runs():
  """name -> (returncode, stdout, stderr) of every case, run concurrently."""
  procs = {}
  for name, (argv, extra) in CASES.items():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **extra)
    env.pop("XLA_FLAGS", None)
    if name != "sample_debug_env":
      env.pop(entry_point.DEBUG_ENV, None)
    procs[name] = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out = {}
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    out[name] = (proc.returncode, stdout, stderr)
  return out


def _one_line_error(run, program: str, *words: str) -> None:
  code, _, stderr = run
  lines = stderr.strip().splitlines()
  assert code == entry_point.USER_ERROR_STATUS, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), stderr[-2000:]
  for word in words:
    assert word in lines[0], lines[0]


def test_user_errors_are_one_line_and_exit_2(runs):
  _one_line_error(runs["sample_missing_checkpoint"], "sample.py", MISSING)
  _one_line_error(runs["convert_missing_source"], "python -m jf_jax.convert", MISSING)
  _one_line_error(runs["bench_missing_checkpoint"], "python -m jf_jax.bench", MISSING)
  _one_line_error(runs["shapes_missing_checkpoint"], "python -m jf_jax.shapes", MISSING)
  _one_line_error(runs["train_unknown_config_key"], "train.py", "num_stepz",
                  "jf_jax.config_keys")


def test_bad_flag_values_are_one_line(runs):
  _one_line_error(runs["sample_bad_flag_value"], "sample.py", "--num=four")
  _one_line_error(runs["bench_bad_flag_value"], "python -m jf_jax.bench geneval",
                  "--steps", "ten")


def test_debug_shows_the_traceback(runs):
  for name in ("sample_debug", "sample_debug_env"):
    code, _, stderr = runs[name]
    assert code != 0 and "Traceback" in stderr and "FileNotFoundError" in stderr, name


def test_help_exits_0(runs):
  code, stdout, _ = runs["sample_help"]
  assert code == 0 and "--checkpoint" in stdout


def test_program_names():
  root = os.path.dirname(os.path.dirname(os.path.abspath(entry_point.__file__)))
  assert entry_point.program_name([os.path.join(root, "train.py")]) == "train.py"
  assert entry_point.program_name([os.path.join(root, "jf_jax", "convert.py")]) == (
      "python -m jf_jax.convert")
  assert entry_point.program_name([os.path.join(root, "jf_jax", "bench", "__main__.py")]) == (
      "python -m jf_jax.bench")


def test_config_keys_lists_every_leaf():
  """`python -m jf_jax.config_keys` prints these: every key a --config.KEY flag can set."""
  import config_files  # pylint: disable=g-import-not-at-top
  from jf_jax import config_keys  # pylint: disable=g-import-not-at-top
  config = config_files.load("default")
  items = dict(config_keys.flat_items(config))
  assert items["config.batch.switch.step"] == config.batch.switch.step
  assert items["config.model.llm.num_layers"] == config.model.llm.num_layers
  assert not any(hasattr(v, "items") for v in items.values())
