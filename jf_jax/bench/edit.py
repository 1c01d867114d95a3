"""Image editing: OUT/<id>.png, one edited image per input line, plus OUT/run.json.

In: a JSONL of {"id", "image" (the source: a path, relative to --image_root or else the
JSONL's folder), "instruction"} lines (the layout GenEditEvalKit-style harnesses read:
one output image per input, named by its id). Each edit runs on the engine
(`Engine.edit`, two-condition guidance: --guidance_text, --guidance_image) in batches of
`batch_per_device` x devices; input k (0-based order of the valid lines) starts from the
noise of fold_in(key(seed), k), so an image does not depend on its batch or the device
count. Outputs already on disk are skipped (resume) unless --overwrite.
"""

import argparse
import os

import jax
import numpy as np
import tqdm

from jf_jax.bench import devices
from jf_jax.bench import images
from jf_jax.bench import inputs_io
from jf_jax.data import preprocess
from jf_jax.data import records
from jf_jax.inference import engine as engine_lib
from jf_jax.sampling import image as image_sampling

HELP = "image editing: OUT/<id>.png per {id, image, instruction} line"
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--inputs", required=True,
                      help="JSONL of {id, image, instruction} (one edit a line)")
  parser.add_argument("--image_root", default=None,
                      help="folder relative 'image' paths are in (default: the JSONL's)")
  parser.add_argument("--steps", type=int, default=30, help="ODE steps")
  parser.add_argument("--solver", default="euler", choices=image_sampling.SOLVERS)
  parser.add_argument("--guidance_text", type=float, default=2.0,
                      help="the instruction's guidance weight (InstructPix2Pix's s_T)")
  parser.add_argument("--guidance_image", type=float, default=1.5,
                      help="the source image's guidance weight (s_I)")


def read_inputs(path: str, image_root: str | None) -> list[dict]:
  """The valid lines, each {"id": str, "image": path, "instruction": str}; a line without
  an id or instruction, with an id used before or not usable as a file name, or whose
  image is missing or unreadable, is named and skipped."""
  root = image_root or os.path.dirname(os.path.abspath(path))
  out, seen = [], set()
  for number, entry in inputs_io.jsonl_lines(path):
    name = str(entry.get("id", "")).strip()
    image = inputs_io.text_field(entry, "image")
    problem = None
    if not name:
      problem = "no 'id'"
    elif not set(name) <= _SAFE or name.startswith("."):
      problem = f"id {name!r} is not a plain file name (letters, digits, - _ .)"
    elif name in seen:
      problem = f"id {name!r} again"
    elif inputs_io.text_field(entry, "instruction") is None:
      problem = "empty 'instruction'"
    elif image is None:
      problem = "no 'image'"
    if problem is None:
      image = image if os.path.isabs(image) else os.path.join(root, image)
      try:
        preprocess.load_image(image)
      except (records.BadExample, OSError) as e:
        problem = f"image {image}: {e}"
    if problem:
      inputs_io.skip(path, f"line {number}", problem)
      continue
    seen.add(name)
    out.append({"id": name, "image": image, "instruction": entry["instruction"]})
  return out


def task_settings(args) -> dict:
  return {"inputs": os.path.abspath(args.inputs), "steps": args.steps,
          "solver": args.solver, "guidance_text": args.guidance_text,
          "guidance_image": args.guidance_image}


def run(args, engine: engine_lib.Engine, seed: int) -> None:
  for flag in ("steps",):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag}={getattr(args, flag)} must be >= 1")
  entries = read_inputs(args.inputs, args.image_root)
  share = devices.process_share(list(range(len(entries))))
  todo = [k for k in share if args.overwrite or not os.path.exists(
      os.path.join(args.out, f"{entries[k]['id']}.png"))]
  size = args.batch_per_device * engine.mesh.size
  finished = 0
  bar = tqdm.tqdm(total=len(todo), unit="img", dynamic_ncols=True,
                  disable=jax.process_index() != 0)
  for lo, hi in devices.batches(len(todo), size):
    chunk = todo[lo:hi]
    edited = engine.edit([entries[k]["image"] for k in chunk],
                         [entries[k]["instruction"] for k in chunk],
                         keys=engine_lib.row_keys(np.full(len(chunk), seed), chunk),
                         steps=args.steps, guidance_text=args.guidance_text,
                         guidance_image=args.guidance_image)
    for k, image in zip(chunk, edited):
      images.save_png(os.path.join(args.out, f"{entries[k]['id']}.png"), image)
    finished += len(chunk)
    bar.update(len(chunk))
    if args.stop_after is not None and finished >= args.stop_after:
      break
  bar.close()
  images.report(args.out, len(share), len(todo), finished, args.stop_after, "edited images")
