r"""Samples from a JanusFlow checkpoint: text-to-image grids and answers about images.

Text to image (writes a PNG grid of --num images):
  python sample.py --checkpoint /ckpt/jf_1p3b --vae /ckpt/sdxl-vae \
      --prompt "a red fox in the snow" --out grid.png --num 4 --steps 30 --cfg 2.0 --seed 0
Image understanding (prints the answer):
  python sample.py --checkpoint /ckpt/jf_1p3b --image cat.png --question "What is this?"
Image editing (a model trained with edit rows, docs/editing.md; writes the edited image,
or a grid of --num edits when --num is given):
  python sample.py --checkpoint /runs/edit --image IN.png --prompt "make the red circle blue" \
      --out OUT.png --guidance_text 2.0 --guidance_image 1.5

--checkpoint is either a params directory written by `python -m jf_jax.convert` (params/
+ model.json) or a training workdir (checkpoints/; its latest step's params and config, or
those of --step N).
The model config comes from the checkpoint unless --config is given. The tokenizer is the
checkpoint directory's `tokenizer.json` (or --tokenizer DIR, e.g. the official
JanusFlow-1.3B download), else the one the run's config names (e.g. the shapes world's
word-level tokenizer). The image decoder is the SDXL-VAE from --vae (diffusers layout) or
DIR/vae; a pixel-space model (`data.gen_space='pixel'` in its run config or its params
dir's generation.json) needs none. Loading: `jf_jax/inference/loader.py`; sampling runs on
the inference engine (`jf_jax/inference/engine.py`, the one `python -m jf_jax.serve`
uses): image i of --num starts from the noise of fold_in(key(--seed), i), so it is the
same image the server returns for the same prompt and seed.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
from PIL import Image

from jf_jax import entry_point
from jf_jax.data import preprocess
from jf_jax.data import storage
from jf_jax.data.records import BadExample
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import grid
from jf_jax.inference import loader
from jf_jax.inference import prompts
from jf_jax.sampling import image as image_sampling

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the config stored with the checkpoint).",
    lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params dir or training workdir.",
                                  required=True)
_PROMPT = flags.DEFINE_string("prompt", None, "Text-to-image prompt.")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG grid.")
_NUM = flags.DEFINE_integer("num", 4, "Images to generate (one batch).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 30, "ODE steps.", lower_bound=1)
_CFG = flags.DEFINE_float("cfg", 2.0, "Classifier-free guidance weight w.")
_SOLVER = flags.DEFINE_enum("solver", "euler", image_sampling.SOLVERS, "ODE solver.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the noise / token sampling.")
_IMAGE = flags.DEFINE_string("image", None, "Image to ask about (with --question) or to "
                             "edit (with --prompt, the instruction).")
_GUIDANCE_TEXT = flags.DEFINE_float("guidance_text", 2.0, "Editing: the instruction's "
                                    "guidance weight (InstructPix2Pix's s_T).")
_GUIDANCE_IMAGE = flags.DEFINE_float("guidance_image", 1.5, "Editing: the source image's "
                                     "guidance weight (InstructPix2Pix's s_I).")
_QUESTION = flags.DEFINE_string("question", None, "Question about --image.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 512, "Answer length limit.", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy decoding.", lower_bound=0.0)
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass when sampling, in (0, 1].")
flags.register_validator("top_p", lambda p: 0.0 < p <= 1.0, "--top_p must be in (0, 1]")
_MIN_TILE = flags.DEFINE_integer("min_tile", 256, "Grid tiles smaller than this are upscaled "
                                 "(nearest neighbour) to at least this many px.", lower_bound=1)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Directory with tokenizer.json.")
_STEP = flags.DEFINE_integer("step", None, "Training step of a workdir --checkpoint to read "
                             "(default its latest checkpoint).", lower_bound=0)
_EMA = flags.DEFINE_bool("ema", None, "Sample with the run's moving average of the params "
                         "(default: when the run kept one, train.ema_decay > 0); --noema "
                         "reads the raw params.")
_VAE = flags.DEFINE_string("vae", None, "SDXL-VAE weights (diffusers dir or file); "
                           "pixel-space models need none.")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"],
                              "Weight-only quantization of the LLM's kernels (Qwix PTQ, "
                              "done once at load).")


def check_image(path: str) -> None:
  """Raises a one-line error naming --image if it is missing or not a decodable image."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--image={path} does not exist")
  try:
    preprocess.load_image(path)
  except BadExample as e:
    raise ValueError(f"--image={path} is not a readable image ({e})") from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  generating = _PROMPT.value is not None
  editing = generating and _IMAGE.value is not None
  if generating == (_QUESTION.value is not None) or (generating and not editing and
                                                       _IMAGE.value is not None):
    raise app.UsageError("give --prompt (text to image), --image and --prompt (editing) "
                         "or --image and --question (understanding)")
  if not generating and _IMAGE.value is None:
    raise app.UsageError("understanding needs both --image and --question")
  if _IMAGE.value is not None:  # before the checkpoint loads: a bad image fails at once
    check_image(_IMAGE.value)
  t0 = time.time()
  loaded = loader.load(_CHECKPOINT.value, config=_CONFIG.value, tokenizer=_TOKENIZER.value,
                       vae=_VAE.value, image_decoder=generating, step=_STEP.value,
                       ema=_EMA.value, quantize=_QUANTIZE.value)
  engine_config = engine_lib.default_config()
  engine_config.solver = _SOLVER.value
  engine = engine_lib.Engine(loaded, engine_config)
  at = f" (step {loaded.step})" if loaded.step is not None else ""
  print(f"loaded {storage.absolute(_CHECKPOINT.value)}{at} in {time.time() - t0:.1f}s",
        flush=True)
  prompts.warn_unknown_words(loaded.tok, [_PROMPT.value if generating else _QUESTION.value])
  t0 = time.time()
  if editing:
    _edit(engine, loaded, t0)
  elif generating:
    print(f"sampling {_NUM.value} image(s), {_STEPS.value} {_SOLVER.value} steps, cfg "
          f"{_CFG.value} (the first call compiles)...", flush=True)
    images = engine.generate([_PROMPT.value] * _NUM.value,
                             keys=engine_lib.request_keys(_SEED.value, _NUM.value),
                             steps=_STEPS.value, guidance=_CFG.value)
    print(f"sampled in {time.time() - t0:.1f}s", flush=True)
    sidecar = grid.save_labelled_grid(
        images, [_PROMPT.value] * _NUM.value, _OUT.value, min_tile=_MIN_TILE.value,
        extra=dict(checkpoint=storage.absolute(_CHECKPOINT.value), step=loaded.step,
                   steps=_STEPS.value, cfg=_CFG.value, solver=_SOLVER.value, seed=_SEED.value))
    print(f"wrote {storage.absolute(_OUT.value)} (tiles labelled in {sidecar})", flush=True)
  else:
    answer, = engine.answer(
        [_IMAGE.value], [_QUESTION.value], keys=engine_lib.request_keys(_SEED.value, 1),
        max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value, top_p=_TOP_P.value)
    print(f"decoded the answer in {time.time() - t0:.1f}s (includes compile)", flush=True)
    print(answer.text)


