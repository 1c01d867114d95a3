"""On-disk fixtures of the fine-tuning path, at reduced size: everything a user brings.

* `write_release(dir)`: a reduced JanusFlow release (every component, 2 LLM layers, small
  widths; random bf16 weights in the official safetensors layout) with a `tokenizer.json`
  holding the DeepSeek special-token strings;
* `write_diffusers_vae(dir)`: a random AutoencoderKL of the SDXL layout (4 levels, 8x
  downsampling, narrow) saved by diffusers itself (`save_pretrained`);
* `write_user_data(dir)`: ~20 PNG/JPEG images of mixed sizes with .txt captions, plus one
  corrupt image and one empty caption, a multi-turn LLaVA-style JSON and a text file.

`reduced_model()` is the model config the release matches; `tokens_of(release)` the
special ids of its tokenizer (for `config.tokens`).
"""

import json
import os

import ml_collections
import ml_dtypes
import numpy as np
import tokenizers
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from PIL import Image
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from jf_jax import config_defaults
from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import params_io
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config

# The SDXL-VAE's layout at 1/16 of its widths.
SMALL_SDXL = dict(block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=4)
WORDS = ("red", "blue", "green", "circle", "square", "cat", "dog", "tree", "house", "sky")


def reduced_model() -> ml_collections.ConfigDict:
  """The 1.3B architecture at CPU size: 2 LLM layers, 8x8x4 SDXL latents (64 px images),
  SigLIP at 32 px (16 patches = 16 generation tokens, as REPA's alignment needs)."""
  model = config_defaults.model_tiny()
  model.llm.num_layers = 2
  model.repa.layer = 1
  model.gen_encoder.in_channels = 4
  model.gen_decoder.out_channels = 4
  model.latent_size = 8
  return model


def _corpus() -> list[str]:
  lines = [templates.SYSTEM_PROMPT, "User: what is in the image?\n\nAssistant: a red circle"]
  lines += [f"a {a} {b} next to a {c} {d}" for a, b, c, d in zip(
      WORDS, WORDS[3:] + WORDS[:3], WORDS[5:] + WORDS[:5], WORDS[7:] + WORDS[:7])]
  return lines * 4


def write_tokenizer(directory: str, vocab_size: int = 400) -> str:
  """A byte-level BPE `tokenizer.json` with the DeepSeek special-token strings."""
  specials = [tok_lib.BOS, tok_lib.EOS, tok_lib.PAD, tok_lib.IMAGE, tok_lib.BOI, tok_lib.EOI]
  hf = tokenizers.Tokenizer(models.BPE())
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  hf.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  hf.train_from_iterator(_corpus(), trainer)
  os.makedirs(directory, exist_ok=True)
  hf.save(os.path.join(directory, "tokenizer.json"))
  return directory


def tokens_of(release: str) -> ml_collections.ConfigDict:
  """`config.tokens` for the release's tokenizer (its ids, the generation tag included)."""
  tok = tok_lib.from_checkpoint_dir(release)
  return ml_collections.ConfigDict(dict(**tok.special_ids(), num_special=0))


def write_release(directory: str, model: ml_collections.ConfigDict | None = None,
                  seed: int = 0) -> str:
  """Random bf16 weights of `model` (default `reduced_model()`) in the official layout,
  in two safetensors shards, plus `tokenizer.json`."""
  cfg = model_config.from_config_dict(model or reduced_model())
  expected = convert_hf.expected_official_shapes(cfg, params_io.abstract_params(cfg))
  rng = np.random.default_rng(seed)
  state = {name: (0.05 * rng.standard_normal(shape)).astype(ml_dtypes.bfloat16)
           for name, shape in sorted(expected.items())}
  names = sorted(state)
  for i, part in enumerate((names[::2], names[1::2])):
    convert_hf.save_state_dict({k: state[k] for k in part}, directory,
                               f"model-{i + 1:05d}-of-00002.safetensors")
  write_tokenizer(directory)
  return directory


def write_diffusers_vae(directory: str, seed: int = 0, **sizes) -> TorchAutoencoderKL:
  """A random diffusers AutoencoderKL (every tensor random, norms included), saved with
  `save_pretrained` into `directory`; returns the torch model."""
  sizes = {**SMALL_SDXL, **sizes}
  n = len(sizes["block_out_channels"])
  torch.manual_seed(seed)
  model = TorchAutoencoderKL(
      in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
      up_block_types=("UpDecoderBlock2D",) * n, latent_channels=4,
      scaling_factor=0.13025, **sizes).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
  model.save_pretrained(str(directory), safe_serialization=True)
  return model


def _image(rng, height: int, width: int) -> Image.Image:
  """A smooth colour gradient with a random block (something for the VAE to encode)."""
  yy, xx = np.mgrid[0:height, 0:width]
  base = rng.uniform(0.2, 1.0, 3)
  pixels = np.stack([xx / width * 255 * base[0], yy / height * 255 * base[1],
                     (xx + yy) / (width + height) * 255 * base[2]], -1).astype(np.uint8)
  top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
  pixels[top:top + height // 3, left:left + width // 3] = rng.integers(0, 256, 3)
  return Image.fromarray(pixels)


def write_user_data(directory: str, num_images: int = 20, seed: int = 0) -> dict:
  """Image folder (+ captions), LLaVA JSON and text file; returns their paths and the
  names of the bad examples ('corrupt', 'empty_caption')."""
  rng = np.random.default_rng(seed)
  images = os.path.join(directory, "images")
  os.makedirs(images, exist_ok=True)
  sizes = [(48, 64), (64, 48), (80, 80), (100, 70), (40, 120), (64, 64), (96, 72)]
  for i in range(num_images):
    h, w = sizes[i % len(sizes)]
    ext = ".png" if i % 2 else ".jpg"
    _image(rng, h, w).save(os.path.join(images, f"img{i:02d}{ext}"))
    a, b = rng.choice(WORDS, 2, replace=False)
    with open(os.path.join(images, f"img{i:02d}.txt"), "w") as f:
      f.write(f"a {a} {b}")
  with open(os.path.join(images, "corrupt.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n not really an image")
  with open(os.path.join(images, "corrupt.txt"), "w") as f:
    f.write("a red cat")
  _image(rng, 64, 64).save(os.path.join(images, "empty_caption.png"))
  open(os.path.join(images, "empty_caption.txt"), "w").close()
  conversations = []
  for i in range(num_images // 2):
    turns = [{"from": "human", "value": "<image>\nWhat is in the image?"},
             {"from": "gpt", "value": f"a {WORDS[i % len(WORDS)]} circle"}]
    if i % 2:  # multi-turn
      turns += [{"from": "human", "value": "And its colour?"},
                {"from": "gpt", "value": WORDS[i % 3]}]
    ext = ".png" if (2 * i) % 2 else ".jpg"
    conversations.append({"image": f"images/img{2 * i:02d}{ext}", "conversations": turns})
  llava = os.path.join(directory, "llava.json")
  with open(llava, "w") as f:
    json.dump(conversations, f)
  text = os.path.join(directory, "text.txt")
  with open(text, "w") as f:
    f.write("\n".join(_corpus()[:12]) + "\n")
  return dict(images=images, llava=llava, text=text)
