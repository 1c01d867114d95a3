r"""A tiny image-editing run on the shapes world, scored on held-out test edits by type,
beside the copy-the-source baseline (issue 26's "tiny edit run"; docs/editing.md).

  python benchmarks/edit_tiny.py --workdir /tmp/edit_tiny --steps 400

configs/tiny_shapes.py's model and data (stage 3: everything trains, from scratch) with
batches of edit rows only (`--edit_rows`), then `shapes.edit_eval` on the test split for
each (guidance_text, guidance_image) pair of `--guidance`. Prints one JSON object.
"""

import argparse
import json
import os
import time

from jf_jax import config_defaults
from jf_jax.data import plugins
from jf_jax.inference import loader
from jf_jax.shapes import edit_eval
from jf_jax.train import loop


def run_config(args):
  config = config_defaults.sibling_config(
      os.path.join(os.path.dirname(__file__), "..", "configs", "x.py"), "tiny_shapes")
  config.batch.update(dict(und_rows=0, text_rows=0, gen_rows=args.gen_rows,
                           edit_rows=args.edit_rows))
  if args.pretrain_steps:  # the default job's understanding-tower pre-training, then frozen
    config.stage = 2
    config.model.gen_encoder.channels = 64
    config.encoder_pretrain.update(dict(steps=args.pretrain_steps, batch_size=32,
                                        learning_rate=1.5e-3))
  config.optim.update(dict(learning_rate=args.lr, warmup_steps=50, schedule="cosine",
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
  parser.add_argument("--pretrain_steps", type=int, default=0,
                      help="pre-train the understanding tower first (config.init), then "
                      "train stage 2 with it frozen, as the default job")
  parser.add_argument("--lr", type=float, default=1.5e-3)
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--per_type", type=int, default=40)
  parser.add_argument("--ode_steps", type=int, default=20)
  parser.add_argument("--guidance", default="1,1;2,1.5;3,1.5",
                      help="'text,image;...' guidance pairs to score")
  args = parser.parse_args()
  config = run_config(args)
  t0 = time.time()
  initialise = None
  if args.pretrain_steps:
    initialise = plugins.import_named(config.init, "config.init", "initialise").initialise
  metrics = loop.train(config, args.workdir, initialise=initialise)
  train_s = time.time() - t0
  loaded = loader.load(args.workdir)
  items = edit_eval.split_edits(config.data, "test", args.per_type)
  results = []
  for pair in args.guidance.split(";"):
    g_text, g_image = (float(v) for v in pair.split(","))
    r = edit_eval.evaluate(loaded, items, steps=args.ode_steps, guidance_text=g_text,
                           guidance_image=g_image)
    results.append({k: r[k] for k in ("guidance_text", "guidance_image", "score",
                                      "score_by_type", "object_accuracy", "seconds")})
    copy = r["copy_baseline"]
  print(json.dumps({"train_seconds": round(train_s, 1), "steps": args.steps,
                    "edit_rows": args.edit_rows, "gen_rows": args.gen_rows,
                    "pretrain_steps": args.pretrain_steps, "final_loss": float(metrics["loss"]),
                    "num_edits": len(items), "copy_baseline": copy, "runs": results},
                   indent=1))


if __name__ == "__main__":
  main()
