"""Record -> training row: tokens and masks (`packing.py`) plus the images both encoders see.

`RowBuilder.build(task, record)` returns one row of the task's `layout.py` keys without the
task prefix (und: ids, images [1, S, S, 3], image_mask, valid, targets, weights; text: ids,
valid, targets, weights; gen: prompt_ids, prompt_mask, latents [L, L, C], images
[S, S, 3], or pixels [P, P, 3] in latent space) or raises `BadExample`.
S = `model.und_encoder.image_size`, L = `model.latent_size`. Images stay uint8 pixels
(SigLIP's grey-padded square, the centre crops): the train step normalises them on the
accelerators (`device_inputs.py`).

Generation targets (`config.data.gen_space`):
  * "pixel": the latent is the image itself in [-1, 1], so `model.gen_encoder.in_channels`
    must be 3 and `latent_size` the image size;
  * "sdxl_vae" (the 1.3B model): gen rows carry `pixels` [P, P, 3] instead of `latents`
    and `images`: the image resized (short side) and centre-cropped to P = `latent_size`
    x the VAE's downsample factor (384 for the release). The train step
    encodes them with the frozen SDXL-VAE and derives SigLIP's REPA input from the same
    crop (`train/latents.py`).
"""

from typing import Any

import numpy as np

from jf_jax.data import layout
from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.data import tokenizer as tok_lib
from jf_jax.data.records import as_text
from jf_jax.models.config import JanusFlowConfig


class RowBuilder:
  """Builds rows for one config; all sizes fixed at construction."""

  def __init__(self, tok: tok_lib.Tokenizer, config: Any, cfg: JanusFlowConfig):
    data = config.data
    self.gen_pixels = layout.gen_pixel_size(config, cfg)  # 0: pixel space
    if not self.gen_pixels and cfg.gen_encoder.in_channels != 3 and config.batch.gen_rows:
      raise ValueError("pixel-space generation needs config.model.gen_encoder.in_channels=3 "
                       f"(got {cfg.gen_encoder.in_channels})")
    self.tok, self.cfg = tok, cfg
    self.und_size, self.latent_size = cfg.und_encoder.image_size, cfg.latent_size
    self.num_patches = cfg.num_und_tokens - 1
    self.seq = {"und": config.batch.und_seq_len, "text": config.batch.text_seq_len,
                "gen": config.batch.gen_prompt_len}
    self.system_prompt = data.system_prompt
    self.image_size = None if data.resize_images else data.image_size

  def _image(self, value) -> np.ndarray:
    image = preprocess.load_image(value)
    return image if self.image_size is None else preprocess.check_size(image, self.image_size)

  def build(self, task: str, record: dict) -> dict[str, np.ndarray]:
    if task == "text":
      return packing.pack_text(self.tok, as_text(record.get("text")), self.seq["text"])
    if task == "und":
      turns = [(as_text(q), as_text(a)) for q, a in record.get("turns", ())]
      row = packing.pack_und(self.tok, turns, self.num_patches, self.seq["und"],
                             self.system_prompt)
      row["images"] = preprocess.pad_to_square(self._image(record.get("image")),
                                               self.und_size)[None]
      return row
    if task == "gen":
      row = packing.pack_gen(self.tok, as_text(record.get("caption")), self.seq["gen"])
      image = self._image(record.get("image"))
      if self.gen_pixels:
        row["pixels"] = preprocess.center_crop(image, self.gen_pixels)
        return row
      row["latents"] = preprocess.center_crop(image, self.latent_size)
      row["images"] = preprocess.center_crop(image, self.und_size)
      return row
    raise ValueError(f"unknown task {task!r}")

  def padding(self, task: str) -> dict[str, np.ndarray]:
    """The zero-weight row that replaces a skipped example (black images)."""
    row = packing.padding_row(task, self.tok, self.seq[task])
    s, lat = self.und_size, self.latent_size
    if task == "und":
      row["images"] = np.zeros((1, s, s, 3), np.uint8)
    if task == "gen" and self.gen_pixels:
      row["pixels"] = np.zeros((self.gen_pixels, self.gen_pixels, 3), np.uint8)
    elif task == "gen":
      row["latents"] = np.zeros((lat, lat, self.cfg.gen_encoder.in_channels), np.uint8)
      row["images"] = np.zeros((s, s, 3), np.uint8)
    return row
