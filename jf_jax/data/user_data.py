"""Readers for your own data, one per task, yielding the records of `records.py`.

All four produce (data, convert) pairs for the mixture (`file_tasks` reads them from
`config.data`), so user data gets the same grain pipeline, packing, preprocessing,
sharding, resumable state and bad-example counting as the shapes world. Select them
with `config.data.source = "files"` (see docs/data.md):

* generation, `image_caption_files(paths)`: a folder of images, each with a caption file
  of the same stem (`cat.png` + `cat.txt`), or a .jsonl file of
  {"image": "path", "caption": "..."} lines (relative paths resolve against the file's
  folder, or `image_root`).
* understanding, `llava_files(paths, image_root)`: LLaVA-style JSON, a list of
  {"image": "path", "conversations": [{"from": "human", "value": "<image>\\nQ"},
  {"from": "gpt", "value": "A"}, ...]}; every answer is supervised.
* text, `text_files(paths, unit)`: plain UTF-8 text; one example per non-empty line
  (`unit="line"`), per blank-line separated paragraph ("paragraph") or per file ("file").
* edit, `edit_files(paths, image_root)`: .jsonl files of {"source": "path",
  "instruction": "...", "target": "path"} lines (the layout of InstructPix2Pix /
  MagicBrush-style sets: a source image, the instruction, the edited image).

Items are parsed lazily, at the time they are drawn: a malformed line, a missing image or
an empty caption becomes a counted `BadExample`, never an exception that stops training.
"""

import json
import os
from typing import Sequence

from jf_jax.data.records import BadExample

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
LLAVA_IMAGE_TAG = "<image>"


def _resolve(path: str, base: str) -> str:
  return path if os.path.isabs(path) else os.path.join(base, path)


def _folder_pairs(folder: str) -> list[tuple[str, str, str]]:
  """("pair", image path, caption path) for every image in a folder tree."""
  out = []
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        out.append(("pair", os.path.join(root, name),
                    os.path.join(root, os.path.splitext(name)[0] + ".txt")))
  return out


def _jsonl_lines(file: str, image_root: str) -> list:
  base = image_root or os.path.dirname(os.path.abspath(file))
  with open(file, encoding="utf-8") as f:
    return [("jsonl", line, base) for line in f if line.strip()]


def _read_caption(file: str) -> str:
  try:
    with open(file, encoding="utf-8") as f:
      return f.read().strip()
  except (OSError, UnicodeDecodeError) as e:
    raise BadExample("missing_caption", f"{file}: {e}") from e


def _gen_record(item, rng) -> dict:
  del rng
  if item[0] == "pair":
    _, image, caption_file = item
    return {"image": image, "caption": _read_caption(caption_file)}
  _, line, base = item
  try:
    obj = json.loads(line)
    return {"image": _resolve(obj["image"], base), "caption": str(obj["caption"])}
  except (ValueError, KeyError, TypeError) as e:
    raise BadExample("bad_record", f"{type(e).__name__}: {e}") from e


def image_caption_files(paths: Sequence[str], image_root: str = ""):
  """Generation data: folders of image + .txt pairs and/or .jsonl files."""
  items = []
  for path in paths:
    items += _folder_pairs(path) if os.path.isdir(path) else _jsonl_lines(path, image_root)
  return items, _gen_record


def _turns(conversations) -> list[tuple[str, str]]:
  if not isinstance(conversations, list) or len(conversations) % 2:
    raise BadExample("bad_record", "conversations must alternate human / gpt")
  turns = []
  for human, gpt in zip(conversations[::2], conversations[1::2]):
    if human.get("from") != "human" or gpt.get("from") != "gpt":
      raise BadExample("bad_record", "conversations must alternate human / gpt")
    question = str(human.get("value", "")).replace(LLAVA_IMAGE_TAG, "").strip()
    turns.append((question, str(gpt.get("value", ""))))
  return turns


def llava_files(paths: Sequence[str], image_root: str = ""):
  """Understanding data: LLaVA-style JSON conversation lists (one image each)."""
  items = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      base = image_root or os.path.dirname(os.path.abspath(path))
      items += [(entry, base) for entry in json.load(f)]

  def convert(item, rng) -> dict:
    del rng
    entry, base = item
    if not isinstance(entry, dict) or not entry.get("image"):
      raise BadExample("no_image", "understanding example without an image")
    return {"image": _resolve(str(entry["image"]), base),
            "turns": _turns(entry.get("conversations"))}

  return items, convert


def text_files(paths: Sequence[str], unit: str = "line"):
  """Text data: examples are lines, paragraphs or whole files."""
  if unit not in ("line", "paragraph", "file"):
    raise ValueError(f"config.data.text_unit={unit!r}; expected line, paragraph or file")
  items = []
  for path in paths:
    with open(path, encoding="utf-8", errors="replace") as f:
      content = f.read()
    pieces = {"line": content.splitlines(), "paragraph": content.split("\n\n"),
              "file": [content]}[unit]
    items += [p.strip() for p in pieces if p.strip()]
  return items, lambda item, rng: {"text": item}


def _edit_record(item, rng) -> dict:
  del rng
  line, base = item
  try:
    obj = json.loads(line)
    return {"image": _resolve(str(obj["source"]), base),
            "instruction": str(obj["instruction"]), "target": _resolve(str(obj["target"]), base)}
  except (ValueError, KeyError, TypeError) as e:
    raise BadExample("bad_record", f"{type(e).__name__}: {e}") from e


def edit_files(paths: Sequence[str], image_root: str = ""):
  """Edit data: .jsonl files of {"source", "instruction", "target"} lines."""
  items = []
  for path in paths:
    base = image_root or os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
      items += [(line, base) for line in f if line.strip()]
  return items, _edit_record


def file_tasks(data_cfg) -> dict:
  """{task: (items, converter)} from `config.data.{und,gen,text,edit}_files`."""
  tasks = {}
  if data_cfg.und_files:
    tasks["und"] = llava_files(list(data_cfg.und_files), data_cfg.image_root)
  if data_cfg.gen_files:
    tasks["gen"] = image_caption_files(list(data_cfg.gen_files), data_cfg.image_root)
  if data_cfg.text_files:
    tasks["text"] = text_files(list(data_cfg.text_files), data_cfg.text_unit)
  if data_cfg.get("edit_files"):
    tasks["edit"] = edit_files(list(data_cfg.edit_files), data_cfg.image_root)
  return tasks
