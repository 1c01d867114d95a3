"""Shapes-world evaluation of a run: generation score and understanding accuracy as JSON.

`evaluate(run, ...)` works on a loaded `model_runner.Run` (train.py can call it right after
training); `python -m jf_jax.eval --checkpoint DIR` loads the run first. The test split's
captions are compositions never seen in training captions (`shapes_world.py`).
"""

import json
import math
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from jf_jax.data import shapes_world
from jf_jax.eval import model_runner
from jf_jax.eval import scores


def split_items(data_cfg: Any, split: str, num_gen: int, num_und: int,
                data_dir: str | None = None) -> dict:
  """Captions of the first `num_gen` examples; (image, question, answer) of every question
  of the first examples, up to `num_und`."""
  source = shapes_world.load(data_dir or data_cfg.data_dir,
                             **shapes_world.config_kwargs(data_cfg))[split]
  captions = [source[i]["caption"].decode() for i in range(min(num_gen, len(source)))]
  images, questions, answers = [], [], []
  for i in range(len(source)):
    if len(questions) >= num_und:
      break
    ex = source[i]
    for q, a in zip(ex["questions"], ex["answers"]):
      images.append(ex["image"])
      questions.append(q.decode())
      answers.append(a.decode())
  return {"captions": captions, "images": images[:num_und], "questions": questions[:num_und],
          "answers": answers[:num_und]}


def save_grid(images: np.ndarray, path: str, scale: int = 4) -> None:
  """[n, H, W, 3] uint8 -> one PNG, ceil(sqrt(n)) columns, nearest-neighbour upscaled."""
  n, h, w, _ = images.shape
  cols = math.ceil(math.sqrt(n))
  grid = np.full((math.ceil(n / cols) * (h + 1), cols * (w + 1), 3), 255, np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, cols)
    grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = img
  Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                               Image.NEAREST).save(path)


def evaluate(run: model_runner.Run, *, split: str = "test", num_gen: int = 200,
             num_und: int = 500, steps: int = 30, guidance: float = 2.0, seed: int = 0,
             batch_size: int = 50, data_dir: str | None = None,
             grid_path: str | None = None) -> dict:
  """Both scores of a run on a shapes-world split, plus a few examples."""
  items = split_items(run.config.data, split, num_gen, num_und, data_dir)
  t0 = time.time()
  images = model_runner.generate_images(run, items["captions"], steps=steps,
                                        guidance=guidance, seed=seed, batch_size=batch_size)
  gen = scores.generation_scores(images, items["captions"])
  gen.update(seconds=time.time() - t0, steps=steps, guidance=guidance)
  if grid_path:
    save_grid(images[:16], grid_path)
    gen["grid"] = os.path.abspath(grid_path)
  gen["examples"] = items["captions"][:16]
  t0 = time.time()
  predictions = model_runner.answer_questions(run, items["images"], items["questions"],
                                              batch_size=batch_size)
  und = scores.understanding_scores(predictions, items["answers"], items["questions"])
  und["seconds"] = time.time() - t0
  und["examples"] = [{"question": q, "answer": a, "prediction": p} for q, a, p in
                     list(zip(items["questions"], items["answers"], predictions))[:8]]
  return {"split": split, "step": run.step, "generation": gen, "understanding": und}


def write_json(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
