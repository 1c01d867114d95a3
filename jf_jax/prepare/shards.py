"""One output shard: its units' records, written atomically, with a done-marker.

Shard s of n is `PREFIX-{s:05d}-of-{n:05d}.array_record`. It is written to a local
temporary file (array_record cannot write gs://), then published under its final name in
one step (`storage.publish`: a rename, or one object upload). Only then is its marker
`PREFIX-{s:05d}-of-{n:05d}.json` written: {"records", "bad", "settings"}. A rerun skips
every shard with a marker of the same settings, so a killed prepare resumes and, since a
shard's contents are a pure function of its units, gives the same shards.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable

from array_record.python import array_record_module

from jf_jax.data import storage
from jf_jax.data.records import BadExample
from jf_jax.prepare import examples
from jf_jax.prepare import inputs

EXAMPLES_PER_REASON = 3  # bad examples quoted in the index, per reason
# One record per chunk: random access reads exactly one record (grain's data source).
WRITER_OPTIONS = "group_size:1"


def shard_path(prefix: str, index: int, count: int) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}.array_record"


def marker_path(prefix: str, index: int, count: int) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}.json"


def finished(prefix: str, index: int, count: int, settings: examples.Settings) -> dict | None:
  """The marker of a finished shard, None if it is not finished; a ValueError if it was
  prepared with other settings (mixing them would make one inconsistent dataset)."""
  marker = marker_path(prefix, index, count)
  if not storage.exists(marker):
    return None
  done = json.loads(storage.read_text(marker))
  if done["settings"] != dataclasses.asdict(settings):
    raise ValueError(f"{marker} was prepared with other settings {done['settings']}; "
                     "use another --output or delete that prefix's shards")
  return done if storage.exists(shard_path(prefix, index, count)) else None


def _local_target(final: str) -> str:
  """Where the shard is written before it is published: next to it (a same-folder
  rename) for local output, in the temp folder for a bucket."""
  if storage.is_remote(final):
    return os.path.join(tempfile.mkdtemp(prefix="jf_prepare_"), os.path.basename(final))
  return f"{final}.partial-{os.getpid()}"


def _discard(local: str, final: str) -> None:
  """Removes what `_local_target` made that is still there: the partial file, and for a
  bucket its temp folder (left empty once the shard is uploaded)."""
  if os.path.exists(local):
    os.remove(local)
  if storage.is_remote(final):
    shutil.rmtree(os.path.dirname(local), ignore_errors=True)


def write(prefix: str, index: int, count: int, units: list[tuple],
          settings: examples.Settings, report: Callable[[int, int], None]) -> dict:
  """Writes shard `index` from its units; `report(records, units)` after each unit.

  Returns the marker {"shard", "records", "bad": {reason: {"count", "examples"}},
  "settings"}.
  """
  final = shard_path(prefix, index, count)
  local = _local_target(final)
  writer = array_record_module.ArrayRecordWriter(local, WRITER_OPTIONS)
  records, bad = 0, {}
  try:
    for unit in units:
      before = records
      for key, raw in inputs.examples(unit, settings.columns()):
        try:
          writer.write(examples.serialized(key, unit[0], raw, settings))
          records += 1
        except BadExample as e:
          entry = bad.setdefault(e.reason, {"count": 0, "examples": []})
          entry["count"] += 1
          if len(entry["examples"]) < EXAMPLES_PER_REASON:
            entry["examples"].append(f"{key}: {e}"[:300])
      report(records - before, 1)
    writer.close()
  except BaseException:
    writer.close()
    _discard(local, final)
    raise
  storage.publish(local, final)
  _discard(local, final)
  marker = {"shard": os.path.basename(final), "records": records, "bad": bad,
            "settings": dataclasses.asdict(settings)}
  storage.write_text(marker_path(prefix, index, count), json.dumps(marker, indent=1))
  return marker
