"""`config.data.source = "records"`: training reads prepared gen, und and text shards from
gs:// on the storage emulator (`conftest.gcs`), through the same row builders as files;
`python train.py` stopped and resumed (its workdir on gs:// too) equals the uninterrupted
run bit for bit (0 and 2 loader workers); bad record paths fail at startup in one line naming the path, and
nothing already written is lost.

The loopback two-process test (`two_process_records.py`, jax.distributed on 127.0.0.1):
both processes read the same gs:// shards, each builds only its rows, and the global
arrays they assemble equal the one-process batch.
"""

import json
import os
import subprocess
import sys

from etils import epath
import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax.data import pipeline
from jf_jax.data import record_source
from jf_jax.models import config as model_config
import gcs_emulator
import records_config
import source_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def patterns(tmp_path_factory, gcs):
  del gcs
  return source_data.write_training_records(str(tmp_path_factory.mktemp("src")),
                                            "gs://bucket/train")


def record_flags(patterns: dict) -> list[str]:
  return ["--config.data.source=records", "--config.data.resize_images=True",
          *[f"--config.data.{task}_records=('{p}',)" for task, p in patterns.items()]]


def train_cmd(workdir, patterns, steps: int, workers: int) -> list[str]:
  return [sys.executable, "train.py", f"--workdir={workdir}",
          "--config=configs/tiny_shapes.py", *record_flags(patterns),
          "--config.batch.und_rows=2", "--config.batch.text_rows=2",
          "--config.batch.gen_rows=4", "--config.train.log_every=1",
          "--config.train.checkpoint_every=2", f"--config.train.num_steps={steps}",
          f"--config.data.workers={workers}"]


def run_train(cmd, check=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  if check:
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out


def losses(workdir) -> dict[int, float]:
  """{step: loss} of WORKDIR/metrics.jsonl (local or gs://); a step logged twice must
  agree."""
  out = {}
  for line in (epath.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    assert out.setdefault(row["step"], row["loss"]) == row["loss"], row
  return out


def checkpoints(workdir) -> list[str]:
  return sorted(p.name for p in (epath.Path(workdir) / "checkpoints").iterdir())


def test_rows_come_from_the_records_with_their_counts(patterns):
  config = records_config.config(patterns)
  config.batch.update(dict(und_rows=2, text_rows=2, gen_rows=4))
  source = pipeline.make_source(config, model_config.from_config_dict(config.model))
  batch = next(source)
  assert batch["und_images"].shape == (2, 1, 32, 32, 3)
  assert batch["gen_pixels"].shape == (4, 32, 32, 3)
  assert batch["text_weights"].sum() > 0 and batch["und_weights"].sum() > 0
  assert source.stats()["rows"] == {"und": 2, "text": 2, "gen": 4, "edit": 0}
  source.close()


def test_train_py_from_bucket_resumes_bit_for_bit(patterns, tmp_path):
  """Records from gs://; the resumed run's workdir in the bucket too (Orbax through
  tensorstore's GCS driver); 2 workers uninterrupted, 0 stopped at step 2 and resumed."""
  whole, parts = str(tmp_path / "whole"), "gs://bucket/runs/parts"
  run_train(train_cmd(whole, patterns, 4, workers=2))
  first = run_train(train_cmd(parts, patterns, 2, workers=0))
  assert "step 2/2" in first.stdout
  second = run_train(train_cmd(parts, patterns, 4, workers=0))
  assert "resumed from gs://bucket/runs/parts at step 2" in second.stdout
  want = losses(whole)
  assert sorted(want) == [1, 2, 3, 4]
  assert losses(parts) == want  # bit for bit, across worker counts and storage
  assert "2" in checkpoints(parts) and "4" in checkpoints(parts)
  # Bad input at startup of an existing run: one line naming the pattern, the
  # checkpoints kept.
  saved = checkpoints(parts)
  bad = {**patterns, "gen": "gs://bucket/train/nothing-*.array_record"}
  out = run_train(train_cmd(parts, bad, 6, workers=0), check=False)
  assert out.returncode != 0
  # train.py's config check (train/validate.py) lists it before anything is built.
  assert ("config.data.gen_records[0]: 'gs://bucket/train/nothing-*.array_record' "
          "matches no file") in [line.strip() for line in out.stderr.splitlines()], (
              out.stderr[-2000:])
  assert checkpoints(parts) == saved


def test_bad_record_paths_name_the_path(patterns, tmp_path):
  data = config_defaults.data_defaults()
  data.source = "records"
  for missing in ("gs://bucket/train/none-*.array_record",
                  "gs://no-such-bucket/train/gen-*.array_record"):
    data.gen_records = (missing,)
    with pytest.raises(FileNotFoundError, match=r"config.data.gen_records: .*matches no"):
      record_source.record_tasks(data)
  # A truncated shard (an interrupted copy) in the bucket: a startup error naming it.
  shard = sorted(epath.Path("gs://bucket/train").glob("gen-*.array_record"))[0]
  truncated = "gs://bucket/cut/gen-00000-of-00001.array_record"
  epath.Path(truncated).write_bytes(shard.read_bytes()[:-100])
  data.gen_records = ("gs://bucket/cut/gen-*.array_record",)
  with pytest.raises(record_source.ShardError, match=truncated):
    record_source.record_tasks(data)
  assert epath.Path(truncated).exists()  # nothing is deleted
  del tmp_path


def test_two_processes_read_their_rows_and_build_the_global_batch(patterns, tmp_path):
  address = f"127.0.0.1:{gcs_emulator.free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "tests/two_process_records.py", address, str(i),
       json.dumps(patterns), outs[i]], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  got = [np.load(o) for o in outs]
  config = records_config.config(patterns, rows=8)
  whole = pipeline.make_source(config, model_config.from_config_dict(config.model),
                               process_index=0, process_count=1)
  for step in range(2):
    want = next(whole)
    for key, rows in want.items():
      for p in range(2):  # each process built its own block of rows ...
        np.testing.assert_array_equal(got[p][f"{step}/local/{key}"], rows[4 * p:4 * p + 4],
                                      err_msg=f"process {p} step {step} {key}")
        # ... and the global arrays are the one-process batch
        np.testing.assert_array_equal(got[p][f"{step}/global/{key}"], rows, err_msg=key)
  whole.close()
  # Each process counted its own real rows: together the one-process count.
  stats = [json.loads(str(g["stats"])) for g in got]
  assert {t: stats[0]["rows"][t] + stats[1]["rows"][t] for t in ("und", "text", "gen", "edit")
          } == whole.stats()["rows"]
