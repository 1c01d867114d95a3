"""Linear probes of where things are in an understanding tower's features (shapes world).

Position questions ("is the square left of the circle?") stay at chance in every run.
Two things must hold for the LLM to answer them: the tower's features must say which
object sits where, and the LLM must read it. These probes measure the first, on frozen
features of training images (fit) and held-out test images (score), by closed-form ridge
regression onto one-hot targets (argmax = prediction):

  * `patch_column`: each patch's own feature vector [width] -> its column in the patch
    grid. The LLM sees image tokens in raster order with 1-D positions (8 x row + column
    for an 8 x 8 grid), so a token whose content names its column is the easy way in.
  * `object_column`: the whole flattened feature map [patches * width] -> for each of the
    world's 15 objects, the patch column of its centre (scored on the objects present).
    The flattened map gives the probe each patch's position for free, as absolute
    positions would give the LLM: this asks whether the per-patch features say WHICH
    object is there.
  * `left_of`: every ordered pair of objects of a test scene, answered with the
    `object_column` probe's columns (a tie counts as wrong): the position question itself.

`run` probes one tower (params, e.g. a run's frozen `vision_und_enc_model` or
`encoder_pretrain.pretrain`'s result) or, with `encoder_params=None`, the raw pixels
cut into the same patches (a baseline that knows colours and places but not shapes).
`jf_jax/shapes/lab/position_probe.py` is the command line.
"""

from typing import Any, Sequence

import jax
import numpy as np

from jf_jax.data import preprocess
from jf_jax.models import config as model_config
from jf_jax.models import siglip
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world

NUM_OBJECTS = len(shapes_scene.OBJECTS)


def pixel_patches(images: np.ndarray, patch: int) -> np.ndarray:
  """uint8 [n, H, W, 3] -> float32 [n, (H/patch) * (W/patch), patch * patch * 3] in
  [-1, 1], patches in raster order (as the tower's)."""
  n, h, w, c = images.shape
  x = preprocess.to_pixel_latent(images).reshape(n, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), -1)


def tower_features(und_cfg: model_config.SigLIPConfig, encoder_params: Any | None,
                   images: np.ndarray, batch_size: int = 250) -> np.ndarray:
  """uint8 [n, H, W, 3] -> float32 [n, patches, width] features of the tower with
  `encoder_params` (the `vision_und_enc_model` subtree), or pixel patches if None."""
  if encoder_params is None:
    return pixel_patches(images, und_cfg.patch_size)
  encoder = siglip.UnderstandingEncoder(und_cfg)
  apply = jax.jit(lambda p, x: encoder.apply({"params": p}, x))
  out = []
  for lo in range(0, len(images), batch_size):
    x = np.stack([preprocess.und_image(im, und_cfg.image_size)
                  for im in images[lo:lo + batch_size]])
    out.append(np.asarray(apply(encoder_params, x), np.float32))
  return np.concatenate(out)


