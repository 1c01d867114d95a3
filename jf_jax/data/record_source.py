"""Prepared ArrayRecord shards as task data: `config.data.source = "records"`.

`config.data.{gen,und,text,edit}_records` are glob patterns (local or gs://) of the shards
`python -m jf_jax.prepare` writes. Each task's shards become one grain
`ArrayRecordDataSource` (random access: record i is read when slot k of the shuffled
stream needs it), paired with a converter that decodes the record (`record_format.py`)
into the dict the file readers give, so the rows come from the same
`processor.RowBuilder` and the mixture's global shuffle, per-process rows, workers,
bad-example counts and exact resume apply unchanged. Startup lists shards, never records:
the data source reads each shard's footer (its record count) and nothing per item is
held in Python.

Startup errors name the setting and path: a pattern that matches nothing (a missing
bucket included), and a shard that cannot be opened (truncated: its footer is gone).
array_record's reader opens a missing gs:// object as a shard of 0 records (the 404
surfaces only at close), so paths come from a listing (`storage.expand`), never from a
guess.
"""

import functools

import grain

from jf_jax.data import record_format
from jf_jax.data import storage

class ShardError(ValueError):
  """Shards that cannot be read (truncated, not ArrayRecord, empty); names the path."""


TASK_KEYS = {"gen": "gen_records", "und": "und_records", "text": "text_records",
             "edit": "edit_records"}


def _convert(task: str, data: bytes, rng) -> dict:
  del rng
  return record_format.decode(task, data)


def open_shards(paths: list[str], setting: str) -> grain.sources.ArrayRecordDataSource:
  """One random-access source over the shards; a shard that cannot be opened is a
  one-line error naming it."""
  try:
    return grain.sources.ArrayRecordDataSource(paths)
  except Exception as e:  # pylint: disable=broad-except  (array_record's RuntimeError)
    raise ShardError(f"{setting}: cannot open the shards ({_culprit(paths)}): "
                     f"{str(e).splitlines()[0][:300]}") from e


def _culprit(paths: list[str]) -> str:
  """The first shard that fails to open on its own (the error above names none)."""
  for path in paths:
    try:
      grain.sources.ArrayRecordDataSource([path])
    except Exception:  # pylint: disable=broad-except
      return path
  return f"{len(paths)} shards"


def record_tasks(data_cfg) -> dict:
  """{task: (ArrayRecordDataSource, converter)} of the configured record patterns."""
  tasks = {}
  for task, key in TASK_KEYS.items():
    patterns = list(data_cfg.get(key, ()))
    if patterns:
      setting = f"config.data.{key}"
      source = open_shards(storage.expand(patterns, setting), setting)
      if not len(source):
        raise ShardError(f"{setting}: the shards of {patterns} hold no records")
      tasks[task] = (source, functools.partial(_convert, task))
  return tasks