def _edit(engine, loaded, t0) -> None:
  """--image edited by --prompt: OUT is the edited image, or a grid of --num edits."""
  num = _NUM.value if flags.FLAGS["num"].present else 1
  print(f"editing {_IMAGE.value}: {num} image(s), {_STEPS.value} {_SOLVER.value} steps, "
        f"guidance text {_GUIDANCE_TEXT.value} image {_GUIDANCE_IMAGE.value} (the first "
        "call compiles)...", flush=True)
  images = engine.edit([_IMAGE.value] * num, [_PROMPT.value] * num,
                       keys=engine_lib.request_keys(_SEED.value, num), steps=_STEPS.value,
                       guidance_text=_GUIDANCE_TEXT.value, guidance_image=_GUIDANCE_IMAGE.value)
  print(f"edited in {time.time() - t0:.1f}s", flush=True)
  if num == 1:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    Image.fromarray(images[0]).save(_OUT.value)
    print(f"wrote {storage.absolute(_OUT.value)}", flush=True)
    return
  sidecar = grid.save_labelled_grid(
      images, [_PROMPT.value] * num, _OUT.value, min_tile=_MIN_TILE.value,
      extra=dict(checkpoint=storage.absolute(_CHECKPOINT.value), step=loaded.step,
                 source=os.path.abspath(_IMAGE.value), steps=_STEPS.value,
                 guidance_text=_GUIDANCE_TEXT.value, guidance_image=_GUIDANCE_IMAGE.value,
                 solver=_SOLVER.value, seed=_SEED.value))
  print(f"wrote {storage.absolute(_OUT.value)} (tiles labelled in {sidecar})", flush=True)


if __name__ == "__main__":
  entry_point.run_absl(main)
