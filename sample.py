r"""Samples from a JanusFlow checkpoint: text-to-image grids and answers about images.

Text to image (writes a PNG grid of --num images):
  python sample.py --checkpoint /ckpt/jf_1p3b --vae /ckpt/sdxl-vae \
      --prompt "a red fox in the snow" --out grid.png --num 4 --steps 30 --cfg 2.0 --seed 0
Image understanding (prints the answer):
  python sample.py --checkpoint /ckpt/jf_1p3b --image cat.png --question "What is this?"

--checkpoint is either a params directory written by `python -m jf_jax.convert` (params/
+ model.json) or a training workdir (checkpoints/; its latest step's params and config).
The model config comes from the checkpoint unless --config is given. The tokenizer is the
checkpoint directory's `tokenizer.json` (or --tokenizer DIR, e.g. the official
JanusFlow-1.3B download); a training run on the built-in shapes data uses its word-level
tokenizer. The image decoder is the SDXL-VAE from --vae (diffusers layout) or DIR/vae; a
pixel-space model (config `vae.kind='identity'` or `data.gen_space='pixel'`, or
--vae=identity) needs none.
"""

import json
import math
import os
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax.checkpoint import vae_map
from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import vae as vae_lib
from jf_jax.sampling import common
from jf_jax.sampling import image as image_sampling
from jf_jax.sampling import text as text_sampling

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the config stored with the checkpoint).",
    lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params dir or training workdir.",
                                  required=True)
_PROMPT = flags.DEFINE_string("prompt", None, "Text-to-image prompt.")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG grid.")
_NUM = flags.DEFINE_integer("num", 4, "Images to generate (one batch).")
_STEPS = flags.DEFINE_integer("steps", 30, "ODE steps.")
_CFG = flags.DEFINE_float("cfg", 2.0, "Classifier-free guidance weight w.")
_SOLVER = flags.DEFINE_enum("solver", "euler", image_sampling.SOLVERS, "ODE solver.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the noise / token sampling.")
_IMAGE = flags.DEFINE_string("image", None, "Image to ask about.")
_QUESTION = flags.DEFINE_string("question", None, "Question about --image.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 512, "Answer length limit.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy decoding.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass when sampling.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Directory with tokenizer.json.")
_VAE = flags.DEFINE_string("vae", None, "SDXL-VAE weights (diffusers dir or file), or "
                           "'identity' for a pixel-space model.")


# ------------------------------------------------------------------ checkpoint loading
def _kind(checkpoint: str) -> str:
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f"--checkpoint={checkpoint} does not exist")
  if os.path.isdir(os.path.join(checkpoint, "params")):
    return "params"
  if os.path.isdir(os.path.join(checkpoint, "checkpoints")):
    return "workdir"
  raise FileNotFoundError(
      f"--checkpoint={checkpoint} holds neither a params checkpoint (params/, from "
      "`python -m jf_jax.convert`) nor a training run (checkpoints/, from train.py)")


def load_run_config(checkpoint: str, config=None) -> ml_collections.ConfigDict:
  """The run's config: --config, else what the checkpoint stores (model only for params)."""
  if config is not None:
    return config
  if _kind(checkpoint) == "params":
    path = os.path.join(checkpoint, "model.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing; pass --config")
    with open(path) as f:
      return ml_collections.ConfigDict({"model": json.load(f)})
  directory = os.path.join(checkpoint, "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data", "config"))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {directory}")
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored.config)


def load_params(checkpoint: str, cfg: model_config.JanusFlowConfig) -> Any:
  """Params on the default device, floating leaves in the compute dtype."""
  abstract = params_io.abstract_params(cfg)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: sharding, abstract)
  if _kind(checkpoint) == "params":
    params = params_io.load_params(checkpoint, ckpt.with_shardings(abstract, shardings))
  else:
    params = ckpt.restore_params(checkpoint, abstract, shardings)
  return common.cast_floating(params, cfg.dtype)


