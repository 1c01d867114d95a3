"""GenEval: OUT/<index:05d>/metadata.jsonl (the prompt's line) and
OUT/<index:05d>/samples/<k:05d>.png, plus OUT/<index:05d>/grid.png unless --no_grid.

<index> is the line's position in evaluation_metadata.jsonl (0-based), as GenEval's
own generation scripts number the folders; its `evaluation/evaluate_images.py` reads
each folder's metadata.jsonl and samples/*.png.
"""

import argparse
import functools
import json
import os

import numpy as np
from PIL import Image

from jf_jax.bench import devices
from jf_jax.bench import images
from jf_jax.bench import inputs_io
from jf_jax.inference import engine as engine_lib

HELP = "GenEval: OUT/<index>/metadata.jsonl + samples/<k>.png per prompt line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--metadata", required=True,
                      help="GenEval's evaluation_metadata.jsonl (one JSON object a line)")
  parser.add_argument("--per_prompt", type=int, default=4, help="images per prompt")
  parser.add_argument("--no_grid", action="store_true",
                      help="skip the per-prompt grid.png (the scorer does not read it)")


def read_metadata(path: str) -> dict[int, dict]:
  """{0-based line index: the line's object} for lines with a non-empty 'prompt'."""
  entries = {}
  for number, entry in inputs_io.jsonl_lines(path):
    if inputs_io.text_field(entry, "prompt") is None:
      inputs_io.skip(path, f"line {number}", "no 'prompt' (or an empty one)")
      continue
    entries[number - 1] = entry
  return entries


def task_settings(args) -> dict:
  return {"metadata": os.path.abspath(args.metadata), "per_prompt": args.per_prompt}


def _write_metadata(folder: str, entry: dict) -> None:
  meta = os.path.join(folder, "metadata.jsonl")
  os.makedirs(folder, exist_ok=True)
  with open(meta + ".tmp", "w", encoding="utf-8") as f:
    f.write(json.dumps(entry) + "\n")
  os.replace(meta + ".tmp", meta)


def _save(folder: str, entry: dict, per_prompt: int, with_grid: bool,
          made: dict[int, np.ndarray]):
  """A prompt's samples and its metadata.jsonl, written together (a stopped run leaves no
  folder without images)."""
  _write_metadata(folder, entry)
  for k, image in made.items():
    images.save_png(os.path.join(folder, "samples", f"{k:05d}.png"), image)
  if with_grid:
    _write_grid(folder, per_prompt)


def _write_grid(folder: str, per_prompt: int) -> None:
  samples = np.stack([np.asarray(Image.open(os.path.join(folder, "samples", f"{k:05d}.png")))
                      for k in range(per_prompt)])
  images.save_grid_png(os.path.join(folder, "grid.png"), samples)


def run(args, engine: engine_lib.Engine, settings: images.ImageSettings) -> None:
  if args.per_prompt < 1:
    raise ValueError(f"--per_prompt={args.per_prompt} must be >= 1")
  entries = read_metadata(args.metadata)
  jobs = []
  share = devices.process_share(sorted(entries))
  for index in share:
    folder = os.path.join(args.out, f"{index:05d}")
    pending = [k for k in range(args.per_prompt) if args.overwrite or not os.path.exists(
        os.path.join(folder, "samples", f"{k:05d}.png"))]
    if pending:
      jobs.append(images.ImageJob(index, pending, functools.partial(
          _save, folder, entries[index], args.per_prompt, not args.no_grid)))
    elif not args.no_grid and not os.path.exists(os.path.join(folder, "grid.png")):
      _write_grid(folder, args.per_prompt)
  prompts = {i: e["prompt"] for i, e in entries.items()}
  finished = images.generate(engine, prompts, jobs, settings, args.stop_after)
  images.report(args.out, len(share), len(jobs), finished, args.stop_after, "prompt folders")
