"""The edit score of a run on a shapes-world split, by edit type, beside the copy-the-source
baseline, and the diagnostic that says why an edit score is low (`diagnose`).

Edit k of a split is a pure function of (seed, k): example k's scene and one edit of each
type that applies (`edits.make_edit`, the split's held-out rule: test edits end in
compositions never seen in training), so every run is scored on the same edits.
"""

import time
from typing import Any, Sequence

import numpy as np

from jf_jax.inference import engine as engine_lib
from jf_jax.inference import loader
from jf_jax.shapes import detector
from jf_jax.shapes import edits
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import scores
from jf_jax.shapes import world as shapes_world


def split_edits(data_cfg: Any, split: str, per_type: int, seed: int = 0,
                kinds: Sequence[str] = edits.EDIT_TYPES, data_dir: str | None = None
                ) -> list[dict]:
  """Up to `per_type` edits of each kind: [{"kind", "image", "instruction", "target",
  "target_caption", "source", "questions", "answers"}] ("target" / "source": the expected
  / the source's [(colour, shape)] left to right; "target_caption": the target scene in
  the world's caption words; "questions" / "answers": the source example's own)."""
  kwargs = shapes_world.config_kwargs(data_cfg)
  source = shapes_world.load(data_dir or data_cfg.data_dir, **kwargs)[split]
  holdout = shapes_scene.holdout_pairs(0)
  out, counts = [], dict.fromkeys(kinds, 0)
  for k in range(len(source)):
    if all(n >= per_type for n in counts.values()):
      break
    ex = source[k]
    scene = shapes_world.scene_of(ex)
    for kind in kinds:
      if counts[kind] >= per_type or not edits.possible(kind, len(scene)):
        continue
      try:
        edit = edits.make_edit(np.random.default_rng([seed, k, edits.EDIT_TYPES.index(kind)]),
                               scene, kwargs["image_size"], holdout, test=split == "test",
                               kind=kind, layout=kwargs["layout"])
      except ValueError:  # this kind cannot meet the held-out rule on this scene
        continue
      counts[kind] += 1
      out.append({"kind": kind, "image": ex["image"], "instruction": edit.instruction,
                  "target": edit.target_pairs, "source": edits.pairs(edit.source),
                  "target_caption": shapes_scene.caption(list(edit.target)),
                  "questions": [_text(q) for q in ex["questions"]],
                  "answers": [_text(a) for a in ex["answers"]]})
  return out


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def make_engine(loaded: loader.Loaded, batch_size: int = 50) -> engine_lib.Engine:
  """One engine for every measurement of a run (each compiles its functions once)."""
  config = engine_lib.default_config()
  config.batch_buckets = (batch_size,)
  return engine_lib.Engine(loaded, config)


def evaluate(engine: engine_lib.Engine, items: list[dict], *, steps: int = 20,
             guidance_text: float = 2.0, guidance_image: float = 1.5, seed: int = 0,
             batch_size: int = 50) -> dict:
  """Edit scores of a run's engine (`make_engine`) on `items` (`split_edits`), with the copy
  baseline and the share of outputs that copy the source (`copied`)."""
  t0 = time.time()
  outputs = []
  for lo in range(0, len(items), batch_size):
    chunk = items[lo:lo + batch_size]
    outputs.append(engine.edit([x["image"] for x in chunk], [x["instruction"] for x in chunk],
                               keys=engine_lib.request_keys(seed, len(chunk), start=lo),
                               steps=steps, guidance_text=guidance_text,
                               guidance_image=guidance_image))
  images = np.concatenate(outputs)
  targets, kinds = [x["target"] for x in items], [x["kind"] for x in items]
  result = scores.edit_scores(images, targets, kinds)
  result.update(seconds=time.time() - t0, steps=steps, guidance_text=guidance_text,
                guidance_image=guidance_image,
                copy_baseline=scores.edit_scores([x["image"] for x in items], targets, kinds),
                copied=copies(images, items))
  return result


def copies(images, items) -> dict:
  """Share of outputs whose detected scene is the source's (the model copied), by type."""
  hits = [detector.scene(np.asarray(image)) == x["source"] for image, x in zip(images, items)]
  rate, by_type = scores.share_by(hits, [x["kind"] for x in items])
  return {"rate": rate, "by_type": by_type}


def drawing_ceiling(engine: engine_lib.Engine, items: list[dict], *, steps: int = 20,
                    guidance: float = 2.0, seed: int = 0, batch_size: int = 50) -> dict:
  """Text-to-image from each edit's target caption with the same checkpoint, scored by the
  edit judge: how well the model draws the target scene from words (an edit that must
  also read the source can hardly do better)."""
  t0 = time.time()
  captions = [x["target_caption"] for x in items]
  images = np.concatenate([
      engine.generate(captions[lo:lo + batch_size],
                      keys=engine_lib.request_keys(seed, len(captions[lo:lo + batch_size]),
                                                   start=lo), steps=steps, guidance=guidance)
      for lo in range(0, len(items), batch_size)])
  result = scores.edit_scores(images, [x["target"] for x in items], [x["kind"] for x in items])
  result.update(seconds=time.time() - t0, steps=steps, guidance=guidance)
  return result


def source_reading(engine: engine_lib.Engine, items: list[dict], *, seed: int = 0,
                   batch_size: int = 50, answer_tokens: int = 8) -> dict:
  """Exact-match answers to the source scenes' own questions (count, colours, shapes,
  presence, left/right), by the edit type of the item and by question type: does the
  model read the source?"""
  t0 = time.time()
  rows = [(x["image"], q, a, x["kind"]) for x in items
          for q, a in zip(x["questions"], x["answers"])]
  answers = []
  for lo in range(0, len(rows), batch_size):
    chunk = rows[lo:lo + batch_size]
    answers += [a.text for a in engine.answer(
        [r[0] for r in chunk], [r[1] for r in chunk],
        keys=engine_lib.request_keys(seed, len(chunk), start=lo),
        max_new_tokens=answer_tokens)]
  hits = scores.answer_hits(answers, [r[2] for r in rows])
  exact_match, by_type = scores.share_by(hits, [r[3] for r in rows])
  by_question = scores.share_by(hits, [scores.question_type(r[1]) for r in rows])[1]
  return {"exact_match": exact_match, "by_type": by_type, "by_question": by_question,
          "num_questions": len(rows), "seconds": time.time() - t0}