def load_tokenizer(checkpoint: str, config, override: str | None = None
                   ) -> tok_lib.Tokenizer:
  """The checkpoint's tokenizer.json (or `override`), else the shapes run's tokenizer."""
  path = override or checkpoint
  if os.path.exists(os.path.join(path, "tokenizer.json")) or path.endswith(".json"):
    return tok_lib.from_checkpoint_dir(path)
  data = config.get("data") or {}
  if data.get("tokenizer") == "shapes":
    return tok_lib.shapes_tokenizer(config.tokens)
  raise FileNotFoundError(
      f"no tokenizer.json in {path}; pass --tokenizer DIR (e.g. the official "
      "deepseek-ai/JanusFlow-1.3B download) or copy its tokenizer.json there")


def load_image_decoder(config, cfg: model_config.JanusFlowConfig, checkpoint: str,
                       vae_flag: str | None):
  """(decode_fn(params, latents) -> images in [-1, 1], params) for the sampler."""
  vcfg = vae_lib.config_from_dict(config.vae) if config.get("vae") else None
  pixel_space = (config.get("data") or {}).get("gen_space") == "pixel"
  if vcfg is not None and vcfg.kind == "identity":
    params = {}
  elif vae_flag == "identity" or (vae_flag is None and vcfg is None and pixel_space):
    vcfg = vae_lib.identity_config(latent_channels=cfg.gen_encoder.in_channels)
    params = {}
  else:
    vcfg = vcfg or vae_lib.VAEConfig()
    # --vae, else the run's own config.vae.path (a latent-space run), else DIR/vae.
    path = vae_flag or (config.get("vae") or {}).get("path") or os.path.join(checkpoint, "vae")
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"no VAE at {path}: this model generates SDXL-VAE latents; pass --vae DIR "
          "(stabilityai/sdxl-vae, diffusers layout) or put it in the checkpoint's vae/ "
          "(--vae=identity only for pixel-space models)")
    params = common.cast_floating(jax.device_put(vae_map.load_vae(path, vcfg)), cfg.dtype)
  module = vae_lib.make_vae(vcfg, dtype=cfg.dtype)

  def decode(params, latents):
    z = vae_lib.unscale_latents(latents, vcfg.scaling_factor)
    return module.apply({"params": params}, z, method="decode")
  return decode, params


# ------------------------------------------------------------------------- generation
def prompt_batch(tok: tok_lib.Tokenizer, prompt: str, num: int):
  """[num, Lp] ids and mask: BOS + "User: {prompt}\\n\\nAssistant:" (tag dropped)."""
  ids = np.asarray(packing.gen_prompt_ids(tok, prompt), np.int32)
  return (jnp.asarray(np.broadcast_to(ids, (num, ids.size))),
          jnp.ones((num, ids.size), bool))


def generate(params, cfg, tok, decode_fn, decode_params, prompt: str, num: int, steps: int,
             guidance: float, seed: int, solver: str = "euler") -> np.ndarray:
  """uint8 images [num, H, W, 3] for one prompt."""
  sampler = image_sampling.make_sampler(janusflow.JanusFlow(cfg), pad_id=tok.pad_id,
                                        solver=solver, decode_fn=decode_fn)
  ids, mask = prompt_batch(tok, prompt, num)
  t0 = time.time()
  print(f"sampling {num} image(s), {steps} {solver} steps, cfg {guidance} (the first call "
        "compiles)...", flush=True)
  out = sampler(params, ids, mask, jax.random.key(seed), steps, guidance, decode_params)
  images = np.asarray(jax.device_get(out["images"]))
  print(f"sampled in {time.time() - t0:.1f}s", flush=True)
  return images


def save_grid(images: np.ndarray, path: str) -> None:
  """[n, H, W, 3] uint8 -> one PNG, ceil(sqrt(n)) columns."""
  n, h, w, _ = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.zeros((rows * h, cols * w, 3), np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, cols)
    grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)


