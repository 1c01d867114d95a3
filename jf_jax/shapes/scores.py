"""Scores on plain numpy images and strings: GenEval-style generation, exact-match answers.

Generation: an image passes when the detector's left-to-right scene equals the caption's
(`shapes_scene.parse_caption`): same number of objects, same colour and shape for each,
in the same order, i.e. count, colour attribution and relative position all right. The
partial rates say which of those fail.

Understanding: exact match after lower-casing, stripping whitespace and a final period.
"""

import collections
from typing import Sequence

import numpy as np

from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import detector


def generation_scores(images: Sequence[np.ndarray], captions: Sequence[str]) -> dict:
  """GenEval-style scores of uint8 [H, W, 3] images against their captions."""
  if len(images) != len(captions):
    raise ValueError(f"{len(images)} images but {len(captions)} captions")
  counts = collections.Counter()
  by_objects = collections.defaultdict(list)
  confusion = collections.Counter()  # "asked shape -> drawn shape" of paired objects
  for image, caption in zip(images, captions):
    want = shapes_scene.parse_caption(caption)
    got = detector.scene(np.asarray(image))
    count_ok = len(got) == len(want)
    if count_ok:  # pair objects left to right: which attribute is wrong, colour or shape
      for (want_color, want_shape), (got_color, got_shape) in zip(want, got):
        counts["paired"] += 1
        counts["color_ok"] += want_color == got_color
        counts["shape_ok"] += want_shape == got_shape
        confusion[f"{want_shape} -> {got_shape}"] += 1
    objects_ok = sorted(got) == sorted(want)
    match = got == want
    counts["count"] += count_ok
    counts["objects"] += objects_ok
    counts["position"] += match if objects_ok else 0
    counts["objects_matched"] += objects_ok
    counts["match"] += match
    by_objects[len(want)].append(match)
  n = max(len(images), 1)
  return {
      "score": counts["match"] / n,
      "count_accuracy": counts["count"] / n,
      "objects_accuracy": counts["objects"] / n,
      # Of the images with the right objects, the fraction in the right order.
      "position_accuracy": counts["position"] / max(counts["objects_matched"], 1),
      "score_by_num_objects": {str(k): float(np.mean(v)) for k, v in sorted(by_objects.items())},
      # Objects of the images with the right count, paired left to right with the caption's:
      # the fraction with the right colour / shape, and what each asked shape came out as.
      "paired_color_accuracy": counts["color_ok"] / max(counts["paired"], 1),
      "paired_shape_accuracy": counts["shape_ok"] / max(counts["paired"], 1),
      "shape_confusion": dict(sorted(confusion.items())),
      "num_images": len(images),
  }


def share_by(hits: Sequence[bool], labels: Sequence[str]) -> tuple[float, dict[str, float]]:
  """(share of hits overall, 0 for none; {label: share of its hits}, labels sorted)."""
  groups = collections.defaultdict(list)
  for hit, label in zip(hits, labels):
    groups[label].append(hit)
  return (float(np.mean(hits)) if len(hits) else 0.0,
          {k: float(np.mean(v)) for k, v in sorted(groups.items())})


def edit_scores(images: Sequence[np.ndarray], targets: Sequence[Sequence[tuple[str, str]]],
                kinds: Sequence[str]) -> dict:
  """Edit score of uint8 [H, W, 3] edited images: an image passes when its detected scene
  equals the instruction's result (`edits.apply_instruction` of the source, or the
  generator's target: the same list), every object's colour, shape and place, so the
  objects the edit leaves alone must stay as they were. Overall and per edit type
  (`kinds`), with `object_accuracy`: of the images with the right count, the fraction
  of objects right in their place (a softer figure: copying the source scores 0 on
  `score` by construction, each edit changes the scene, but not on this).
  """
  if not len(images) == len(targets) == len(kinds):
    raise ValueError(f"{len(images)} images, {len(targets)} targets, {len(kinds)} kinds")
  hits, right, paired = [], 0, 0
  for image, want in zip(images, targets):
    want = [tuple(p) for p in want]
    got = detector.scene(np.asarray(image))
    hits.append(got == want)
    if len(got) == len(want):
      paired += len(want)
      right += sum(g == w for g, w in zip(got, want))
  score, by_type = share_by(hits, kinds)
  return {"score": score, "score_by_type": by_type,
          "object_accuracy": right / max(paired, 1), "num_images": len(hits)}


def normalize_answer(text: str) -> str:
  return text.strip().lower().rstrip(".").strip()


def question_type(question: str) -> str:
  """Coarse kind of a shapes-world question, for per-type accuracy."""
  q = question.strip().lower()
  if q.startswith("how many"):
    return "count"
  if q.startswith("what color"):
    return "color"
  if q.startswith("what shape"):
    return "shape"
  if q.startswith("is there"):
    return "exists"
  if q.startswith("is the"):
    return "position"
  return "other"


def understanding_scores(predictions: Sequence[str], answers: Sequence[str],
                         questions: Sequence[str] | None = None) -> dict:
  """Exact-match accuracy (normalised), overall and per question type."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
  hits = answer_hits(predictions, answers)
  accuracy, by_type = share_by(hits, [question_type(q) for q in questions or ()])
  out = {"accuracy": accuracy, "num_questions": len(hits)}
  if questions is not None:
    out["accuracy_by_type"] = by_type
  return out


def answer_hits(predictions: Sequence[str], answers: Sequence[str]) -> list[bool]:
  """Exact match of each prediction with its answer, both normalised."""
  return [normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)]


def format_rates(rates: dict[str, float], digits: int = 2) -> str:
  """{'count': 0.7312, 'exists': 1.0} -> 'count 0.73, exists 1.00' (for printed lines)."""
  return ", ".join(f"{name} {value:.{digits}f}" for name, value in rates.items()) or "-"
