"""DPG-Bench: one PNG per prompt file, OUT/<stem>.png, a 2x2 grid of 4 images.

DPG-Bench's prompts are a folder of .txt files (one prompt each); its scorer
(`compute_dpg_bench.py --image-root-path OUT --resolution R --pic-num 4`) opens
<stem>.png and cuts it into pic-num tiles of R x R pixels.
"""

import argparse
import functools
import glob
import os

import numpy as np

from jf_jax.bench import devices
from jf_jax.bench import images
from jf_jax.bench import inputs_io
from jf_jax.inference import engine as engine_lib

PER_PROMPT = 4  # the scorer's default --pic-num: a 2 x 2 grid
HELP = "DPG-Bench: OUT/<stem>.png, a 2x2 grid per prompt file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--prompts", required=True, help="folder of <stem>.txt prompt files")


def read_prompts(folder: str) -> tuple[list[str], dict[int, str]]:
  """(stems of all .txt files, sorted; {index into stems: prompt} of non-empty ones)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--prompts={folder} is not a directory")
  paths = sorted(glob.glob(os.path.join(folder, "*.txt")))
  if not paths:
    raise FileNotFoundError(f"no .txt prompt files in {folder}")
  stems, prompts = [], {}
  for index, path in enumerate(paths):
    stems.append(os.path.splitext(os.path.basename(path))[0])
    with open(path, encoding="utf-8") as f:
      text = f.read().strip()
    if text:
      prompts[index] = text
    else:
      inputs_io.skip(path, "line 1", "empty prompt file")
  return stems, prompts


def task_settings(args) -> dict:
  return {"prompts": os.path.abspath(args.prompts), "per_prompt": PER_PROMPT}


def _save(path: str, made: dict[int, np.ndarray]) -> None:
  images.save_grid_png(path, np.stack([made[k] for k in range(PER_PROMPT)]))


def run(args, engine: engine_lib.Engine, settings: images.ImageSettings) -> None:
  stems, prompts = read_prompts(args.prompts)
  jobs = []
  share = devices.process_share(sorted(prompts))
  for index in share:
    path = os.path.join(args.out, f"{stems[index]}.png")
    if args.overwrite or not os.path.exists(path):
      jobs.append(images.ImageJob(index, list(range(PER_PROMPT)),
                                  functools.partial(_save, path)))
  finished = images.generate(engine, prompts, jobs, settings, args.stop_after)
  images.report(args.out, len(share), len(jobs), finished, args.stop_after, "grids")
