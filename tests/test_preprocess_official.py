"""Understanding images are resized and padded exactly as the official processor does.

The official `VLMImageProcessor.resize` (deepseek-ai/Janus,
janus/janusflow/models/image_processing_vlm.py) is not importable here (neither the
`janus` package nor torchvision is a dependency), so `_official_reference` re-derives its
operation order independently from PIL calls, as that code performs them:
torchvision's `resize` of a PIL image with BICUBIC is PIL's `Image.resize((w, h),
BICUBIC)`; the size is `max(int(side / long_side * image_size), min_size)` per side;
`expand2square` pastes onto a new square of the long side's length filled with
`int(255 * mean)` at offset `(long - short) // 2`; then rescale by 1/255 and normalise
with mean = std = 0.5 (SigLIP's). Our `preprocess.und_image` must match it bit for bit.
"""

import numpy as np
import pytest
from PIL import Image

from jf_jax.data import preprocess

SIGLIP_MEAN = (0.5, 0.5, 0.5)


def _official_reference(image: np.ndarray, image_size: int, min_size: int = 14):
  """float32 [S, S, 3]: the official resize -> expand2square -> rescale -> normalise."""
  pil = Image.fromarray(image)
  width, height = pil.size
  max_size = max(width, height)
  size = [max(int(height / max_size * image_size), min_size),
          max(int(width / max_size * image_size), min_size)]
  pil = pil.resize((size[1], size[0]), Image.BICUBIC)
  background = tuple(int(x * 255) for x in SIGLIP_MEAN)
  width, height = pil.size
  if width != height:
    side = max(width, height)
    square = Image.new(pil.mode, (side, side), background)
    square.paste(pil, ((side - width) // 2, (side - height) // 2))
    pil = square
  x = np.asarray(pil).astype(np.float32) * np.float32(1 / 255)
  return (x - np.float32(0.5)) / np.float32(0.5)


def _sizes():
  """(height, width): a sweep of non-square sizes 100-1200 px, the issue's examples and
  images with a side under 14 px (the official code accepts them)."""
  sweep = [(h, w) for h in range(100, 1201, 137) for w in range(100, 1201, 173) if h != w]
  named = [(333, 500), (500, 333), (100, 250), (250, 100), (384, 384), (383, 384),
           (10, 1000), (1000, 10), (5, 40), (13, 13), (1, 300)]
  return sweep + named


@pytest.mark.parametrize("image_size", [384, 32])
def test_und_image_matches_the_official_processor(image_size):
  rng = np.random.default_rng(0)
  mismatched = []
  for h, w in _sizes():
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = preprocess.und_image(image, image_size)
    reference = _official_reference(image, image_size)
    assert ours.shape == reference.shape == (image_size, image_size, 3)
    if not np.allclose(ours, reference, atol=1e-6, rtol=0):
      mismatched.append(((h, w), float(np.abs(ours - reference).max())))
  assert not mismatched, f"differs from the official processor at {mismatched}"


def test_resize_shape_truncates_and_clamps_at_14():
  assert preprocess.square_resize_shape(333, 500, 384) == (255, 384)   # 255.744 -> 255
  assert preprocess.square_resize_shape(500, 333, 384) == (384, 255)
  assert preprocess.square_resize_shape(100, 250, 384) == (153, 384)   # 153.6 -> 153
  assert preprocess.square_resize_shape(10, 1000, 384) == (14, 384)    # 3.84 -> 14


def test_small_images_are_accepted():
  image = preprocess.load_image(np.zeros((5, 40, 3), np.uint8))
  assert preprocess.pad_to_square(image, 32).shape == (32, 32, 3)
  assert preprocess.center_crop(image, 32).shape == (32, 32, 3)
