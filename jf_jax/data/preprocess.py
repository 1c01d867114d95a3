"""Image preprocessing for both encoders, and the checks that reject bad images.

* Understanding (SigLIP, as the official code): resize the long side to S (bicubic,
  antialiased), pad to S x S centred with grey 127 (= 255 * mean), then (x / 255 - 0.5) / 0.5.
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

MIN_SIZE = 14  # the official processor's minimum side


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
  if min(image.shape[:2]) < MIN_SIZE:
    raise BadExample("wrong_size", f"{image.shape[:2]} is smaller than {MIN_SIZE} px")
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


def pad_to_square(image: np.ndarray, size: int, fill: int = 127) -> np.ndarray:
  """Long side to `size`, then centred on a `fill` square (official VLMImageProcessor)."""
  h, w = image.shape[:2]
  scale = size / max(h, w)
  nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
  out = np.full((size, size, 3), fill, np.uint8)
  top, left = (size - nh) // 2, (size - nw) // 2
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



