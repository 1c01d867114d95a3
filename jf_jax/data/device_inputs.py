"""The batch's images as the model sees them: uint8 pixels -> float32, on the accelerator.

The input pipeline ships images as uint8 (`layout.py`): 4x less to build, copy out of a
loader worker and send to the devices than float32. The jitted train step calls
`normalize(batch)` first, which applies the same functions the host used to apply
(`preprocess.siglip_normalize`, `preprocess.to_pixel_latent`: they work on numpy and jax
arrays alike), so the values are exactly the host-side float32 ones.
"""

import numpy as np

from jf_jax.data import preprocess

# Batch key -> its uint8 -> float32 normalisation.
NORMALIZERS = {
    "und_images": preprocess.siglip_normalize,  # [und_rows, 1, S, S, 3]
    "gen_pixels": preprocess.to_pixel_latent,   # [gen_rows, P, P, 3] in [-1, 1]
    "edit_images": preprocess.siglip_normalize,  # the edit rows' sources, as und_images
    "edit_pixels": preprocess.to_pixel_latent,   # their targets, as gen_pixels
}


def normalize(batch: dict) -> dict:
  """A copy of `batch` with its uint8 image keys as float32 model inputs, same shapes.

  Keys that are already floating point (batches built by hand) pass through unchanged,
  as does everything else.
  """
  return {k: NORMALIZERS[k](v) if k in NORMALIZERS and v.dtype == np.uint8 else v
          for k, v in batch.items()}
