"""The prepare job: units -> shards (round robin), worker processes, progress, index.

Shard s holds units s, s + n, s + 2n, ... of the input order, so shards are balanced and
each is a pure function of the inputs and settings. `workers` spawned processes write
one shard at a time each (0: all in this process); a tqdm bar on stderr shows units done,
records/s and the ETA. When every shard is finished, `PREFIX.json` is written:

  {"task", "records", "shards": [{"path", "records"}], "bad": {reason: {"count",
   "examples"}}, "settings", "inputs", "versions"}
"""

import dataclasses
import glob
import json
import multiprocessing
import os
import queue as queue_lib
import sys
import time
from importlib import metadata

import tqdm

from jf_jax.data import storage
from jf_jax.prepare import examples
from jf_jax.prepare import inputs
from jf_jax.prepare import shards as shards_lib

_PACKAGES = ("jf_jax", "array_record", "pillow", "pyarrow", "gcsfs", "etils", "msgpack")
_progress = None  # a worker's queue to the bar (set by _init_worker)


def _versions() -> dict:
  out = {}
  for name in _PACKAGES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def plan(units: list, count: int) -> list[list]:
  """count shards of round-robin units (`count` <= len(units): no shard is empty)."""
  if count < 1 or count > len(units):
    raise ValueError(f"--shards={count}: the inputs give {len(units)} units of work (a "
                     "tar, a Parquet row group, 1,000 small items); use 1.."
                     f"{len(units)}")
  return [units[s::count] for s in range(count)]


def _init_worker(progress) -> None:
  global _progress
  _progress = progress


def _report(records: int, units: int) -> None:
  _progress.put((records, units))


def _write_shard(args) -> tuple[int, dict]:
  prefix, index, count, units, settings = args
  return index, shards_lib.write(prefix, index, count, units, settings, _report)


def _output_folder(prefix: str) -> None:
  """Creates a local output folder and removes the half-written shards of killed runs
  (`PREFIX-*.partial-PID` of a PID no longer running; a bucket never has any)."""
  if storage.is_remote(prefix):
    return
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  for partial in glob.glob(glob.escape(prefix) + "-*-of-*.array_record.partial-*"):
    if not _running(int(partial.rsplit("-", 1)[1])):
      os.remove(partial)


def _running(pid: int) -> bool:
  """Whether process `pid` is alive (a zombie, killed but not yet reaped, is not)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False
  except OSError:  # no /proc: ask the kernel
    pass
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def prepare(task: str, patterns: list[str], prefix: str, settings: examples.Settings,
            num_shards: int = 0, workers: int = 0, image_root: str = "",
            text_unit: str = "line", show_progress: bool = True) -> dict:
  """Writes the shards still missing and the index; returns the index dict.

  num_shards 0: one shard per unit of work, at most 1,024.
  """
  units = inputs.units(task, patterns, image_root, text_unit, num_shards)
  if not units:
    raise FileNotFoundError(f"--input {patterns}: no examples")
  count = num_shards or min(len(units), 1024)
  planned = plan(units, count)
  _output_folder(prefix)
  done = {s: shards_lib.finished(prefix, s, count, settings) for s in range(count)}
  todo = [(prefix, s, count, planned[s], settings) for s in range(count) if not done[s]]
  bar = tqdm.tqdm(total=len(units), unit="unit", disable=not show_progress,
                  file=sys.stderr, initial=sum(len(planned[s]) for s in done if done[s]))
  start, new_records = time.time(), 0

  def advance(records: int, n_units: int) -> None:
    nonlocal new_records
    new_records += records
    bar.update(n_units)
    bar.set_postfix_str(f"{new_records / max(time.time() - start, 1e-9):,.0f} records/s")

  if workers == 0:
    for args in todo:
      done[args[1]] = shards_lib.write(*args, report=advance)
  else:
    done.update(_run_workers(todo, workers, advance))
  bar.close()
  index = _index(task, patterns, prefix, count, done, settings)
  storage.write_text(prefix + ".json", json.dumps(index, indent=1))
  return index


def _run_workers(todo: list, workers: int, advance) -> dict:
  """Writes the shards in `workers` spawned processes (spawn: gcsfs threads and event
  loops do not survive a fork); returns {shard: marker}."""
  context = multiprocessing.get_context("spawn")
  progress = context.Queue()
  out = {}
  with context.Pool(workers, initializer=_init_worker, initargs=(progress,),
                    maxtasksperchild=None) as pool:
    results = pool.imap_unordered(_write_shard, todo)
    pending = len(todo)
    while pending:
      try:
        index, marker = results.next(timeout=0.2)
        out[index] = marker
        pending -= 1
      except multiprocessing.TimeoutError:
        pass
      _drain(progress, advance)
  _drain(progress, advance)
  return out


def _drain(progress, advance) -> None:
  while True:
    try:
      advance(*progress.get_nowait())
    except queue_lib.Empty:
      return


def _index(task, patterns, prefix, count, done, settings) -> dict:
  bad = {}
  for marker in done.values():
    for reason, entry in marker["bad"].items():
      total = bad.setdefault(reason, {"count": 0, "examples": []})
      total["count"] += entry["count"]
      total["examples"] = (total["examples"] + entry["examples"]
                           )[:shards_lib.EXAMPLES_PER_REASON]
  return {
      "task": task,
      "records": sum(m["records"] for m in done.values()),
      "shards": [{"path": os.path.basename(shards_lib.shard_path(prefix, s, count)),
                  "records": done[s]["records"]} for s in range(count)],
      "bad": dict(sorted(bad.items())),
      "settings": dataclasses.asdict(settings),
      "inputs": list(patterns),
      "versions": _versions(),
  }
