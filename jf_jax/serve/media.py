"""Images in and out: `data:` URLs (PNG/JPEG/WebP, base64) -> uint8 arrays, arrays -> PNG.

Only `data:` URLs are read, so no request can make the server fetch a URL or open a
local file. The pixel count is checked from the header before anything is decoded.
"""

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

from jf_jax.serve import errors

FORMATS = {"PNG", "JPEG", "WEBP"}
_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+)?(;[^,]*)?;base64,(.*)$", re.DOTALL)


def decode_data_url(url: str, field: str, max_pixels: int) -> np.ndarray:
  """uint8 [H, W, 3] from a base64 `data:` URL; ApiError (400 / 413) naming `field`."""
  if not url.startswith("data:"):
    raise errors.ApiError(400, f"{field}: only data: URLs are accepted (base64 PNG, JPEG "
                          "or WebP); the server fetches no URL and reads no file", field)
  match = _DATA_URL.match(url)
  if match is None:
    raise errors.ApiError(400, f"{field}: not a base64 data: URL "
                          "('data:image/png;base64,...')", field)
  try:
    raw = base64.b64decode(match.group(3), validate=True)
  except (binascii.Error, ValueError) as e:
    raise errors.ApiError(400, f"{field}: invalid base64 ({e})", field) from e
  try:
    with Image.open(io.BytesIO(raw)) as image:
      if image.format not in FORMATS:
        raise errors.ApiError(400, f"{field}: {image.format} images are not accepted "
                              f"(PNG, JPEG or WebP)", field)
      width, height = image.size
      if width * height > max_pixels:
        raise errors.ApiError(413, f"{field}: image of {width}x{height} pixels is over the "
                              f"limit of {max_pixels} pixels", field)
      return np.asarray(image.convert("RGB"))
  except errors.ApiError:
    raise
  except Exception as e:  # PIL raises many types for corrupt data
    raise errors.ApiError(400, f"{field}: the image could not be decoded ({e})", field) from e


def png_base64(image: np.ndarray) -> str:
  """uint8 [H, W, 3] -> base64 PNG (no data: prefix, as OpenAI's b64_json)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return base64.b64encode(buffer.getvalue()).decode("ascii")


def from_png_base64(text: str) -> np.ndarray:
  """The inverse of `png_base64` (clients, tests)."""
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))
