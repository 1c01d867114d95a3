r"""Generation learning curve of a shapes-world run: the score of every kept checkpoint on
training captions and on held-out test captions.

Training captions tell how well the model fits what it saw; test captions, every one a
combination never seen in training, how well that carries over. Keep the checkpoints
with `--config.train.checkpoint_every=N --config.train.keep_checkpoints=K` when training.

  python -m jf_jax.shapes.lab.gen_curve --checkpoint /tmp/run               # every kept step
  python -m jf_jax.shapes.lab.gen_curve --checkpoint /tmp/run --steps 500,1500 --num_gen 100
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import orbax.checkpoint as ocp


# pylint: disable=wrong-import-position
from jf_jax.inference import loader
from jf_jax.inference import engine as engine_lib
from jf_jax.shapes import evaluate
from jf_jax.shapes import scores
# pylint: enable=wrong-import-position

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "train.py --workdir.", required=True)
_STEPS = flags.DEFINE_list("steps", None, "Checkpoint steps (default: every kept one).")
_SPLITS = flags.DEFINE_list("splits", ["train", "test"], "Splits whose captions to draw.")
_NUM_GEN = flags.DEFINE_integer("num_gen", 100, "Captions per split (the split's first).")
_ODE_STEPS = flags.DEFINE_integer("ode_steps", 20, "ODE steps per image.")
_CFG = flags.DEFINE_float("cfg", 2.0, "Classifier-free guidance weight.")
_SOLVER = flags.DEFINE_enum("solver", "euler", ["euler", "heun"],
                            "ODE solver (Heun: 2 velocity evaluations per step).")
_JSON = flags.DEFINE_string("json_out", None, "Write the results here.")
_PARAMS = flags.DEFINE_enum("params", "auto", ["auto", "ema", "raw"],
                            "Which params: the run's moving average (ema), the raw params, "
                            "or auto (ema when the run kept one).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  loaded = loader.load(_CHECKPOINT.value,
                       ema={"auto": None, "ema": True, "raw": False}[_PARAMS.value])
  steps = ([int(s) for s in _STEPS.value] if _STEPS.value else ocp.CheckpointManager(
      os.path.join(os.path.abspath(_CHECKPOINT.value), "checkpoints")).all_steps())
  captions = {split: evaluate.split_items(loaded.config.data, split, _NUM_GEN.value, 0)
              ["captions"] for split in _SPLITS.value}
  print(f"params: {'moving average' if loaded.ema else 'raw'}", flush=True)
  rows = []
  for step in sorted(steps):
    at_step = loader.at_step(loaded, _CHECKPOINT.value, step)
    row = {"step": step}
    for split, caps in captions.items():
      config = evaluate.evaluation_engine_config(50)
      config.solver = _SOLVER.value
      images = engine_lib.Engine(at_step, config).generate(
          caps, keys=engine_lib.request_keys(0, len(caps)), steps=_ODE_STEPS.value,
          guidance=_CFG.value)
      row[split] = scores.generation_scores(images, caps)
    rows.append(row)
    print(f"step {step}: " + "; ".join(
        f"{s} score {row[s]['score']:.3f} (count {row[s]['count_accuracy']:.2f}, objects "
        f"{row[s]['objects_accuracy']:.2f}, 1 object "
        f"{row[s]['score_by_num_objects'].get('1', float('nan')):.2f}, paired colour "
        f"{row[s]['paired_color_accuracy']:.2f} / shape {row[s]['paired_shape_accuracy']:.2f})"
        for s in captions), flush=True)
    for s in captions:
      print(f"  {s} shapes asked -> drawn: {row[s]['shape_confusion']}", flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"checkpoint": _CHECKPOINT.value, "cfg": _CFG.value,
                 "ode_steps": _ODE_STEPS.value, "solver": _SOLVER.value, "rows": rows},
                f, indent=2)


if __name__ == "__main__":
  app.run(main)
