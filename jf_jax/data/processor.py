"""Record -> training row: tokens and masks (`packing.py`) plus the images both encoders see.

`RowBuilder.build(task, record)` returns one row of the task's `layout.py` keys without the
task prefix (und: ids, images [1, S, S, 3], image_mask, valid, targets, weights; text: ids,
valid, targets, weights; gen: prompt_ids, prompt_mask, pixels [P, P, 3]; edit:
prompt_ids, prompt_mask, image_mask, images [1, S, S, 3] (the source, as und rows
carry theirs), pixels [P, P, 3] (the edited image, as gen rows carry theirs)) or raises
`BadExample`. S = `model.und_encoder.image_size`; P = the generation space's pixel size
(`models/latent_space.py`: the image itself in pixel space, 384 for the release's
SDXL-VAE): the image resized (short side) and centre-cropped to P. Images stay uint8
pixels (SigLIP's grey-padded square, the centre crop): the train step normalises them on
the accelerators (`device_inputs.py`), encodes them into the flow's latents and derives
SigLIP's REPA input from the same crop (`train/latents.py`).
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

  def __init__(self, tok: tok_lib.Tokenizer, config: Any, cfg: JanusFlowConfig,
               pixel_size: int):
    """`pixel_size`: P of the run's `LatentSpace`."""
    data = config.data
    self.tok, self.cfg, self.pixel_size = tok, cfg, pixel_size
    self.und_size = cfg.und_encoder.image_size
    self.num_patches = cfg.num_und_tokens - 1
    self.seq = {"und": config.batch.und_seq_len, "text": config.batch.text_seq_len,
                "gen": config.batch.gen_prompt_len,
                "edit": layout.edit_prompt_len(config.batch)}
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
      row["pixels"] = preprocess.center_crop(self._image(record.get("image")),
                                             self.pixel_size)
      return row
    if task == "edit":
      row = packing.pack_edit(self.tok, as_text(record.get("instruction")), self.num_patches,
                              self.seq["edit"])
      row["images"] = preprocess.pad_to_square(self._image(record.get("image")),
                                               self.und_size)[None]
      row["pixels"] = preprocess.center_crop(self._image(record.get("target")),
                                             self.pixel_size)
      return row
    raise ValueError(f"unknown task {task!r}")

  def padding(self, task: str) -> dict[str, np.ndarray]:
    """The zero-weight row that replaces a skipped example (black images)."""
    row = packing.padding_row(task, self.tok, self.seq[task])
    s, p = self.und_size, self.pixel_size
    if task in ("und", "edit"):
      row["images"] = np.zeros((1, s, s, 3), np.uint8)
    if task in ("gen", "edit"):
      row["pixels"] = np.zeros((p, p, 3), np.uint8)
    return row
