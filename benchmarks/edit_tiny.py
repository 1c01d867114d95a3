r"""A tiny image-editing run on the shapes world, scored on held-out test edits by type,
beside the copy-the-source baseline (issue 26's "tiny edit run"; docs/editing.md).

  python benchmarks/edit_tiny.py --workdir /tmp/edit_tiny --steps 400
  python benchmarks/edit_tiny.py --workdir /tmp/edit_ft --init_from /work/runs/seed0 \
      --steps 4000 --edit_rows 12 --gen_rows 4

Without `--init_from`: configs/tiny_shapes.py's model and data (stage 3: everything
trains, from scratch; `--pretrain_steps` pre-trains the understanding tower first). With
`--init_from WORKDIR` (a finished `python train.py` workdir, configs/default.py): that
config, every param (understanding tower, LLM, generation encoder/decoder) read from the
workdir's latest checkpoint (`config.train.init_params_from`), stage 2 as the default
(the understanding tower stays frozen), fresh optimiser state. Batches of `--edit_rows`
edit rows (+ `--gen_rows` text-to-image, `--und_rows` understanding rows), then, on the
test split's held-out edits, the diagnostic table (`shapes.edit_eval`): per edit type

  (a) the edits, for each (guidance_text, guidance_image) pair of `--guidance`;
  (b) text-to-image from the target scene's caption, same checkpoint (the drawing ceiling);
  (c) copying the source (the baseline);
  (d) exact-match answers to the source scene's questions (does the model read it?);

and the share of edit outputs that are the source scene unchanged. Prints the table and
one JSON object.
"""

import argparse
import json
import os
import time

from jf_jax import config_defaults
from jf_jax.data import plugins
from jf_jax.inference import loader
from jf_jax.shapes import edit_eval
from jf_jax.shapes import edits
from jf_jax.shapes import scores
from jf_jax.train import loop


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def default_config(init_from: str):
  """configs/default.py as the workdir `init_from` ran it (its seed), starting from its
  latest params; a workdir of another model is a one-line error."""
  saved, _ = loader.load_config(init_from)
  config = config_defaults.sibling_config(os.path.join(CONFIGS, "x.py"), "default")
  if saved.model.to_dict() != config.model.to_dict():
    raise SystemExit(f"--init_from {init_from}: its model config is not configs/default.py's")
  config.seed = saved.seed
  config.train.init_params_from = os.path.abspath(init_from)
  config.init = ""  # the params come from the workdir, the tower pre-training included
  config.after_training = ""
  config.batch.switch.step = 0  # one mixture throughout (the rows below)
  return config


def run_config(args):
  if args.init_from:
    config = default_config(args.init_from)
  else:
    config = config_defaults.sibling_config(os.path.join(CONFIGS, "x.py"), "tiny_shapes")
  config.batch.update(dict(und_rows=args.und_rows, text_rows=0, gen_rows=args.gen_rows,
                           edit_rows=args.edit_rows))
  if args.pretrain_steps:  # the default job's understanding-tower pre-training, then frozen
    config.stage = 2
    config.model.gen_encoder.channels = 64
    config.encoder_pretrain.update(dict(steps=args.pretrain_steps, batch_size=32,
                                        learning_rate=1.5e-3))
  config.optim.update(dict(learning_rate=args.lr, warmup_steps=args.warmup, schedule="cosine",
                           end_learning_rate=1e-5))
  config.model.gen_decoder.prediction = "data"  # as the default job (x-prediction)
  config.loss.update(dict(t_loc=-1.0, repa_weight=0.0))
  config.train.update(dict(num_steps=args.steps, log_every=100,
                           checkpoint_every=args.steps, keep_checkpoints=1))
  if args.data_dir:
    config.data.data_dir = args.data_dir
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--edit_rows", type=int, default=16)
  parser.add_argument("--gen_rows", type=int, default=0,
                      help="text-to-image rows beside the edit rows (they teach drawing)")
  parser.add_argument("--und_rows", type=int, default=0)
  parser.add_argument("--init_from", default="",
                      help="a finished `python train.py` workdir (configs/default.py) to "
                      "start from: all of its latest params")
  parser.add_argument("--warmup", type=int, default=50)
  parser.add_argument("--text_guidance", type=float, default=2.0,
                      help="guidance of the text-to-image ceiling (b), as the default's eval")
  parser.add_argument("--pretrain_steps", type=int, default=0,
                      help="pre-train the understanding tower first (config.init), then "
                      "train stage 2 with it frozen, as the default job")
  parser.add_argument("--lr", type=float, default=1.5e-3)
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--per_type", type=int, default=40)
  parser.add_argument("--ode_steps", type=int, default=20)
  parser.add_argument("--guidance", default="1,1;2,1.5;3,1.5",
                      help="'text,image;...' guidance pairs to score")
  parser.add_argument("--no_reading", action="store_true",
                      help="skip (d), the source-scene questions")
  parser.add_argument("--score_only", action="store_true",
                      help="score WORKDIR as it is (no training)")
  args = parser.parse_args()
  if args.init_from:  # its workdir's params hold the pre-trained tower already
    args.pretrain_steps = 0
  config = run_config(args)
  t0 = time.time()
  metrics = {}
  if not args.score_only:
    initialise = None
    if args.pretrain_steps:
      initialise = plugins.import_named(config.init, "config.init", "initialise").initialise
    metrics = loop.train(config, args.workdir, initialise=initialise)
  train_s = time.time() - t0
  out = {"train_seconds": round(train_s, 1), "steps": args.steps,
         "edit_rows": args.edit_rows, "gen_rows": args.gen_rows, "und_rows": args.und_rows,
         "init_from": args.init_from, "pretrain_steps": args.pretrain_steps,
         "final_loss": float(metrics["loss"]) if metrics else None}
  out.update(score(args, config))
  print(table(out), flush=True)
  print(json.dumps(out, indent=1))