def object_columns(examples: Sequence[dict], patch: int) -> np.ndarray:
  """int [n, NUM_OBJECTS]: the patch column of each object's centre, -1 if absent."""
  cols = np.full((len(examples), NUM_OBJECTS), -1, np.int64)
  for i, ex in enumerate(examples):
    for obj in shapes_world.scene_of(ex):
      cols[i, shapes_scene.OBJECTS.index((obj.color, obj.shape))] = int(obj.cx // patch)
  return cols


def ridge_fit(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
  """Least squares with an L2 penalty (bias unpenalised): x [n, d], y [n, k] -> [d + 1, k]."""
  mean = x.mean(0)
  xc = (x - mean).astype(np.float64)
  gram = xc.T @ xc + l2 * len(x) * np.eye(x.shape[1])
  w = np.linalg.solve(gram, xc.T @ (y - y.mean(0)))
  return np.concatenate([w, (y.mean(0) - mean @ w)[None]], 0)


def ridge_predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  """[n, d] -> [n, k] scores."""
  return x @ w[:-1] + w[-1]


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
  """int [...] -> float [..., k]; labels < 0 give all zeros."""
  return (labels[..., None] == np.arange(k)).astype(np.float64)


def patch_column_probe(train: np.ndarray, test: np.ndarray, grid: int,
                       l2: float) -> dict:
  """Accuracy of reading each patch's column from its own feature vector.

  Args:
    train, test: [n, grid * grid, width] features.
  """
  cols = np.arange(grid * grid) % grid
  w = ridge_fit(train.reshape(-1, train.shape[-1]),
                _one_hot(np.tile(cols, len(train)), grid), l2)
  acc = {}
  for name, x in (("train", train), ("test", test)):
    pred = ridge_predict(w, x.reshape(-1, x.shape[-1])).argmax(-1)
    acc[name] = float(np.mean(pred == np.tile(cols, len(x))))
  return acc


def object_column_probe(train: np.ndarray, train_cols: np.ndarray, test: np.ndarray,
                        test_cols: np.ndarray, grid: int, l2: float) -> dict:
  """Column of every present object from the flattened feature map, and the left/right
  order of every ordered pair of objects in a test scene from those columns.

  Args:
    train, test: [n, patches, width] features; train_cols, test_cols: [n, NUM_OBJECTS]
      columns (-1 absent) from `object_columns`.
  Returns:
    {"train", "test": column accuracy over present objects, "test_within_1": off by at
     most one column, "left_of": pair-order accuracy on test scenes, "num_pairs"}.
  """
  flat = lambda x: x.reshape(len(x), -1)
  w = ridge_fit(flat(train), _one_hot(train_cols, grid).reshape(len(train), -1), l2)
  out = {}
  for name, x, cols in (("train", train, train_cols), ("test", test, test_cols)):
    pred = ridge_predict(w, flat(x)).reshape(len(x), NUM_OBJECTS, grid).argmax(-1)
    present = cols >= 0
    out[name] = float(np.mean(pred[present] == cols[present]))
    if name == "test":
      out["test_within_1"] = float(np.mean(np.abs(pred[present] - cols[present]) <= 1))
      right = total = 0
      for p, c in zip(pred, cols):
        objs = np.flatnonzero(c >= 0)
        for a in objs:
          for b in objs:
            if a != b:
              total += 1
              right += int((p[a] < p[b]) == (c[a] < c[b]) and p[a] != p[b])
      out["left_of"] = right / max(total, 1)
      out["num_pairs"] = total
  return out


def load_split(data_cfg: Any, split: str, limit: int) -> tuple[np.ndarray, list[dict]]:
  """(uint8 images [n, H, W, 3], examples) of the first `limit` examples of a split."""
  source = shapes_world.load(data_cfg.data_dir, **shapes_world.config_kwargs(data_cfg))[split]
  examples = [source[i] for i in range(min(limit, len(source)))]
  return np.stack([ex["image"] for ex in examples]), examples


def run(config: Any, encoder_params: Any | None, num_train: int = 8000,
        num_test: int = 1000, l2: float = 1e-3) -> dict:
  """All three probes of one tower (or of pixels, `encoder_params=None`) on the config's
  shapes world: fit on the first `num_train` training images, scored on the first
  `num_test` test images (every one holds a held-out object pair)."""
  und_cfg = model_config.from_config_dict(config.model).und_encoder
  patch = und_cfg.patch_size
  grid = und_cfg.image_size // patch
  feats, cols = {}, {}
  for split, limit in (("train", num_train), ("test", num_test)):
    images, examples = load_split(config.data, split, limit)
    feats[split] = tower_features(und_cfg, encoder_params, images)
    cols[split] = object_columns(examples, patch)
  return {
      "patch_column": patch_column_probe(feats["train"], feats["test"], grid, l2),
      "object_column": object_column_probe(feats["train"], cols["train"], feats["test"],
                                            cols["test"], grid, l2),
      "grid": grid, "num_train": len(feats["train"]), "num_test": len(feats["test"]),
  }
