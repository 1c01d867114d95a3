r"""Trains JanusFlow. With no flags: the default job on CPU, about 14 minutes (13.6 measured):
the tiny model on the built-in shapes world (configs/default.py), then a PNG grid of
samples for test captions, a few test questions with the model's answers, and both scores
(workdir/main_job.json; docs/benchmarks.md, docs/experiments.md). The config names the
plug-ins (`config.init`: a fresh run's first state; `config.after_training`: the job run
when training ends); this file knows no project.

  python train.py                                     # configs/default.py, ./workdir
  python train.py --config configs/tiny.py            # synthetic data, no evaluation
  python train.py --config configs/janusflow_1p3b.py --workdir /ckpt/run1 \
      --config.stage=2 --config.train.init_params_from=/ckpt/jf_1p3b_converted

Running it again with the same --workdir resumes from the latest checkpoint. Multi-host:
pass --coordinator_address/--num_processes/--process_id (or let JAX read them from the
cluster environment with --num_processes alone).

One run per workdir (WORKDIR/lock.json). SIGTERM or Ctrl-C saves a checkpoint and exits
with status 143 or 130, without evaluating; a second Ctrl-C exits at once. The console
shows library logging from --log_level up (default warning); WORKDIR/log.txt holds all of
it. Exit statuses: README.md, "Stopping, resuming, one run per workdir, logs".
"""

import time

_START = time.time()  # the job's wall clock includes imports, dataset build and compiles

# pylint: disable=g-import-not-at-top,wrong-import-position
import contextlib
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from jf_jax import entry_point
from jf_jax.data import plugins
from jf_jax.data import record_source
from jf_jax.data import storage
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.train import logs
from jf_jax.train import loop
from jf_jax.train import preemption
from jf_jax.train import resume_check
from jf_jax.train import workdir_lock
from jf_jax.train import validate

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
    "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Checkpoints, TensorBoard and outputs.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_LOG_LEVEL = flags.DEFINE_enum("log_level", "warning", logs.LEVELS,
                               "Library logging shown on the console (WORKDIR/log.txt "
                               "holds INFO and up).")


def _plugin(config, key: str, function: str):
  """`function` of the module `config.<key>` names (`data/plugins.py`), or None for ""."""
  name = config.get(key) or ""
  return getattr(plugins.import_named(name, f"config.{key}", function), function) if name else None


def _workdir_lock(config, workdir: str):
  """Process 0 holds the workdir's lock for the whole job (the others write only what it
  coordinates)."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return workdir_lock.hold(workdir, config.train.lock_stale_after_s,
                           config.train.lock_heartbeat_s)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_console(_LOG_LEVEL.value)
  preemption.ctrl_c_exits_quietly()  # until the loop: nothing to save, no traceback
  validate.check_config(_CONFIG.value)  # every bad setting or path, before anything is built
  mesh_lib.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  config = _CONFIG.value
  # Both plug-ins resolve before training, so a misspelt name fails at once.
  initialise = _plugin(config, "init", "initialise")
  after_training = _plugin(config, "after_training", "run")
  try:
    with _workdir_lock(config, _WORKDIR.value):
      _train_and_evaluate(config, initialise, after_training)
  except (workdir_lock.WorkdirInUse, resume_check.ConfigMismatch) as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(2)
  except preemption.Stopped as stop:
    print(stop, flush=True)
    sys.exit(stop.exit_status)


def _train_and_evaluate(config, initialise, after_training):
  if jax.process_index() == 0:
    logs.to_file(_WORKDIR.value)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; workdir "
        f"{storage.absolute(_WORKDIR.value)}", flush=True)
  try:
    metrics = loop.train(config, _WORKDIR.value, initialise=initialise)
  except (FileNotFoundError, record_source.ShardError) as e:
    sys.exit(f"error: {e}")  # a wrong path or shard: one line naming it, no traceback
  train_seconds = time.time() - _START
  print(f"done at step {metrics['final_step']} ({train_seconds / 60:.1f} min)", flush=True)
  if after_training is not None and jax.process_index() == 0:
    after_training(config, _WORKDIR.value, metrics, start_time=_START, extra=dict(
        train_seconds=train_seconds, command=" ".join(["python"] + sys.argv)))


if __name__ == "__main__":
  entry_point.run_absl(main)