def score(args, config) -> dict:
  """The diagnostic (module docstring) on the test split's held-out edits."""
  engine = edit_eval.make_engine(loader.load(args.workdir))
  items = edit_eval.split_edits(config.data, "test", args.per_type)
  out, t0 = {"num_edits": len(items), "runs": []}, time.time()
  for pair in args.guidance.split(";"):
    g_text, g_image = (float(v) for v in pair.split(","))
    r = edit_eval.evaluate(engine, items, steps=args.ode_steps, guidance_text=g_text,
                           guidance_image=g_image)
    out["runs"].append({k: r[k] for k in ("guidance_text", "guidance_image", "score",
                                          "score_by_type", "object_accuracy", "copied",
                                          "seconds")})
    out["copy_baseline"] = r["copy_baseline"]
  out["drawing_ceiling"] = edit_eval.drawing_ceiling(engine, items, steps=args.ode_steps,
                                                     guidance=args.text_guidance)
  if not args.no_reading:
    out["source_reading"] = edit_eval.source_reading(engine, items)
  out["score_seconds"] = round(time.time() - t0, 1)
  return out


def table(out: dict) -> str:
  """The diagnostic as a markdown table: one row per measurement, columns by edit type."""
  kinds = edits.EDIT_TYPES
  head = ("| measurement | overall | " + " | ".join(kinds) + " | object accuracy |\n|---|"
          + "---|" * (len(kinds) + 2))
  fmt = lambda v: "-" if v is None else f"{v:.3f}"

  def row(name, overall, by_type, extra=None):
    return (f"| {name} | {fmt(overall)} | "
            + " | ".join(fmt(by_type.get(k)) for k in kinds) + f" | {fmt(extra)} |")

  lines = [head]
  for r in out["runs"]:
    lines.append(row(f"(a) edit, guidance {r['guidance_text']:g}, {r['guidance_image']:g}",
                     r["score"], r["score_by_type"], r["object_accuracy"]))
  c = out["drawing_ceiling"]
  lines.append(row(f"(b) text-to-image of the target caption, guidance {c['guidance']:g}",
                   c["score"], c["score_by_type"], c["object_accuracy"]))
  c = out["copy_baseline"]
  lines.append(row("(c) copy the source", c["score"], c["score_by_type"], c["object_accuracy"]))
  if "source_reading" in out:
    c = out["source_reading"]
    lines.append(row("(d) source-scene questions, exact match", c["exact_match"], c["by_type"]))
  for r in out["runs"]:
    lines.append(row(f"edit outputs that are the source unchanged, guidance "
                     f"{r['guidance_text']:g}, {r['guidance_image']:g}", r["copied"]["rate"],
                     r["copied"]["by_type"]))
  if "source_reading" in out:
    lines.append("\n(d) by question: " + scores.format_rates(
        out["source_reading"]["by_question"], 3))
  return "\n".join(lines)


if __name__ == "__main__":
  main()
