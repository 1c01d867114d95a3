"""MJHQ-30K: OUT/<category>/<id>.png, one image per prompt of meta_data.json.

meta_data.json maps each image id to {"category": ..., "prompt": ...}; FID tools compare
OUT/<category> against the reference images of that category, and OUT as a whole
against all of them.
"""

import argparse
import functools
import json
import os

import numpy as np

from jf_jax.bench import devices
from jf_jax.bench import images
from jf_jax.bench import inputs_io
from jf_jax.inference import engine as engine_lib

HELP = "MJHQ-30K: OUT/<category>/<id>.png per meta_data.json entry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--meta", required=True, help="MJHQ-30K meta_data.json")


def read_meta(path: str) -> tuple[list[str], dict[int, dict]]:
  """(all ids in file order; {index into ids: entry} for entries with a prompt and a
  category)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  with open(path, encoding="utf-8") as f:
    meta = json.load(f)
  if not isinstance(meta, dict):
    raise ValueError(f"{path}: expected an object {{id: {{category, prompt}}}}")
  ids, entries = list(meta), {}
  for index, image_id in enumerate(ids):
    entry = meta[image_id] if isinstance(meta[image_id], dict) else {}
    missing = [k for k in ("prompt", "category") if inputs_io.text_field(entry, k) is None]
    if missing or "/" in image_id or "/" in entry["category"]:
      inputs_io.skip(path, f"id {image_id!r}", f"no {' or '.join(missing)}" if missing
                     else "'/' in the id or category")
      continue
    entries[index] = entry
  return ids, entries


def task_settings(args) -> dict:
  return {"meta": os.path.abspath(args.meta), "per_prompt": 1}


def _save(path: str, made: dict[int, np.ndarray]) -> None:
  images.save_png(path, made[0])


def run(args, engine: engine_lib.Engine, settings: images.ImageSettings) -> None:
  ids, entries = read_meta(args.meta)
  jobs = []
  share = devices.process_share(sorted(entries))
  for index in share:
    path = os.path.join(args.out, entries[index]["category"], f"{ids[index]}.png")
    if args.overwrite or not os.path.exists(path):
      jobs.append(images.ImageJob(index, [0], functools.partial(_save, path)))
  prompts = {i: e["prompt"] for i, e in entries.items()}
  finished = images.generate(engine, prompts, jobs, settings, args.stop_after)
  images.report(args.out, len(share), len(jobs), finished, args.stop_after, "images")
