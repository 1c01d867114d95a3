"""The serialized record of a prepared ArrayRecord shard (`python -m jf_jax.prepare`).

One msgpack map per record, the `records.py` record of its task plus the source key:

  gen:  {"key": str, "image": JPEG bytes, "caption": str}
  und:  {"key": str, "image": JPEG bytes, "turns": [[question, answer], ...]}
  text: {"key": str, "text": str}
  edit: {"key": str, "image": JPEG bytes (the source), "instruction": str,
         "target": JPEG bytes (the edited image)}

Images (both of an edit) are stored re-encoded once at the prepare's short side (`--image_size`), so the
training loader decodes small JPEGs; the row builders (`processor.py`) take the decoded
record exactly as they take a file reader's.
"""

import msgpack

from jf_jax.data.records import BadExample

FIELDS = {"gen": ("key", "image", "caption"), "und": ("key", "image", "turns"),
          "text": ("key", "text"), "edit": ("key", "image", "instruction", "target")}


def encode(task: str, record: dict) -> bytes:
  """A record dict -> bytes; every field of the task must be present."""
  missing = [f for f in FIELDS[task] if f not in record]
  if missing:
    raise ValueError(f"{task} record without {missing}")
  return msgpack.packb({f: record[f] for f in FIELDS[task]}, use_bin_type=True)


def decode(task: str, data: bytes) -> dict:
  """bytes -> the task's record (turns as (question, answer) tuples); BadExample
  'bad_record' for bytes that are not one."""
  try:
    record = msgpack.unpackb(data, raw=False)
    if not isinstance(record, dict) or any(f not in record for f in FIELDS[task]):
      raise ValueError(f"fields {sorted(record) if isinstance(record, dict) else record!r}")
  except (ValueError, TypeError, msgpack.exceptions.ExtraData) as e:
    raise BadExample("bad_record", f"not a {task} record: {e}") from e
  if task == "und":
    record["turns"] = [tuple(turn) for turn in record["turns"]]
  return record
