"""Shapes-world evaluation of a run: generation score and understanding accuracy as JSON.

`evaluate(loaded, ...)` works on a checkpoint loaded by `jf_jax.inference.loader` (the main
job calls it right after training); `python -m jf_jax.shapes --checkpoint DIR` loads the
run first. The test split's captions are compositions never seen in training captions
(`world.py`).
"""

import json
import os
import time
from typing import Any

import numpy as np

from jf_jax.inference import engine as engine_lib
from jf_jax.inference import grid
from jf_jax.inference import loader
from jf_jax.shapes import scores
from jf_jax.shapes import world as shapes_world


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


ANSWER_TOKENS = 8  # shapes-world answers are one or two words


def evaluation_engine_config(batch_size: int):
  """The engine's defaults with one batch bucket (`batch_size` rows per call)."""
  config = engine_lib.default_config()
  config.batch_buckets = (batch_size,)
  return config


def spread(n: int, k: int) -> list[int]:
  """k indices spread over range(n) (different images and question kinds)."""
  if n <= 0 or k <= 0:
    return []
  return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def evaluate(loaded: loader.Loaded, *, split: str = "test", num_gen: int = 200,
             num_und: int = 500, steps: int = 30, guidance: float = 2.0, seed: int = 0,
             batch_size: int = 50, data_dir: str | None = None,
             grid_path: str | None = None, grid_size: int = 16,
             num_examples: int = 8) -> dict:
  """Both scores of a loaded run on a shapes-world split, plus examples.

  The first `grid_size` images go to a PNG grid at `grid_path` (row-major, in the order
  of `generation.samples`, their captions); `understanding.examples` holds
  `num_examples` questions spread over the split with the model's answers.
  """
  items = split_items(loaded.config.data, split, num_gen, num_und, data_dir)
  engine = engine_lib.Engine(loaded, evaluation_engine_config(batch_size))
  t0 = time.time()
  images = engine.generate(items["captions"],
                           keys=engine_lib.request_keys(seed, len(items["captions"])),
                           steps=steps, guidance=guidance)
  gen = scores.generation_scores(images, items["captions"])
  gen.update(seconds=time.time() - t0, steps=steps, guidance=guidance)
  grid_n = min(grid_size, len(images)) if grid_path else 0
  if grid_n:
    grid.save_grid(images[:grid_n], grid_path, scale=4, gap=1)
    gen["grid"] = os.path.abspath(grid_path)
  gen["samples"] = items["captions"][:grid_n]
  t0 = time.time()
  answers = engine.answer(items["images"], items["questions"],
                          keys=engine_lib.request_keys(seed, len(items["questions"])),
                          max_new_tokens=ANSWER_TOKENS)
  predictions = [a.text for a in answers]
  und = scores.understanding_scores(predictions, items["answers"], items["questions"])
  und["seconds"] = time.time() - t0
  und["examples"] = [{"question": items["questions"][i], "answer": items["answers"][i],
                      "prediction": predictions[i]}
                     for i in spread(len(predictions), num_examples)]
  return {"split": split, "step": loaded.step, "generation": gen, "understanding": und}


def write_json(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
