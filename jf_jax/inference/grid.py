"""Images -> one PNG grid (sample.py's output, the shapes world's sample sheets).

`save_labelled_grid` (sample.py) also upscales small tiles (nearest neighbour, to at least
`min_tile` px) and writes a sidecar JSON next to the PNG naming each tile's prompt.
"""

import io
import json
import math
import os
from typing import Any, Sequence

from etils import epath
import numpy as np
from PIL import Image

from jf_jax.data import storage


def save_grid(images: np.ndarray, path: str, scale: int = 1, gap: int = 0) -> None:
  """uint8 [n, H, W, 3] -> one PNG of ceil(sqrt(n)) columns, row-major.

  `gap` white pixels follow every tile (right and below); the grid is then upscaled
  `scale` times (nearest neighbour, for tiny images).
  """
  n, h, w, _ = images.shape
  cols = math.ceil(math.sqrt(n))
  grid = np.full((math.ceil(n / cols) * (h + gap), cols * (w + gap), 3), 255, np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, cols)
    grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
  out = io.BytesIO()
  Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                               Image.NEAREST).save(out, format="PNG")
  if not storage.is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  epath.Path(path).write_bytes(out.getvalue())  # local or gs:// (`data/storage.py`)



def upscale_factor(tile: int, min_tile: int) -> int:
  """The smallest whole factor that brings a `tile`-px image to at least `min_tile` px."""
  return max(1, math.ceil(min_tile / tile))


def sidecar_path(path: str) -> str:
  """grid.png -> grid.json."""
  return os.path.splitext(path)[0] + ".json"


def save_labelled_grid(images: np.ndarray, prompts: Sequence[str], path: str,
                       min_tile: int = 256, extra: dict[str, Any] | None = None) -> str:
  """`save_grid` with tiles upscaled to >= `min_tile` px, plus a sidecar JSON: per tile
  its index, row, column and prompt (and `extra`, e.g. the sampling settings). Returns
  the JSON's path."""
  n, h, w, _ = images.shape
  if len(prompts) != n:
    raise ValueError(f"{n} images but {len(prompts)} prompts")
  scale = upscale_factor(min(h, w), min_tile)
  save_grid(images, path, scale=scale)
  cols = math.ceil(math.sqrt(n))
  tiles = [{"index": i, "row": i // cols, "column": i % cols, "prompt": prompt}
           for i, prompt in enumerate(prompts)]
  sidecar = sidecar_path(path)
  epath.Path(sidecar).write_text(json.dumps(
      {"image": os.path.basename(path), "tile_pixels": [h * scale, w * scale],
       "generated_pixels": [h, w], "upscale": scale, "columns": cols,
       **(extra or {}), "tiles": tiles}, indent=2))
  return sidecar
