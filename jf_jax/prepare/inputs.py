"""Input patterns -> units of work -> raw examples.

A unit is a picklable tuple a worker process reads on its own:

  ("tar", path)                 a WebDataset shard: members KEY.EXT grouped by KEY
  ("parquet", path, row_group)  one row group of a Parquet file
  ("items", items)              a chunk of a small reader's items (folders / JSONL for
                                gen, LLaVA JSON for und, text files, edit JSONL),
                                `user_data.py`

`examples(task, unit, columns)` yields (key, raw) pairs: raw is {extension: bytes} for a
tar member group, {"image": ..., "caption"/"text": ...} for a Parquet row, or the
`records.py` record of a small reader (image as a path; or the BadExample its item
raised). Units are listed in a fixed
order (sorted paths), so a shard's contents do not depend on timing or workers.
"""

import os
import tarfile
from typing import Iterator, Sequence

from etils import epath

from jf_jax.data import storage
from jf_jax.data import user_data
from jf_jax.data.records import BadExample

ITEMS_PER_UNIT = 1000  # small readers' items per unit of work


def _kind(path: str) -> str:
  name = path.lower()
  if name.endswith(".tar"):
    return "tar"
  if name.endswith(".parquet"):
    return "parquet"
  return "file"


def units(task: str, patterns: Sequence[str], image_root: str = "",
          text_unit: str = "line", num_shards: int = 0) -> list[tuple]:
  """Every unit of work of the inputs, in order. Folders (gen) are given as themselves,
  anything else as glob patterns (local or gs://). Small readers' items are cut into
  units of ITEMS_PER_UNIT, or fewer so that they fill `num_shards` shards."""
  out, small = [], []
  for pattern in patterns:
    if task == "gen" and not storage.is_remote(pattern) and os.path.isdir(pattern):
      small.append(pattern)
      continue
    for path in storage.expand([pattern], "--input"):
      kind = _kind(path)
      if task == "edit" and kind != "file":
        raise ValueError(f"--input {path}: edit inputs are .jsonl files of {{source, "
                         "instruction, target} lines (config.data.edit_files' layout)")
      if kind == "tar":
        out.append(("tar", path))
      elif kind == "parquet":
        out += [("parquet", path, g) for g in range(_row_groups(path))]
      else:
        small.append(path)
  if small:
    items = _small_items(task, small, image_root, text_unit)
    size = min(ITEMS_PER_UNIT, -(-len(items) // max(num_shards, 1))) or 1
    out += [("items", items[i:i + size]) for i in range(0, len(items), size)]
  return out


def _small_items(task: str, paths: list[str], image_root: str, text_unit: str) -> list:
  """(key, record) of the folder / JSONL / LLaVA / text readers, converted here (they are
  small by definition); a malformed item stays an item and is counted by the worker."""
  read = {"gen": lambda: user_data.image_caption_files(paths, image_root),
          "und": lambda: user_data.llava_files(paths, image_root),
          "text": lambda: user_data.text_files(paths, text_unit),
          "edit": lambda: user_data.edit_files(paths, image_root)}[task]
  items, convert = read()
  return [(f"{i}", _converted(convert, item)) for i, item in enumerate(items)]


def _converted(convert, item):
  """The item's record, or its BadExample (picklable either way, unlike the readers'
  converters, so units can travel to spawned workers)."""
  try:
    return convert(item, None)
  except BadExample as e:
    return e


def _row_groups(path: str) -> int:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  with epath.Path(path).open("rb") as f:
    return pq.ParquetFile(f).num_row_groups


def _tar_groups(path: str) -> Iterator[tuple[str, dict]]:
  """(KEY, {ext: bytes}) of consecutive members KEY.EXT of a tar (WebDataset order)."""
  key, group = None, {}
  with epath.Path(path).open("rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
    for member in tar:
      if not member.isfile():
        continue
      folder, name = os.path.split(member.name)
      if "." not in name:
        continue
      stem, ext = name.split(".", 1)
      member_key = f"{folder}/{stem}" if folder else stem
      if member_key != key and key is not None:
        yield key, group
        group = {}
      key = member_key
      group[ext.lower()] = tar.extractfile(member).read()
  if key is not None:
    yield key, group


def _parquet_rows(path: str, row_group: int, columns: dict) -> Iterator[tuple[str, dict]]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  wanted = [c for c in (columns["image"], columns["caption"], columns["text"])
            if c]
  with epath.Path(path).open("rb") as f:
    table = pq.ParquetFile(f).read_row_group(row_group)
  names = set(table.column_names)
  absent = [c for c in wanted if c not in names]
  if absent:
    raise KeyError(f"{path}: no column {absent} (columns: {sorted(names)}); "
                   "set --image_column / --caption_column / --text_column")
  rows = {c: table.column(c).to_pylist() for c in wanted}
  stem = os.path.basename(path)
  for i in range(table.num_rows):
    yield f"{stem}/{row_group}/{i}", {c: rows[c][i] for c in wanted}


def examples(unit: tuple, columns: dict) -> Iterator[tuple[str, object]]:
  """(key, raw example) of one unit (see the module docstring)."""
  if unit[0] == "tar":
    yield from _tar_groups(unit[1])
  elif unit[0] == "parquet":
    yield from _parquet_rows(unit[1], unit[2], columns)
  else:
    yield from unit[1]


def read_bytes(path: str) -> bytes:
  return epath.Path(path).read_bytes()


