r"""Evaluates a shapes-world training run: GenEval-style generation score and
understanding exact-match accuracy on the held-out test split, written as JSON.

  python -m jf_jax.shapes --checkpoint /tmp/shapes            # a train.py --workdir
  python -m jf_jax.shapes --checkpoint /tmp/shapes --num_gen 50 --num_und 100 --steps 10

Writes DIR/eval_<split>.json (or --output) and DIR/eval_<split>.png (first 16 samples).
"""

import os

from absl import app
from absl import flags
from absl import logging

from jf_jax import entry_point
from jf_jax.inference import loader
from jf_jax.shapes import evaluate

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "train.py --workdir to evaluate.",
                                  required=True)
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split.")
_NUM_GEN = flags.DEFINE_integer("num_gen", 200, "Captions to generate images for (0: none).",
                                lower_bound=0)
_NUM_UND = flags.DEFINE_integer("num_und", 500, "Questions to answer (0: none).",
                                lower_bound=0)
_STEPS = flags.DEFINE_integer("steps", 30, "ODE steps per image.", lower_bound=1)
_CFG = flags.DEFINE_float("cfg", 2.0, "Classifier-free guidance weight.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Images / questions per sampler call.",
                              lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the run's).")
_OUTPUT = flags.DEFINE_string("output", None, "JSON path (default DIR/eval_<split>.json).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  if _NUM_GEN.value + _NUM_UND.value == 0:
    raise app.UsageError("--num_gen=0 and --num_und=0: nothing to evaluate")
  base = os.path.join(_CHECKPOINT.value, f"eval_{_SPLIT.value}")
  result = evaluate.evaluate(
      loader.load(_CHECKPOINT.value), split=_SPLIT.value, num_gen=_NUM_GEN.value,
      num_und=_NUM_UND.value, steps=_STEPS.value, guidance=_CFG.value, seed=_SEED.value,
      batch_size=_BATCH.value, data_dir=_DATA_DIR.value, grid_path=base + ".png")
  result["checkpoint"] = os.path.abspath(_CHECKPOINT.value)
  path = _OUTPUT.value or base + ".json"
  evaluate.write_json(result, path)
  print(f"{evaluate.summary(result)} -> {path}", flush=True)


if __name__ == "__main__":
  entry_point.run_absl(main)
