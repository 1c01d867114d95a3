"""Image preprocessing for both encoders, and the checks that reject bad images.

* Understanding (SigLIP, exactly as the official `VLMImageProcessor`): scale both sides
  by S / long side, truncated to whole pixels and at least 14 px, resize (PIL bicubic),
  centre on an S x S grey 127 (= int(255 * mean)) square, then (x / 255 - 0.5) / 0.5.
* Generation (training): resize the short side, crop the centre square (the paper
  crops at random; a centre crop keeps the pipeline a pure function of its state). The
  tiny configs generate in pixel space, so the "latent" is that crop scaled to [-1, 1];
  the REPA target (`gen_images`) is the same crop SigLIP-normalised at S.

Every function takes uint8 [H, W, 3] numpy images. The training pipeline stops at the
uint8 resize/pad/crop; the normalisations (`siglip_normalize`, `to_pixel_latent`, uint8
in, float32 out) also accept jax arrays, and the train step applies them on the
accelerators (`device_inputs.py`). Host-side users (inference) call `und_image`.
"""

import io

import numpy as np
from PIL import Image

from jf_jax.data.records import BadExample

MIN_SIZE = 14  # the official processor's smallest resized side (its `min_size`)


def load_image(value) -> np.ndarray:
  """uint8 [H, W, 3] from an array, encoded bytes or a path; raises BadExample."""
  if isinstance(value, np.ndarray):
    image = value
  else:
    try:
      source = io.BytesIO(bytes(value)) if isinstance(value, (bytes, bytearray)) else value
      with Image.open(source) as pil:
        image = np.asarray(pil.convert("RGB"))
    except Exception as e:  # pylint: disable=broad-except  (any decoder failure)
      raise BadExample("undecodable_image", f"{type(e).__name__}: {e}") from e
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
    raise BadExample("undecodable_image", f"array {image.shape} {image.dtype}, expected "
                     "uint8 [H, W, 3]")
  image = image[..., :3]
  if min(image.shape[:2]) < 1:  # any other size resizes (as the official processor)
    raise BadExample("wrong_size", f"image of shape {image.shape[:2]} is empty")
  return image


def check_size(image: np.ndarray, size: int) -> np.ndarray:
  """For sources of fixed-size images: anything else is a bad example."""
  if image.shape[:2] != (size, size):
    raise BadExample("wrong_size", f"image is {image.shape[:2]}, expected {(size, size)}")
  return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def square_resize_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(new height, new width) of the official processor's resize before padding.

  Its expression, in its order: each side divided by the long side, times `size`, then
  truncated (not rounded: a 500x333 image becomes 384x255) and raised to MIN_SIZE.
  """
  long_side = max(height, width)
  return (max(int(height / long_side * size), MIN_SIZE),
          max(int(width / long_side * size), MIN_SIZE))


def pad_to_square(image: np.ndarray, size: int, fill: int = 127) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3]: resized to `square_resize_shape`, then centred
  on a `fill` square (the official `expand2square`: offsets (side - new side) // 2)."""
  nh, nw = square_resize_shape(*image.shape[:2], size)
  side = max(nh, nw)  # = size: the long side scales to exactly size
  out = np.full((side, side, 3), fill, np.uint8)
  top, left = (side - nh) // 2, (side - nw) // 2
  out[top:top + nh, left:left + nw] = _resize(image, nw, nh)
  return out


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Short side to `size`, then the centre size x size square."""
  h, w = image.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image = _resize(image, nw, nh)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


def siglip_normalize(image: np.ndarray) -> np.ndarray:
  """uint8 -> float32 (x / 255 - 0.5) / 0.5 (SigLIP mean = std = 0.5)."""
  return ((image.astype(np.float32) / 255.0) - 0.5) / 0.5


def und_image(image: np.ndarray, size: int) -> np.ndarray:
  """[size, size, 3] float32 SigLIP input for an understanding image."""
  return siglip_normalize(pad_to_square(image, size))


def to_pixel_latent(image: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1]: the pixel-space generation target."""
  return image.astype(np.float32) / 127.5 - 1.0



