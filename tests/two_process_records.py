"""One of two processes (jax.distributed on 127.0.0.1, 4 CPU devices each) reading the
same record shards: builds its own rows of step 0 and 1, assembles the global arrays
with the batch sharding over all 8 devices, gathers them and writes what it saw.

  python tests/two_process_records.py COORDINATOR PROCESS_ID PATTERNS_JSON OUT_NPZ
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=wrong-import-position
from jax.experimental import multihost_utils  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from jf_jax.data import pipeline  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position
from jf_jax.parallel import mesh as mesh_lib  # pylint: disable=wrong-import-position
from jf_jax.train import step as step_lib  # pylint: disable=wrong-import-position
import records_config  # pylint: disable=wrong-import-position

STEPS = 2


def main(coordinator: str, process_id: int, patterns: dict, out: str) -> None:
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=2,
                             process_id=process_id)
  config = records_config.config(patterns, rows=8)
  config.mesh.update(dict(data=8, fsdp=1, tensor=1))
  source = pipeline.make_source(config, model_config.from_config_dict(config.model))
  sharding = step_lib.batch_sharding(mesh_lib.make_mesh(config.mesh))
  saved = {}
  for step in range(STEPS):
    local = next(source)
    assert all(v.shape[0] == (0 if k.startswith("edit_") else 4) for k, v in local.items()), (
      {k: v.shape for k, v in local.items()})  # no edit rows in this mixture
    placed = pipeline.global_batch(local, sharding)
    gathered = multihost_utils.process_allgather(placed, tiled=True)
    saved.update({f"{step}/local/{k}": v for k, v in local.items()})
    saved.update({f"{step}/global/{k}": np.asarray(v) for k, v in gathered.items()})
  source.close()
  saved["stats"] = np.asarray(json.dumps(source.stats()))
  np.savez(out, **saved)
  multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4])
