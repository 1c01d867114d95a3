"""The edit score of a run on a shapes-world split, by edit type, beside the copy-the-source
baseline.

Edit k of a split is a pure function of (seed, k): example k's scene and one edit of each
type that applies (`edits.make_edit`, the split's held-out rule: test edits end in
compositions never seen in training), so every run is scored on the same edits.
"""

import time
from typing import Any, Sequence

import numpy as np

from jf_jax.inference import engine as engine_lib
from jf_jax.inference import loader
from jf_jax.shapes import edits
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import scores
from jf_jax.shapes import world as shapes_world


def split_edits(data_cfg: Any, split: str, per_type: int, seed: int = 0,
                kinds: Sequence[str] = edits.EDIT_TYPES, data_dir: str | None = None
                ) -> list[dict]:
  """Up to `per_type` edits of each kind: [{"kind", "image", "instruction", "target"}]
  ("target": the expected [(colour, shape)] left to right)."""
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
                  "target": edit.target_pairs})
  return out


def evaluate(loaded: loader.Loaded, items: list[dict], *, steps: int = 20,
             guidance_text: float = 2.0, guidance_image: float = 1.5, seed: int = 0,
             batch_size: int = 50) -> dict:
  """Edit scores of a loaded run on `items` (`split_edits`), with the copy baseline."""
  config = engine_lib.default_config()
  config.batch_buckets = (batch_size,)
  engine = engine_lib.Engine(loaded, config)
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
                copy_baseline=scores.edit_scores([x["image"] for x in items], targets, kinds))
  return result