# ---------------------------------------------------------------------- understanding
def question_inputs(tok: tok_lib.Tokenizer, cfg, question: str, image: np.ndarray,
                    system_prompt: str = templates.SYSTEM_PROMPT):
  """[1, S] ids/mask/image_mask and [1, 1, S_img, S_img, 3] image for one question.

  Layout (spec C.1): BOS, SYS + "\\n\\nUser: ", BOI, N x placeholder, EOI,
  "\\n" + question + "\\n\\nAssistant:"; the image mask covers BOI and the placeholders.
  """
  ids = [tok.bos_id] + tok.encode(templates.und_prompt(question, system_prompt))
  if ids.count(tok.image_id) != 1:
    raise ValueError(f"the prompt must hold exactly one image tag; got "
                     f"{ids.count(tok.image_id)} (does the question contain one?)")
  at = ids.index(tok.image_id)
  patches = cfg.und_encoder.num_patches
  ids = ids[:at] + [tok.boi_id] + [tok.image_id] * patches + [tok.eoi_id] + ids[at + 1:]
  image_mask = np.zeros((1, len(ids)), bool)
  image_mask[0, at:at + 1 + patches] = True
  pixels = preprocess.und_image(image, cfg.und_encoder.image_size)
  return (jnp.asarray([ids], jnp.int32), jnp.ones((1, len(ids)), bool),
          jnp.asarray(image_mask), jnp.asarray(pixels[None, None]))


def answer(params, cfg, tok, image_path: str, question: str, max_new_tokens: int,
           temperature: float, top_p: float, seed: int,
           system_prompt: str = templates.SYSTEM_PROMPT) -> str:
  """The model's answer to `question` about the image at `image_path`."""
  if not os.path.exists(image_path):
    raise FileNotFoundError(f"--image={image_path} does not exist")
  ids, mask, image_mask, images = question_inputs(
      tok, cfg, question, preprocess.load_image(image_path), system_prompt)
  decoder = text_sampling.make_decoder(janusflow.JanusFlow(cfg),
                                       max_new_tokens=max_new_tokens)
  t0 = time.time()
  tokens, lengths = decoder(params, ids, mask, jax.random.key(seed), tok.eos_id, tok.pad_id,
                            temperature, top_p, images, image_mask)
  n = int(lengths[0])
  print(f"decoded {n} tokens in {time.time() - t0:.1f}s (includes compile)", flush=True)
  return tok.decode(np.asarray(tokens[0, :n]).tolist())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  generating = _PROMPT.value is not None
  if generating == (_IMAGE.value is not None or _QUESTION.value is not None):
    raise app.UsageError("give either --prompt (text to image) or --image and --question")
  if not generating and (_IMAGE.value is None or _QUESTION.value is None):
    raise app.UsageError("understanding needs both --image and --question")
  if generating and (_NUM.value < 1 or _STEPS.value < 1):
    raise app.UsageError(f"--num={_NUM.value} and --steps={_STEPS.value} must be >= 1")
  checkpoint = os.path.abspath(_CHECKPOINT.value)
  config = load_run_config(checkpoint, _CONFIG.value)
  cfg = model_config.from_config_dict(config.model)
  tok = load_tokenizer(checkpoint, config, _TOKENIZER.value)
  decode = load_image_decoder(config, cfg, checkpoint, _VAE.value) if generating else None
  t0 = time.time()
  params = load_params(checkpoint, cfg)
  print(f"loaded params from {checkpoint} in {time.time() - t0:.1f}s", flush=True)
  if generating:
    images = generate(params, cfg, tok, *decode, _PROMPT.value, _NUM.value, _STEPS.value,
                      _CFG.value, _SEED.value, _SOLVER.value)
    save_grid(images, _OUT.value)
    print(f"wrote {os.path.abspath(_OUT.value)}", flush=True)
  else:
    # The official system prompt unless the run trained with another (config.data).
    system_prompt = (config.get("data") or {}).get("system_prompt", templates.SYSTEM_PROMPT)
    print(answer(params, cfg, tok, _IMAGE.value, _QUESTION.value, _MAX_NEW.value,
                 _TEMPERATURE.value, _TOP_P.value, _SEED.value, system_prompt))


if __name__ == "__main__":
  app.run(main)
