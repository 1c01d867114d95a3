r"""`python -m jf_jax.bench`: benchmark sample sets and answer files in the scorers' layouts.

  python -m jf_jax.bench geneval --checkpoint CKPT --vae VAE --out OUT \
      --metadata evaluation_metadata.jsonl [--per_prompt 4]
  python -m jf_jax.bench dpg --checkpoint CKPT --vae VAE --out OUT --prompts DPG/prompts
  python -m jf_jax.bench mjhq --checkpoint CKPT --vae VAE --out OUT --meta meta_data.json
  python -m jf_jax.bench vqa --checkpoint CKPT --out OUT --questions q.jsonl \
      --image_root IMAGES
  python -m jf_jax.bench edit --checkpoint CKPT --out OUT --inputs edits.jsonl \
      [--guidance_text 2.0 --guidance_image 1.5]

Sampling flags: --steps --guidance --solver --seed --batch_per_device --dtype; --step N
reads training step N of a workdir --checkpoint (default its latest). Work is
split over all local devices (or the first --devices) and, with --distributed, over all
processes. Outputs already on disk are skipped (resume); --overwrite regenerates them.
OUT/run.json records the settings. See docs/evaluation.md.
"""

import argparse
import os

from absl import logging
import jax

from jf_jax import entry_point
from jf_jax.bench import dpg
from jf_jax.bench import edit
from jf_jax.bench import geneval
from jf_jax.bench import images
from jf_jax.bench import mjhq
from jf_jax.bench import record
from jf_jax.bench import vqa
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import loader
from jf_jax.sampling import image as image_sampling

IMAGE_TASKS = {"geneval": geneval, "dpg": dpg, "mjhq": mjhq}
TASKS = {**IMAGE_TASKS, "vqa": vqa, "edit": edit}
# Tasks that write images with their own sampling flags (edit: two guidance weights).
EDIT_TASKS = ("edit",)


def _common_arguments() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--checkpoint", required=True,
                      help="params dir (python -m jf_jax.convert) or training workdir")
  common.add_argument("--step", type=int, default=None,
                      help="training step of a workdir --checkpoint (default: its latest)")
  common.add_argument("--out", required=True, help="output folder")
  common.add_argument("--vae", default=None,
                      help="SDXL-VAE (diffusers dir or file); pixel-space models need none")
  common.add_argument("--tokenizer", default=None, help="folder holding tokenizer.json")
  common.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                      help="compute dtype (default: the checkpoint config's)")
  common.add_argument("--quantize", default=None, choices=("int8",),
                      help="weight-only quantization of the LLM's kernels (Qwix PTQ)")
  common.add_argument("--seed", type=int, default=0)
  common.add_argument("--batch_per_device", type=int, default=4,
                      help="prompts (images) or questions per device per call")
  common.add_argument("--devices", type=int, default=None,
                      help="use the first N local devices (default: all)")
  common.add_argument("--distributed", action="store_true",
                      help="jax.distributed.initialize() first (multi-host runs)")
  common.add_argument("--overwrite", action="store_true",
                      help="regenerate outputs already on disk")
  common.add_argument("--stop_after", type=int, default=None,
                      help="stop after this many prompts/questions (resume finishes)")
  return common


def _image_arguments() -> argparse.ArgumentParser:
  sampling = argparse.ArgumentParser(add_help=False)
  sampling.add_argument("--steps", type=int, default=30, help="ODE steps")
  sampling.add_argument("--guidance", "--cfg", type=float, default=2.0,
                        help="classifier-free guidance weight w")
  sampling.add_argument("--solver", default="euler", choices=image_sampling.SOLVERS)
  return sampling


def parse(argv: list[str]) -> argparse.Namespace:
  parser = entry_point.ArgumentParser(prog="python -m jf_jax.bench",
                                   description=__doc__.split("\n\n")[0].strip())
  tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
  common, sampling = _common_arguments(), _image_arguments()
  for name, module in TASKS.items():
    parents = [common, sampling] if name in IMAGE_TASKS else [common]
    sub = tasks.add_parser(name, parents=parents, help=module.HELP)
    module.add_arguments(sub)
  args = parser.parse_args(argv)
  for flag in ("steps", "batch_per_device"):
    if getattr(args, flag, 1) < 1:
      parser.error(f"--{flag}={getattr(args, flag)} must be >= 1")
  if args.step is not None and args.step < 0:
    parser.error(f"--step={args.step} must be >= 0")
  return args


def run(argv: list[str]) -> None:
  """Parses `argv` (without the program name) and runs the task."""
  args = parse(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  if args.distributed:
    jax.distributed.initialize()
  mesh = engine_lib.local_mesh(args.devices)
  task = TASKS[args.task]
  generating = args.task in IMAGE_TASKS or args.task in EDIT_TASKS
  loaded = loader.load(args.checkpoint, tokenizer=args.tokenizer, vae=args.vae,
                       image_decoder=generating, dtype=args.dtype, step=args.step,
                       quantize=args.quantize)
  settings = {"task": args.task, "checkpoint": os.path.abspath(args.checkpoint),
              "checkpoint_step": loaded.step,
              "config_sha256": record.config_hash(loaded.config),
              "dtype": jax.numpy.dtype(loaded.cfg.dtype).name, "quantize": args.quantize,
              "seed": args.seed,
              "batch_per_device": args.batch_per_device, **task.task_settings(args)}
  engine_config = engine_lib.default_config()
  engine_config.batch_buckets = (args.batch_per_device * mesh.size,)
  if generating:
    engine_config.solver = args.solver
  engine = engine_lib.Engine(loaded, engine_config, mesh)
  if args.task in EDIT_TASKS:
    size = engine.image_size
    settings.update(resolution=[size, size], vae=args.vae)
  elif generating:
    sample = images.ImageSettings(args.steps, args.guidance, args.solver, args.seed,
                                  args.batch_per_device)
    size = engine.image_size
    settings.update(solver=args.solver, steps=args.steps, guidance=args.guidance,
                    resolution=[size, size], vae=args.vae)
  else:
    size = loaded.cfg.und_encoder.image_size
    settings.update(resolution=[size, size])
  record.write(args.out, settings, mesh, args.overwrite)
  if generating and args.task not in EDIT_TASKS:
    task.run(args, engine, sample)
  else:
    task.run(args, engine, args.seed)

