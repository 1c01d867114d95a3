"""The prepared-records targets of `input_pipeline.py` (`--sources records,startup,
emulator,prepare`); docs/benchmarks.md has the figures.

* records:  loader images/s on prepared 384-px shards vs the per-file loader on the
            original mixed-size JPEGs (512-1600 px), both in-process (one core).
* startup:  a fresh process: make_source -> first batch, and its peak resident memory,
            for N and 10 N records (cheap records: startup reads shard footers, never
            records), and the 10M figures the difference implies.
* emulator: the same loader reading the shards from a GCS emulator (its own process, on
            127.0.0.1) vs local disk.
* prepare:  `python -m jf_jax.prepare` records/s with 1 and 2 workers (WebDataset tars of
            the original JPEGs).
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from jf_jax.prepare import examples  # pylint: disable=wrong-import-position
from jf_jax.prepare import run as prepare_run  # pylint: disable=wrong-import-position

_CAPTIONS = ("a red circle", "a blue square to the left of a green triangle",
             "two shapes", "a yellow circle above a red square")


def photo_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """uint8 [h, w, 3]: a smooth colour field with noise, so the JPEG compresses and decodes
  like a photograph rather than like noise."""
  coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
  field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
  return np.clip(field + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def write_originals(folder: str, count: int, seed: int = 0) -> dict:
  """`count` photo-like JPEGs with sides 512-1600 px, a caption file each, a LLaVA JSON
  over them, and the same pairs as WebDataset tars of 16."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  conversations, tars = [], []
  for i in range(count):
    h, w = (int(v) for v in rng.integers(512, 1601, size=2))
    pixels = photo_like(rng, h, w)
    name = f"img{i:04d}"
    Image.fromarray(pixels).save(os.path.join(folder, name + ".jpg"), quality=90)
    with open(os.path.join(folder, name + ".txt"), "w", encoding="utf-8") as f:
      f.write(_CAPTIONS[i % len(_CAPTIONS)])
    conversations.append({"image": name + ".jpg", "conversations": [
        {"from": "human", "value": "<image>\nhow many shapes are there?"},
        {"from": "gpt", "value": "two"}]})
  with open(os.path.join(folder, "llava.json"), "w", encoding="utf-8") as f:
    json.dump(conversations, f)
  tar_dir = os.path.join(folder, "tars")
  os.makedirs(tar_dir, exist_ok=True)
  for start in range(0, count, 16):
    path = os.path.join(tar_dir, f"{start // 16:05d}.tar")
    with tarfile.open(path, "w") as tar:
      for i in range(start, min(start + 16, count)):
        for ext in ("jpg", "txt"):
          tar.add(os.path.join(folder, f"img{i:04d}.{ext}"), f"img{i:04d}.{ext}")
    tars.append(path)
  return {"folder": folder, "llava": os.path.join(folder, "llava.json"), "tars": tars}


def prepare_shards(originals: dict, prefix: str, image_size: int) -> dict:
  """gen + und shards of the originals at `image_size`: {task: shard pattern}."""
  for task, inputs in (("gen", [originals["folder"]]), ("und", [originals["llava"]])):
    prepare_run.prepare(task, inputs, f"{prefix}-{task}",
                        examples.Settings(task=task, image_size=image_size),
                        num_shards=4, show_progress=False)
  return {t: f"{prefix}-{t}-*.array_record" for t in ("gen", "und")}


def records_config(config, patterns: dict):
  config = config.copy_and_resolve_references()
  config.data.update(dict(source="records", gen_files=(), und_files=(), text_files=(),
                          gen_records=(patterns["gen"],), und_records=(patterns["und"],)))
  return config


def prepare_speed(originals: dict, out: str, workers: int, image_size: int) -> float:
  """records/s of the prepare CLI (a fresh run) over the tars."""
  prefix = os.path.join(out, f"w{workers}", "gen")
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "jf_jax.prepare", "gen", "--input",
                  *originals["tars"], "--output", prefix, "--workers", str(workers),
                  "--image_size", str(image_size), "--no_progress"], cwd=REPO, check=True,
                 capture_output=True)
  elapsed = time.perf_counter() - start
  with open(prefix + ".json", encoding="utf-8") as f:
    return json.load(f)["records"] / elapsed


# -- startup at scale --------------------------------------------------------------------

def write_many(prefix: str, records: int, shards: int) -> str:
  """`records` gen records (one small JPEG + a caption each) in `shards` shards."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from jf_jax.data import record_format  # pylint: disable=g-import-not-at-top
  image = _small_jpeg()
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  per = records // shards
  for s in range(shards):
    writer = array_record_module.ArrayRecordWriter(
        f"{prefix}-{s:05d}-of-{shards:05d}.array_record", "group_size:1")
    for i in range(per):
      writer.write(record_format.encode("gen", {
          "key": f"{s}/{i}", "image": image, "caption": _CAPTIONS[i % 4]}))
    writer.close()
  return f"{prefix}-*.array_record"


def _small_jpeg() -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  out = io.BytesIO()
  Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(out, format="JPEG")
  return out.getvalue()


_STARTUP_CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from jf_jax.data import pipeline
from jf_jax.models import config as model_config
import records_config

def rss_mib():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

config = records_config.config({{"gen": {pattern!r}}})
config.batch.update(dict(und_rows=0, text_rows=0, gen_rows=16))
cfg = model_config.from_config_dict(config.model)
before = rss_mib()
start = time.perf_counter()
source = pipeline.make_source(config, cfg, process_index=0, process_count=1)
next(source)
print(json.dumps(dict(seconds=time.perf_counter() - start, rss_mib=rss_mib(),
                      before_mib=before)))
"""


def startup(pattern: str, env: dict | None = None) -> dict:
  """{seconds to the first batch, resident MiB then and before make_source} of a fresh
  process (imports done before the clock starts)."""
  code = _STARTUP_CHILD.format(repo=REPO, tests=os.path.join(REPO, "tests"),
                               pattern=pattern)
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                       capture_output=True, text=True, env=env or dict(os.environ))
  return json.loads(out.stdout.strip().splitlines()[-1])


# -- emulator ----------------------------------------------------------------------------

_EMULATOR_CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
import gcs_emulator
emulator = gcs_emulator.Emulator()
print(emulator.endpoint, flush=True)
time.sleep(1e9)
"""


def start_emulator() -> tuple[subprocess.Popen, dict]:
  """A GCS emulator in its own process (so it does not share the loader's GIL)."""
  proc = subprocess.Popen([sys.executable, "-c", _EMULATOR_CHILD.format(
      tests=os.path.join(REPO, "tests"))], stdout=subprocess.PIPE, text=True)
  endpoint = proc.stdout.readline().strip()
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  return proc, gcs_emulator.environment(endpoint)


def upload(pattern: str, bucket_prefix: str) -> str:
  import glob  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  for path in glob.glob(pattern):
    epath.Path(path).copy(epath.Path(f"{bucket_prefix}/{os.path.basename(path)}"))
  return f"{bucket_prefix}/{os.path.basename(pattern)}"


def temp_dir() -> str:
  return tempfile.mkdtemp(prefix="records_bench_")
