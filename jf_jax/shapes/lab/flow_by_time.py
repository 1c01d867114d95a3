r"""Per-time flow diagnostics of a pixel-space shapes-world run (`jf_jax/shapes/diagnostics.py`).

For real (caption, image) pairs of a split, noised to fixed times t: the flow loss at t,
the detector's score of the one-step clean estimate z_t + (1 - t) v, and the score of the
Euler sampler started from the true z_t. Optionally a PNG: one row per t (top: earliest),
one column per caption, for the one-step estimates (PNG_one_step.png) and the resumed
samples (PNG_resumed.png).

  python -m jf_jax.shapes.lab.flow_by_time --checkpoint /tmp/run
  python -m jf_jax.shapes.lab.flow_by_time --checkpoint /tmp/run --split test --num 100 \
      --guidance 2 --png /tmp/run/by_time.png --step 500
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np


# pylint: disable=wrong-import-position
from jf_jax.inference import grid
from jf_jax.inference import loader
from jf_jax.shapes import diagnostics
from jf_jax.shapes import probe
# pylint: enable=wrong-import-position

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "train.py --workdir.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "validation", "test"], "Split.")
_NUM = flags.DEFINE_integer("num", 100, "Examples (the split's first).")
_GUIDANCE = flags.DEFINE_float("guidance", 1.0, "CFG weight (1: conditional only).")
_STEPS = flags.DEFINE_integer("steps", 20, "Sampler steps of a whole ODE.")
_TIMES = flags.DEFINE_list("times", [str(t) for t in diagnostics.TIMES], "Times t.")
_NO_RESUME = flags.DEFINE_bool("no_resume", False, "Skip the resumed-sampler scores.")
_PNG = flags.DEFINE_string("png", None, "Write example images here.")
_JSON = flags.DEFINE_string("json_out", None, "Write the results here.")


def _score(s: dict) -> str:
  """'score (count, paired shape accuracy)' of one `generation_scores` result."""
  return (f"{s['score']:.3f} ({s['count_accuracy']:.2f}, "
          f"{s['paired_shape_accuracy']:.2f})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  loaded = loader.load(_CHECKPOINT.value)
  if _STEP.value is not None:
    loaded = loader.at_step(loaded, _CHECKPOINT.value, _STEP.value)
  images, examples = probe.load_split(loaded.config.data, _SPLIT.value, _NUM.value)
  captions = [ex["caption"].decode() for ex in examples]
  times = [float(t) for t in _TIMES.value]
  keep = len(times) if _PNG.value else 0
  r = diagnostics.by_time(loaded, captions, images, times=times, guidance=_GUIDANCE.value,
                          steps=_STEPS.value, resume=not _NO_RESUME.value, keep=keep)
  print(f"{_CHECKPOINT.value} step {loaded.step}, {_SPLIT.value} split, {len(captions)} "
        f"images, guidance {_GUIDANCE.value}, {_STEPS.value}-step ODE")
  print("   t  | train-t mass (logit-normal / uniform) | flow mse | clean mse | one-step "
        "score (count, shape)  | resumed score (count, shape)")
  for k, t in enumerate(times):
    one = r["one_step"][k]
    res = r["resumed"][k] if "resumed" in r else None
    print(f" {t:.2f} | {r['mass']['logit_normal'][k]:.3f} / {r['mass']['uniform'][k]:.3f}"
          f"                         | {r['flow_mse'][k]:.4f}   | {r['clean_mse'][k]:.5f}   | "
          f"{_score(one)}          | " + (_score(res) if res else "-"))
  if _PNG.value:  # one square grid per kind: row k = times[k], one caption per column
    base, ext = os.path.splitext(_PNG.value)
    for kind, pictures in r.pop("images").items():
      grid.save_grid(np.concatenate(pictures), f"{base}_{kind}{ext}", scale=4, gap=1)
      print(f"{kind} images -> {base}_{kind}{ext}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({**r, "checkpoint": _CHECKPOINT.value, "step": loaded.step,
                 "split": _SPLIT.value}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
