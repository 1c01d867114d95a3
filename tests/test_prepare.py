"""`python -m jf_jax.prepare`: WebDataset tars and Parquet (written here, with a corrupt
image, a missing caption, an oversized image and a non-image member each) -> ArrayRecord
shards in a bucket on the storage emulator; the index counts every record; records
round-trip; a prepare killed with SIGKILL and rerun gives the uninterrupted run's shards;
bad input names the path in one line.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from array_record.python import array_record_module
from etils import epath
import pytest

from jf_jax.data import preprocess
from jf_jax.data import record_format
from jf_jax.prepare import examples
from jf_jax.prepare import run
import source_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # --image_size of the tests (short side of every stored image)
FLAGS = ["--image_size", str(SIZE), "--max_pixels", str(source_data.MAX_PIXELS),
         "--no_progress"]


def prepare_cli(*args, check=True):
  out = subprocess.run([sys.executable, "-m", "jf_jax.prepare", *args, *FLAGS], cwd=REPO,
                       env=dict(os.environ), capture_output=True, text=True, timeout=300)
  if check:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


def read_shard(path: str) -> list[bytes]:
  """Every record of one shard (copied from the bucket to read with the local reader)."""
  local = epath.Path(path)
  if str(path).startswith("gs://"):
    local = epath.Path(os.environ["PYTEST_TMP"]) / os.path.basename(path)
    epath.Path(path).copy(local, overwrite=True)
  reader = array_record_module.ArrayRecordReader(str(local))
  try:
    return [reader.read() for _ in range(reader.num_records())]
  finally:
    reader.close()


def shard_records(prefix: str) -> list[list[bytes]]:
  index = json.loads(epath.Path(prefix + ".json").read_text())
  folder = os.path.dirname(prefix)
  return [read_shard(f"{folder}/{s['path']}") for s in index["shards"]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, gcs):
  """The source data in the bucket: gs://bucket/src/{tars,parquet}/..."""
  root = tmp_path_factory.mktemp("sources")
  os.environ["PYTEST_TMP"] = str(tmp_path_factory.mktemp("copies"))
  tars = source_data.write_tars(str(root / "tars"), num_tars=3, per_tar=5)
  parquet = source_data.write_parquet(str(root / "parquet"), rows=6, row_group_size=4)
  for kind, data in (("tars", tars), ("parquet", parquet)):
    for path in data["paths"]:
      epath.Path(path).copy(epath.Path(f"gs://bucket/src/{kind}/{os.path.basename(path)}"))
  del gcs
  return {"tars": tars, "parquet": parquet, "root": root}


def check_round_trip(prefix: str, want: dict) -> None:
  """The index counts every good and bad record; every good one reads back with its
  caption and its image at short side SIZE (never enlarged), aspect kept."""
  index = json.loads(epath.Path(prefix + ".json").read_text())
  assert index["records"] == len(want["good"])
  assert {r: e["count"] for r, e in index["bad"].items()} == want["bad"]
  assert all(e["examples"] for e in index["bad"].values())
  assert index["settings"]["image_size"] == SIZE and index["versions"]["array_record"]
  records = [record_format.decode("gen", r) for shard in shard_records(prefix)
             for r in shard]
  assert [s["records"] for s in index["shards"]] == [len(s) for s in shard_records(prefix)]
  by_key = {r["key"]: r for r in records}
  assert sorted(by_key) == sorted(k for k, _, _ in want["good"])
  for key, caption, (w, h) in want["good"]:
    image = preprocess.load_image(by_key[key]["image"])
    short = min(w, h)
    want_short = min(short, SIZE)
    assert min(image.shape[:2]) == want_short, (key, image.shape, (w, h))
    assert abs(image.shape[1] / image.shape[0] - w / h) < 0.05, (key, image.shape, (w, h))
    assert by_key[key]["caption"] == caption


def test_webdataset_tars_from_bucket_to_bucket_with_workers(sources):
  out = prepare_cli("gen", "--input", "gs://bucket/src/tars/*.tar", "--output",
                    "gs://bucket/rec/wds", "--workers", "2")
  assert json.loads(out.stdout.splitlines()[-1])["records"] == 15
  check_round_trip("gs://bucket/rec/wds", sources["tars"])
  names = {p.name for p in epath.Path("gs://bucket/rec").iterdir()}
  assert "wds-00002-of-00003.array_record" in names and "wds.json" in names
  assert not [n for n in names if "partial" in n]


def test_parquet_from_bucket_in_process(sources, tmp_path, monkeypatch):
  # Shards bound for a bucket are staged in the temp folder: none may be left behind.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  settings = examples.Settings(task="gen", image_size=SIZE,
                               max_pixels=source_data.MAX_PIXELS, caption_column="text")
  index = run.prepare("gen", ["gs://bucket/src/parquet/train-*.parquet"],
                      "gs://bucket/rec/hf", settings, show_progress=False)
  assert len(index["shards"]) == 5  # 3 + 2 row groups
  check_round_trip("gs://bucket/rec/hf", sources["parquet"])
  assert not list(tmp_path.iterdir())


def test_sigkill_midway_then_rerun_equals_uninterrupted(sources, tmp_path):
  tars = sources["tars"]["paths"]
  settings = examples.Settings(task="gen", image_size=SIZE,
                               max_pixels=source_data.MAX_PIXELS)
  want = str(tmp_path / "want" / "wds")
  run.prepare("gen", tars, want, settings, show_progress=False)
  # Many shards of one tar each so the kill lands between shards of a slow enough run.
  many = [str(tmp_path / f"copy{i}.tar") for i in range(12)]
  for i, path in enumerate(many):
    epath.Path(tars[i % 3]).copy(epath.Path(path))
  run.prepare("gen", many, want + "_many", settings, show_progress=False)
  got = str(tmp_path / "got" / "wds_many")
  cmd = [sys.executable, "-m", "jf_jax.prepare", "gen", "--input", *many, "--output", got,
         "--workers", "1", *FLAGS]
  proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  markers = lambda: sorted((tmp_path / "got").glob("wds_many-*-of-*.json"))
  deadline = time.time() + 120
  while len(markers()) < 2 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker process
  proc.wait()
  done_at_kill = len(markers())
  assert 2 <= done_at_kill < 12, f"{done_at_kill} shards done when killed"
  assert not (tmp_path / "got" / "wds_many.json").exists()
  prepare_cli("gen", "--input", *many, "--output", got, "--workers", "1")
  assert shard_records(got) == shard_records(want + "_many")
  assert not [p for p in (tmp_path / "got").iterdir() if "partial" in p.name]


def test_bad_input_is_one_line_naming_the_path(sources, gcs):
  del sources, gcs
  for pattern in ("gs://bucket/src/nothing-*.tar", "gs://no-such-bucket/x/*.tar"):
    out = prepare_cli("gen", "--input", pattern, "--output", "gs://bucket/rec/x",
                      check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: --input: {pattern!r} matches no file"], out.stderr[-2000:]
