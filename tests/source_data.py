"""Source datasets as the tests' users would have them, written by the tests: WebDataset
tars (as img2dataset writes them) and Parquet files (as Hugging Face datasets store
images), each with the bad cases prepare must count:

  corrupt image     -> undecodable_image    missing caption  -> missing_caption
  oversized image   -> oversized_image      non-image member -> no_image

plus good images of mixed sizes (one larger than the prepare's size, one smaller).
`GOOD` lists (key, caption, original size) of the good examples in order.
"""

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

MAX_PIXELS = 200 * 200  # the tests' --max_pixels: OVERSIZED exceeds it
OVERSIZED = (240, 200)
CAPTIONS = ("a red circle", "a blue square", "a green triangle", "two shapes",
            "a yellow circle to the left of a red square")


def encoded(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
  rng = np.random.default_rng(seed)
  smooth = rng.integers(0, 255, (4, 4, 3), np.uint8)
  image = np.asarray(Image.fromarray(smooth).resize((width, height), Image.BILINEAR))
  out = io.BytesIO()
  Image.fromarray(image).save(out, format=fmt)
  return out.getvalue()


def _good(n: int, seed: int) -> list[tuple[str, str, tuple[int, int], bytes, str]]:
  """(key, caption, (w, h), bytes, ext) of n good examples of mixed sizes and formats."""
  sizes = [(64, 48), (150, 100), (40, 60), (120, 120), (90, 180)]
  out = []
  for i in range(n):
    w, h = sizes[i % len(sizes)]
    fmt, ext = ("PNG", "png") if i % 3 == 1 else ("JPEG", "jpg")
    out.append((f"s{seed:02d}_{i:04d}", CAPTIONS[i % len(CAPTIONS)], (w, h),
                encoded(w, h, seed * 1000 + i, fmt), ext))
  return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_tars(folder: str, num_tars: int, per_tar: int) -> dict:
  """`num_tars` tars of `per_tar` good pairs each (captions as KEY.txt, or KEY.json for
  every other tar), the first tar also holding the four bad cases. Returns {"paths",
  "good": [(key, caption, size)], "bad": {reason: count}}."""
  os.makedirs(folder, exist_ok=True)
  paths, good = [], []
  for t in range(num_tars):
    path = os.path.join(folder, f"{t:05d}.tar")
    with tarfile.open(path, "w") as tar:
      for key, caption, size, data, ext in _good(per_tar, t):
        _add(tar, f"{key}.{ext}", data)
        if t % 2:
          _add(tar, f"{key}.json", json.dumps({"caption": caption, "w": size[0]}).encode())
        else:
          _add(tar, f"{key}.txt", caption.encode())
        good.append((key, caption, size))
      if t == 0:
        _add(tar, "bad_corrupt.jpg", encoded(64, 64, 7)[:200])
        _add(tar, "bad_corrupt.txt", b"a corrupt image")
        _add(tar, "bad_nocaption.jpg", encoded(64, 64, 8))
        _add(tar, "bad_huge.jpg", encoded(*OVERSIZED, 9))
        _add(tar, "bad_huge.txt", b"a huge image")
        _add(tar, "bad_noimage.cls", b"3")
    paths.append(path)
  return {"paths": paths, "good": good, "bad": {"undecodable_image": 1,
                                                 "missing_caption": 1,
                                                 "oversized_image": 1, "no_image": 1}}


def write_parquet(folder: str, rows: int, row_group_size: int) -> dict:
  """One Parquet file: an `image` column of {bytes, path} structs (every other row as
  plain bytes is not allowed by one schema, so plain-bytes rows go to a second file) and
  a `text` caption column, with the four bad cases in the first file."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  items = _good(rows, 50)
  structs = [{"bytes": data, "path": f"{key}.{ext}"} for key, _, _, data, ext in items]
  captions = [caption for _, caption, _, _, _ in items]
  structs += [{"bytes": encoded(64, 64, 7)[:200], "path": "corrupt.jpg"},
              {"bytes": encoded(64, 64, 8), "path": "nocaption.jpg"},
              {"bytes": encoded(*OVERSIZED, 9), "path": "huge.jpg"},
              {"bytes": b"", "path": None}]
  captions += ["a corrupt image", "", "a huge image", "no image here"]
  first = os.path.join(folder, "train-00000.parquet")
  pq.write_table(pa.table({"image": structs, "text": captions}), first,
                 row_group_size=row_group_size)
  plain = _good(rows, 51)
  second = os.path.join(folder, "train-00001.parquet")
  pq.write_table(pa.table({"image": [d for _, _, _, d, _ in plain],
                           "text": [c for _, c, _, _, _ in plain]}), second,
                 row_group_size=row_group_size)
  good = [(f"train-0000{f}.parquet/{i // row_group_size}/{i % row_group_size}", c, s)
          for f, chunk in enumerate((items, plain)) for i, (_, c, s, _, _) in enumerate(chunk)]
  return {"paths": [first, second], "good": good,
          "bad": {"undecodable_image": 1, "missing_caption": 1, "oversized_image": 1,
                  "no_image": 1}}


def write_llava(folder: str, count: int) -> str:
  """A LLaVA JSON of `count` one- or two-turn conversations over JPEGs in `folder`."""
  os.makedirs(folder, exist_ok=True)
  entries = []
  for i in range(count):
    name = f"img{i:03d}.jpg"
    with open(os.path.join(folder, name), "wb") as f:
      f.write(encoded(48 + 8 * (i % 4), 40 + 4 * (i % 3), 300 + i))
    conversations = [{"from": "human", "value": "<image>\nhow many shapes are there?"},
                     {"from": "gpt", "value": ["one", "two", "three"][i % 3]}]
    if i % 2:
      conversations += [{"from": "human", "value": "what color is the circle?"},
                        {"from": "gpt", "value": "red"}]
    entries.append({"image": name, "conversations": conversations})
  path = os.path.join(folder, "llava.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(entries, f)
  return path


def write_text(path: str, count: int) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for i in range(count):
      f.write(f"there are {['one', 'two', 'three'][i % 3]} shapes. the circle is red.\n")
  return path


def write_training_records(root: str, prefix: str, image_size: int = 32) -> dict:
  """Prepared gen (from tars), und (LLaVA) and text records under `prefix` (e.g.
  gs://bucket/train): {task: shard glob pattern}."""
  from jf_jax.prepare import examples  # pylint: disable=g-import-not-at-top
  from jf_jax.prepare import run  # pylint: disable=g-import-not-at-top
  tars = write_tars(os.path.join(root, "tars"), num_tars=2, per_tar=12)
  inputs = {"gen": tars["paths"], "und": [write_llava(os.path.join(root, "llava"), 16)],
            "text": [write_text(os.path.join(root, "notes.txt"), 20)]}
  patterns = {}
  for task, paths in inputs.items():
    settings = examples.Settings(task=task, image_size=image_size, max_pixels=MAX_PIXELS)
    run.prepare(task, paths, f"{prefix}/{task}", settings, num_shards=2,
                show_progress=False)
    patterns[task] = f"{prefix}/{task}-*.array_record"
  return patterns
