"""Images -> one PNG grid (sample.py's output, the shapes world's sample sheets)."""

import io
import math
import os

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
