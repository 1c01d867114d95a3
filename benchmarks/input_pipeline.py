r"""Input-pipeline speed: batches/s and images/s of the grain loader alone (no model).

For 0 (in-process), 1 and 2 loader worker processes (`config.data.workers`), on

* the shapes world of the config (`config.data`, generated on first use), and
* a folder of JPEGs of mixed sizes around 384 px that the script writes itself (understanding
  conversations + image/caption pairs, `config.data.source = "files"`), preprocessed for a
  384-px SigLIP (`--image_size`): the decode + resize work of real data.

It also times decode + resize alone, one image after another in this process (ms per
image: the per-core cost that bounds the loader).

  python benchmarks/input_pipeline.py --config configs/tiny_shapes.py
  python benchmarks/input_pipeline.py --config configs/tiny_shapes.py --workers 0,2 \
      --batches 20 --num_jpegs 96

Prepared records (`--sources records,startup,emulator,prepare`, `input_records.py`):
the loader on 384-px ArrayRecord shards vs the per-file loader on the original 512-1600
px JPEGs, startup and memory at 100k / 1M records, the shards read from a GCS emulator vs
local disk, and prepare's records/s with 1 and 2 workers:

  python benchmarks/input_pipeline.py --sources records,startup,emulator,prepare \
      --workers 0 --num_originals 96

Images/s counts understanding images + real generation rows, as the training logs do.
Each setting is measured `--rounds` times, alternating, and the best is reported; the
lines before the summary give every measurement with the machine's load average.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from ml_collections import config_flags
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import input_records  # pylint: disable=wrong-import-position
from jf_jax import config_defaults  # pylint: disable=wrong-import-position
from jf_jax.data import pipeline  # pylint: disable=wrong-import-position
from jf_jax.data import preprocess  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                           "tiny_shapes.py"), "Training config file.", lock_config=False)
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Loader worker counts to time.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per setting.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches first (worker start-up).")
_SOURCES = flags.DEFINE_list("sources", ["shapes", "jpeg"], "Which data to time.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Measurements per setting (the best is kept).")
_NUM_JPEGS = flags.DEFINE_integer("num_jpegs", 64, "JPEGs written for the file source.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 384, "Model image size for the JPEG rows "
                                   "(SigLIP input and pixel-space generation crop).")
_PATCH = flags.DEFINE_integer("patch_size", 16, "Patch size at --image_size.")
_NUM_ORIGINALS = flags.DEFINE_integer("num_originals", 96, "Original JPEGs (512-1600 px) "
                                      "for the records targets.")
_STARTUP_RECORDS = flags.DEFINE_list("startup_records", ["100000", "1000000"],
                                     "Record counts of the startup target.")
_STARTUP_SHARDS = flags.DEFINE_integer("startup_shards", 100, "Shards of the startup target.")
_JPEG_DIR = flags.DEFINE_string("jpeg_dir", "", "Where to write the JPEGs ('' = a temp dir).")

_CAPTIONS = ("a red circle", "a blue square to the left of a green triangle",
             "two shapes", "a yellow circle above a red square")


def write_jpegs(folder: str, count: int, seed: int = 0) -> list[str]:
  """`count` JPEGs with sides between 288 and 512 px (smooth colour fields with noise, so
  they compress and decode like photographs rather than like noise), each with a caption
  file, and a LLaVA JSON over the same images."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  names, conversations = [], []
  for i in range(count):
    h, w = (int(v) for v in rng.integers(288, 513, size=2))
    pixels = input_records.photo_like(rng, h, w)
    name = f"img{i:04d}.jpg"
    Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
    caption = _CAPTIONS[i % len(_CAPTIONS)]
    with open(os.path.join(folder, f"img{i:04d}.txt"), "w", encoding="utf-8") as f:
      f.write(caption)
    names.append(name)
    conversations.append({"image": name, "conversations": [
        {"from": "human", "value": "<image>\nhow many shapes are there?"},
        {"from": "gpt", "value": "two"}]})
  with open(os.path.join(folder, "llava.json"), "w", encoding="utf-8") as f:
    json.dump(conversations, f)
  return [os.path.join(folder, n) for n in names]


