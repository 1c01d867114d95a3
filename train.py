r"""Trains JanusFlow. With no flags: the tiny model on built-in synthetic data, on CPU.

  python train.py                                     # configs/tiny.py, ./workdir
  python train.py --config configs/janusflow_1p3b.py --workdir /ckpt/run1 \
      --config.stage=2 --config.train.init_params_from=/ckpt/jf_1p3b_converted

Running it again with the same --workdir resumes from the latest checkpoint. Multi-host:
pass --coordinator_address/--num_processes/--process_id (or let JAX read them from the
cluster environment with --num_processes alone).
"""

import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from jf_jax.parallel import mesh as mesh_lib
from jf_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny.py"),
    "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Checkpoints, TensorBoard and outputs.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  mesh_lib.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  jax.config.update("jax_transfer_guard", "allow")
  config = _CONFIG.value
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; workdir "
        f"{os.path.abspath(_WORKDIR.value)}", flush=True)
  metrics = loop.train(config, _WORKDIR.value)
  print(f"done at step {metrics['final_step']}", flush=True)


if __name__ == "__main__":
  app.run(main)
