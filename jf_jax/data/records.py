"""The record every reader yields per task, and the error a bad record raises.

Readers (the shapes world in `tfds_source.py`, user files in `user_data.py`) turn their
items into these plain dicts; `packing.py` turns records into fixed-shape rows.

  und:  {"image": ..., "turns": [(question, answer), ...]}   image goes in the first turn
  gen:  {"image": ..., "caption": str}
  text: {"text": str}
  edit: {"image": ..., "instruction": str, "target": ...}     source image, edited image

"image" (and an edit's "target") is a uint8 [H, W, 3] array, encoded image bytes (PNG, JPEG, ...) or a file path.
"""

from typing import Any


class BadExample(ValueError):
  """A record that cannot become a training row; `reason` is the counter's name, `length`
  the row's token count when it was too long (the skip report names the longest)."""

  def __init__(self, reason: str, detail: str = "", length: int | None = None):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.length = length


def as_text(value: Any) -> str:
  """tfds returns text as bytes; readers may give str or None."""
  if value is None:
    return ""
  if isinstance(value, (bytes, bytearray)):
    try:
      return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
      raise BadExample("undecodable_text", str(e)) from e
  return str(value)