def jpeg_config(config, folder: str):
  """The config reading the JPEG folder, with a `--image_size` pixel-space model."""
  config = config.copy_and_resolve_references()
  config_defaults.use_pixel_space(config.model, _IMAGE_SIZE.value, _PATCH.value)
  config.data.update(dict(source="files", resize_images=True, gen_space="pixel",
                          gen_files=(folder,), und_files=(os.path.join(folder, "llava.json"),),
                          text_files=()))
  num_und = (_IMAGE_SIZE.value // _PATCH.value) ** 2 + 1
  config.batch.update(dict(text_rows=0, und_seq_len=num_und + 40,
                           gen_prompt_len=max(config.batch.gen_prompt_len, 24)))
  return config


def decode_resize_ms(paths: list[str], size: int) -> float:
  """Mean ms per image of decode + both encoders' resizes (uint8, as the loader ships
  them), in this process."""
  start = time.perf_counter()
  for path in paths:
    image = preprocess.load_image(path)
    preprocess.pad_to_square(image, size)
    preprocess.center_crop(image, size)
  return 1000 * (time.perf_counter() - start) / len(paths)


def time_loader(config, workers: int) -> tuple[float, float, float]:
  """(batches/s, images/s, CPU ms per batch of this process) of `config`'s loader with
  `workers` processes: the last is the data work left to a training process."""
  config = config.copy_and_resolve_references()
  config.data.workers = workers
  cfg = model_config.from_config_dict(config.model)
  source = pipeline.make_source(config, cfg, process_index=0, process_count=1)
  try:
    for _ in range(_WARMUP.value):
      next(source)
    images, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(_BATCHES.value):
      batch = next(source)
      images += pipeline.batch_stats(batch, cfg)[1]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
  finally:
    source.close()
  return _BATCHES.value / elapsed, images / elapsed, 1000 * cpu / _BATCHES.value


def _best_images_s(config, workers: int) -> float:
  return max(time_loader(config, workers)[1] for _ in range(_ROUNDS.value))


def records_targets(config) -> None:
  """The four prepared-records targets (module docstring), printed as they finish."""
  work = input_records.temp_dir()
  originals = None
  if {"records", "emulator", "prepare"} & set(_SOURCES.value):
    originals = input_records.write_originals(os.path.join(work, "originals"),
                                              _NUM_ORIGINALS.value)
    files = jpeg_config(config, originals["folder"])
    files.data.und_files = (originals["llava"],)
    patterns = input_records.prepare_shards(originals, os.path.join(work, "rec", "bench"),
                                            _IMAGE_SIZE.value)
    records = input_records.records_config(files, patterns)
  workers = int(_WORKERS.value[0])
  if "records" in _SOURCES.value:
    per_file, prepared = _best_images_s(files, workers), _best_images_s(records, workers)
    print(f"records  | workers {workers} | per-file originals {per_file:7.1f} images/s | "
          f"prepared {_IMAGE_SIZE.value}-px shards {prepared:7.1f} images/s | "
          f"x{prepared / per_file:.2f}", flush=True)
  if "emulator" in _SOURCES.value:
    proc, env = input_records.start_emulator()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
      remote = {t: input_records.upload(p, f"gs://bucket/bench/{t}")
                for t, p in patterns.items()}
      gcs = input_records.records_config(files, remote)
      # Alternating rounds: a change in the machine's load hits both.
      local_s = gcs_s = 0.0
      for _ in range(_ROUNDS.value):
        local_s = max(local_s, time_loader(records, workers)[1])
        gcs_s = max(gcs_s, time_loader(gcs, workers)[1])
    finally:
      os.environ.clear()
      os.environ.update(saved)
      proc.kill()
    print(f"emulator | workers {workers} | local disk {local_s:7.1f} images/s | GCS "
          f"emulator {gcs_s:7.1f} images/s | x{gcs_s / local_s:.2f}", flush=True)
  if "prepare" in _SOURCES.value:
    speed = {w: input_records.prepare_speed(originals, os.path.join(work, "prep"), w,
                                            _IMAGE_SIZE.value) for w in (1, 2)}
    print(f"prepare  | {len(originals['tars'])} tars of {_NUM_ORIGINALS.value} originals "
          f"| 1 worker {speed[1]:6.1f} records/s | 2 workers {speed[2]:6.1f} records/s | "
          f"x{speed[2] / speed[1]:.2f}", flush=True)
  if "startup" in _SOURCES.value:
    figures = {}
    for n in (int(v) for v in _STARTUP_RECORDS.value):
      pattern = input_records.write_many(os.path.join(work, f"many{n}", "gen"), n,
                                         _STARTUP_SHARDS.value)
      figures[n] = input_records.startup(pattern)
      print(f"startup  | {n:,} records in {_STARTUP_SHARDS.value} shards | first batch "
            f"after {figures[n]['seconds']:.2f} s | RSS {figures[n]['rss_mib']:.0f} MiB "
            f"(after imports {figures[n]['before_mib']:.0f} MiB)", flush=True)
    (small, a), (large, b) = sorted(figures.items())[0], sorted(figures.items())[-1]
    if large > small:
      per_s = (b["seconds"] - a["seconds"]) / (large - small)
      per_mib = (b["rss_mib"] - a["rss_mib"]) / (large - small)
      at = 10_000_000
      print(f"startup  | per record {per_s * 1e6:.2f} us, {per_mib * 2**20:.1f} bytes | "
            f"implied at 10M: {b['seconds'] + per_s * (at - large):.1f} s, "
            f"{b['rss_mib'] + per_mib * (at - large):.0f} MiB", flush=True)


def main(argv):
  del argv
  config = _CONFIG.value
  if {"records", "startup", "emulator", "prepare"} & set(_SOURCES.value):
    records_targets(config)
    if not {"shapes", "jpeg"} & set(_SOURCES.value):
      return
  shapes = config.copy_and_resolve_references()
  shapes.data.source = "shapes"
  folder = _JPEG_DIR.value or tempfile.mkdtemp(prefix="jpegs_")
  paths = write_jpegs(folder, _NUM_JPEGS.value)
  print(f"{os.cpu_count()} CPUs; {_BATCHES.value} timed batches after {_WARMUP.value}; "
        f"{len(paths)} JPEGs in {folder}")
  print(f"decode + resize to {_IMAGE_SIZE.value} px: "
        f"{decode_resize_ms(paths, _IMAGE_SIZE.value):.2f} ms/image (one core, in-process)")
  for name, cfg in (("shapes", shapes), ("jpeg", jpeg_config(config, folder))):
    if name not in _SOURCES.value:
      continue
    rows = f"und/text/gen rows {cfg.batch.und_rows}/{cfg.batch.text_rows}/{cfg.batch.gen_rows}"
    best = {}
    # Rounds alternate the settings, so a change in the machine's load hits all of them.
    for _ in range(_ROUNDS.value):
      for workers in (int(w) for w in _WORKERS.value):
        batches_s, images_s, cpu_ms = time_loader(cfg, workers)
        print(f"  {name} workers {workers}: {batches_s:.2f} batches/s {images_s:.1f} "
              f"images/s, {cpu_ms:.0f} ms CPU/batch in the loop's process (load "
              f"average {os.getloadavg()[0]:.1f})", flush=True)
        if images_s > best.get(workers, (0, 0, 0))[1]:
          best[workers] = (batches_s, images_s, cpu_ms)
    base = best[min(best)][1]
    for workers, (batches_s, images_s, cpu_ms) in sorted(best.items()):
      print(f"{name:6s} {rows} | workers {workers} | {batches_s:7.2f} batches/s "
            f"{images_s:8.1f} images/s | x{images_s / base:.2f} | {cpu_ms:5.0f} ms CPU/batch "
            "in the loop's process", flush=True)

if __name__ == "__main__":
  app.run(main)
