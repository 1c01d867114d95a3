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
from jf_jax.inference import progress as progress_lib
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


def _progress(label: str, total: int, show: bool) -> progress_lib.Progress | None:
  return progress_lib.Progress(label, total) if show and total else None


def evaluate(loaded: loader.Loaded, *, split: str = "test", num_gen: int = 200,
             num_und: int = 500, steps: int = 30, guidance: float = 2.0, seed: int = 0,
             batch_size: int = 50, data_dir: str | None = None,
             grid_path: str | None = None, grid_size: int = 16,
             num_examples: int = 8, show_progress: bool = True) -> dict:
  """Both scores of a loaded run on a shapes-world split, plus examples.

  The first `grid_size` images go to a PNG grid at `grid_path` (row-major, in the order
  of `generation.samples`, their captions); `understanding.examples` holds
  `num_examples` questions spread over the split with the model's answers. `num_gen` (or
  `num_und`) 0 skips that half: its entry is None.
  `show_progress` prints a progress line per batch (`inference/progress.py`).
  """
  if num_gen < 0 or num_und < 0 or num_gen + num_und == 0:
    raise ValueError(f"num_gen={num_gen} and num_und={num_und}: both must be >= 0 and one "
                     "> 0 (nothing to evaluate)")
  items = split_items(loaded.config.data, split, num_gen, num_und, data_dir)
  engine = engine_lib.Engine(loaded, evaluation_engine_config(batch_size))
  return {"split": split, "step": loaded.step,
          "generation": _generation(engine, items["captions"], steps, guidance, seed,
                                    batch_size, grid_path, grid_size,
                                    _progress("images", len(items["captions"]), show_progress))
                        if num_gen else None,
          "understanding": _understanding(engine, items, seed, batch_size, num_examples,
                                          _progress("answers", len(items["questions"]),
                                                    show_progress))
                           if num_und else None}


def _in_chunks(n: int, size: int, fn, progress) -> list:
  """fn(lo, hi) over [0, n) in chunks of `size`, with a progress line after each (keys are
  per row, so chunking does not change any result)."""
  out = []
  for lo in range(0, n, size):
    hi = min(n, lo + size)
    out.append(fn(lo, hi))
    if progress is not None:
      progress(hi)
  return out


def _generation(engine, captions, steps, guidance, seed, batch_size, grid_path,
                grid_size, progress) -> dict:
  """Images for `captions`, their scores and the sample grid (`evaluate`'s)."""
  items = {"captions": captions}
  t0 = time.time()
  images = np.concatenate(_in_chunks(len(captions), batch_size, lambda lo, hi: engine.generate(
      captions[lo:hi], keys=engine_lib.request_keys(seed, hi - lo, start=lo), steps=steps,
      guidance=guidance), progress))
  gen = scores.generation_scores(images, items["captions"])
  gen.update(seconds=time.time() - t0, steps=steps, guidance=guidance)
  grid_n = min(grid_size, len(images)) if grid_path else 0
  if grid_n:
    grid.save_grid(images[:grid_n], grid_path, scale=4, gap=1)
    gen["grid"] = os.path.abspath(grid_path)
  gen["samples"] = items["captions"][:grid_n]
  return gen


def _understanding(engine, items, seed, batch_size, num_examples, progress) -> dict:
  """Answers to the items' questions and their scores, with a few examples."""
  t0 = time.time()
  questions = items["questions"]
  answers = sum(_in_chunks(len(questions), batch_size, lambda lo, hi: engine.answer(
      items["images"][lo:hi], questions[lo:hi],
      keys=engine_lib.request_keys(seed, hi - lo, start=lo), max_new_tokens=ANSWER_TOKENS),
      progress), [])
  predictions = [a.text for a in answers]
  und = scores.understanding_scores(predictions, items["answers"], items["questions"])
  und["seconds"] = time.time() - t0
  und["examples"] = [{"question": items["questions"][i], "answer": items["answers"][i],
                      "prediction": predictions[i]}
                     for i in spread(len(predictions), num_examples)]
  return und


def summary(result: dict) -> str:
  """One line of a result's scores, e.g. 'generation score 0.400 (200 images),
  understanding accuracy 0.822 (500 questions)'."""
  parts = []
  if result["generation"] is not None:
    gen = result["generation"]
    parts.append(f"generation score {gen['score']:.3f} ({gen['num_images']} images)")
  if result["understanding"] is not None:
    und = result["understanding"]
    parts.append(f"understanding accuracy {und['accuracy']:.3f} ({und['num_questions']} "
                 f"questions: {scores.format_rates(und.get('accuracy_by_type', {}))})")
  return ", ".join(parts)


def write_json(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
