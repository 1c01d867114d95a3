r"""Trains JanusFlow. With no flags: the default job on CPU, about 15 minutes:
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
"""

import time

_START = time.time()  # the job's wall clock includes imports, dataset build and compiles

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from jf_jax.data import plugins
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
    "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Checkpoints, TensorBoard and outputs.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _plugin(config, key: str, function: str):
  """`function` of the module `config.<key>` names (`data/plugins.py`), or None for ""."""
  name = config.get(key) or ""
  return getattr(plugins.import_named(name, f"config.{key}", function), function) if name else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  mesh_lib.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  config = _CONFIG.value
  # Both plug-ins resolve before training, so a misspelt name fails at once.
  initialise = _plugin(config, "init", "initialise")
  after_training = _plugin(config, "after_training", "run")
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; workdir "
        f"{os.path.abspath(_WORKDIR.value)}", flush=True)
  metrics = loop.train(config, _WORKDIR.value, initialise=initialise)
  train_seconds = time.time() - _START
  print(f"done at step {metrics['final_step']} ({train_seconds / 60:.1f} min)", flush=True)
  if after_training is not None and jax.process_index() == 0:
    after_training(config, _WORKDIR.value, metrics, start_time=_START, extra=dict(
        train_seconds=train_seconds, command=" ".join(["python"] + sys.argv)))


if __name__ == "__main__":
  app.run(main)
