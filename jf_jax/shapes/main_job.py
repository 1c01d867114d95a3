"""The post-training half of the default job (`python train.py`).

After training, `run(config, workdir)` loads the final checkpoint of `workdir` and, on the
shapes world's held-out test split (captions whose object pairs never appear together in
training):

1. draws images for the first `config.eval.num_gen` test captions and writes the first
   `config.eval.grid_size` of them as one PNG grid, `workdir/samples_<split>.png`
   (row-major, same order as `samples` in the JSON);
2. answers the first `config.eval.num_und` test questions (greedy) and prints
   `config.eval.show_questions` of them with the reference answers;
3. scores both (`scores.py`: GenEval-style generation score, understanding exact match)
   and writes everything to `workdir/main_job.json`.

Steps 1-3 are `evaluate.evaluate`; this adds the printout, the training metrics and the
job's wall clock.

`train.py` runs it as the `config.after_training = "jf_jax.shapes.main_job"` plug-in. Keys of
`config.eval` (configs/default.py): split, num_gen, num_und, steps, cfg, seed,
batch_size, grid_size, show_questions. `python -m jf_jax.shapes
--checkpoint DIR` computes the same scores for any finished run.
"""

import os
import time
from typing import Any

import numpy as np

from jf_jax.inference import loader
from jf_jax.shapes import evaluate
from jf_jax.shapes import scores

JSON_NAME = "main_job.json"


def run(config: Any, workdir: str, train_metrics: dict | None = None,
        start_time: float | None = None, extra: dict | None = None) -> dict:
  """Grid, printed Q/A and both scores of the run in `workdir`; returns the JSON dict.

  `start_time` (time.time() when the job started) adds `wall_seconds`, the whole job's
  wall clock up to the JSON; `extra` items are added to the JSON as they are.
  """
  ecfg = config.eval
  split = ecfg.get("split", "test")
  t_start = time.time()
  result = evaluate.evaluate(
      loader.load(workdir), split=split, num_gen=ecfg.num_gen, num_und=ecfg.num_und,
      steps=ecfg.steps, guidance=ecfg.cfg, seed=ecfg.seed, batch_size=ecfg.batch_size,
      grid_path=os.path.join(workdir, f"samples_{split}.png"), grid_size=ecfg.grid_size,
      num_examples=ecfg.show_questions)
  gen, und = result["generation"], result["understanding"]
  result["eval_seconds"] = time.time() - t_start
  if train_metrics:
    result["train_metrics"] = {k: float(v) for k, v in train_metrics.items()
                               if isinstance(v, (int, float, np.floating, np.integer))}
  result.update(extra or {})
  if start_time is not None:
    result["wall_seconds"] = time.time() - start_time
  path = os.path.join(workdir, JSON_NAME)
  evaluate.write_json(result, path)

  print(f"\nsamples for {len(gen['samples'])} {split} captions -> {gen.get('grid', '(none)')}")
  for i, caption in enumerate(gen["samples"][:8]):
    print(f"  [{i}] {caption}")
  print(f"\n{split} questions (model answer | reference):")
  for ex in und["examples"]:
    mark = "ok" if (scores.normalize_answer(ex["prediction"])
                    == scores.normalize_answer(ex["answer"])) else "WRONG"
    print(f"  Q: {ex['question']}\n     A: {ex['prediction']!r} | {ex['answer']!r}  {mark}")
  print(f"\ngeneration score {gen['score']:.3f} on {gen['num_images']} {split} captions "
        f"(count {gen['count_accuracy']:.3f}, objects {gen['objects_accuracy']:.3f}, "
        f"position {gen['position_accuracy']:.3f}; {ecfg.steps} steps, cfg {ecfg.cfg})")
  print(f"understanding accuracy {und['accuracy']:.3f} on {und['num_questions']} {split} "
        f"questions {und.get('accuracy_by_type', {})}")
  wall = (f"; whole job {result['wall_seconds'] / 60:.1f} min" if "wall_seconds" in result
          else "")
  print(f"scores -> {os.path.abspath(path)} (evaluation {result['eval_seconds']:.0f} s{wall})",
        flush=True)
  return result
