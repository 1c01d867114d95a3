"""A raw example of `inputs.py` -> the serialized record of `data/record_format.py`.

Images are decoded once, checked (decodable, at least `preprocess.MIN_SIZE`, at most
`max_pixels` by their header, before any decode: a decompression bomb costs nothing),
resized so the short side is `image_size` (never enlarged) and re-encoded as JPEG.
Anything that cannot become a record raises `BadExample` with the index's reason.
"""

import dataclasses
import io
import json

import numpy as np
from PIL import Image

from jf_jax.data import preprocess
from jf_jax.data import record_format
from jf_jax.data.records import BadExample, as_text
from jf_jax.prepare import inputs

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a record depends on (stored in the index and every shard's marker)."""
  task: str
  image_size: int = 384
  jpeg_quality: int = 95
  max_pixels: int = 50_000_000
  caption_field: str = "caption"   # the caption's key in a WebDataset KEY.json
  image_column: str = "image"      # Parquet columns
  caption_column: str = "caption"
  text_column: str = "text"

  def columns(self) -> dict:
    """The Parquet columns read for the task (edit inputs are JSONL: none)."""
    image = self.image_column if self.task != "text" else ""
    return {"image": image, "caption": self.caption_column if self.task == "gen" else "",
            "text": self.text_column if self.task == "text" else ""}


def reencode(data: bytes, settings: Settings) -> bytes:
  """Encoded image -> JPEG bytes, short side `image_size` (or smaller, as it was)."""
  try:
    pil = Image.open(io.BytesIO(data))
    width, height = pil.size
  except Exception as e:  # pylint: disable=broad-except  (any decoder failure)
    raise BadExample("undecodable_image", f"{type(e).__name__}: {e}") from e
  if width * height > settings.max_pixels:
    raise BadExample("oversized_image", f"{width}x{height} exceeds --max_pixels="
                     f"{settings.max_pixels}")
  size = settings.image_size
  # JPEG decodes at 1/2, 1/4 or 1/8 scale directly (a large speed-up for big originals),
  # never below the requested size.
  pil.draft("RGB", (size * width // min(width, height), size * height // min(width, height)))
  image = preprocess.load_image(_decoded(pil))
  scale = size / min(image.shape[:2])
  if scale < 1:
    h, w = image.shape[:2]
    image = np.asarray(Image.fromarray(image).resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC))
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="JPEG", quality=settings.jpeg_quality)
  return out.getvalue()


def _decoded(pil: Image.Image) -> np.ndarray:
  try:
    return np.asarray(pil.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  (truncated or corrupt data)
    raise BadExample("undecodable_image", f"{type(e).__name__}: {e}") from e


def _caption(text) -> str:
  caption = as_text(text).strip()
  if not caption:
    raise BadExample("missing_caption", "empty or absent caption")
  return caption


def _from_tar_group(group: dict, settings: Settings) -> dict:
  """{ext: bytes} of one WebDataset key -> {"image": bytes, "caption"} (gen)."""
  image = next((group[e] for e in IMAGE_EXTENSIONS if e in group), None)
  if image is None:
    raise BadExample("no_image", f"members {sorted(group)} hold no "
                     f"{'/'.join(IMAGE_EXTENSIONS)} image")
  if "txt" in group:
    return {"image": image, "caption": _caption(group["txt"])}
  if "json" in group:
    try:
      meta = json.loads(group["json"])
    except ValueError as e:
      raise BadExample("bad_record", f"KEY.json: {e}") from e
    return {"image": image, "caption": _caption(
        meta.get(settings.caption_field) if isinstance(meta, dict) else None)}
  raise BadExample("missing_caption", "no .txt or .json member")


def _parquet_image(value):
  """Encoded bytes, or a Hugging Face {bytes, path} struct."""
  if isinstance(value, dict):
    value = value.get("bytes") or (value.get("path") and _read_path(value["path"]))
  if not value:
    raise BadExample("no_image", "empty image cell")
  return value


def _read_path(path: str) -> bytes:
  try:
    return inputs.read_bytes(path)
  except OSError as e:
    raise BadExample("missing_image", f"{path}: {e}") from e


def raw_record(unit_kind: str, raw, settings: Settings) -> dict:
  """The task's record (`records.py`) of a raw example, image still as the source has it."""
  if unit_kind == "tar":
    if settings.task != "gen":
      raise ValueError("WebDataset tars are read for gen only")
    return _from_tar_group(raw, settings)
  if unit_kind == "parquet":
    if settings.task == "text":
      return {"text": as_text(raw[settings.text_column])}
    return {"image": _parquet_image(raw[settings.image_column]),
            "caption": raw[settings.caption_column]}
  if isinstance(raw, BadExample):
    raise raw
  return raw


def _instruction(text) -> str:
  instruction = as_text(text).strip()
  if not instruction:
    raise BadExample("missing_instruction", "empty or absent instruction")
  return instruction


def _stored_image(image, settings: Settings) -> bytes:
  """A path or encoded bytes -> the stored JPEG; raises BadExample."""
  if isinstance(image, str):
    image = _read_path(image)
  return reencode(bytes(image), settings)


def _image_bytes(image, settings: Settings, field: str) -> bytes:
  """`_stored_image` of one of an edit's two images; a BadExample names the field."""
  try:
    return _stored_image(image, settings)
  except BadExample as e:
    raise BadExample(e.reason, f"{field}: {e}") from e


def serialized(key: str, unit_kind: str, raw, settings: Settings) -> bytes:
  """The record bytes of one raw example; raises BadExample."""
  record = dict(raw_record(unit_kind, raw, settings), key=key)
  if settings.task == "edit":  # source and edited image, each re-encoded as gen's
    record["instruction"] = _instruction(record.get("instruction"))
    record["image"] = _image_bytes(record["image"], settings, "source")
    record["target"] = _image_bytes(record["target"], settings, "target")
    return record_format.encode("edit", record)
  if settings.task == "text":
    record["text"] = as_text(record["text"]).strip()
    if not record["text"]:
      raise BadExample("empty_text", "empty text")
    return record_format.encode("text", record)
  record["image"] = _stored_image(record["image"], settings)
  if settings.task == "gen":
    record["caption"] = _caption(record["caption"])
  else:
    record["turns"] = [[as_text(q), as_text(a)] for q, a in record["turns"]]
  return record_format.encode(settings.task, record)
