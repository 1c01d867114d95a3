"""User paths, local or in a bucket (gs://), through one abstraction: `etils.epath`.

epath is what grain, orbax and tfds already use; for gs:// it goes through fsspec +
gcsfs (and `STORAGE_EMULATOR_HOST` points gcsfs at a local emulator in the tests).
array_record reads gs:// shards with its own C++ client (`CLOUD_STORAGE_EMULATOR_ENDPOINT`
for an emulator) but cannot write them: `publish` uploads a finished local file as one
object create, so a shard in a bucket appears whole or not at all.
"""

import glob as glob_lib
import os
from typing import Sequence

from etils import epath


def is_remote(path: str) -> bool:
  """True for bucket paths (gs://, s3://, ...): anything with a URL scheme."""
  return "://" in str(path)


def expand(patterns: Sequence[str], setting: str) -> list[str]:
  """Sorted files matching glob patterns (local or gs://), each pattern matching >= 1.

  Raises FileNotFoundError naming `setting` and the pattern that matches nothing (a
  missing bucket or folder included): the one-line startup error for a wrong path.
  """
  found = []
  for pattern in patterns:
    matches = _glob(str(pattern))
    if not matches:
      raise FileNotFoundError(f"{setting}: {pattern!r} matches no file")
    found += matches
  return sorted(dict.fromkeys(found))


def _glob(pattern: str) -> list[str]:
  if not is_remote(pattern):
    return sorted(p for p in glob_lib.glob(os.path.expanduser(pattern), recursive=True)
                  if os.path.isfile(p))
  if not any(c in pattern for c in "*?["):
    path = epath.Path(pattern)
    return [pattern] if _exists(path) and not path.is_dir() else []
  root, rest = _split_glob(pattern)
  base = epath.Path(root)
  if not _exists(base):
    return []
  return sorted(str(p) for p in base.glob(rest) if not p.is_dir())


def _exists(path: epath.Path) -> bool:
  """exists(); a bucket that does not exist is just 'no such path'."""
  try:
    return path.exists()
  except (FileNotFoundError, OSError):
    return False


def _split_glob(pattern: str) -> tuple[str, str]:
  """'gs://b/dir/x-*.tar' -> ('gs://b/dir', 'x-*.tar'): the literal folder and the rest."""
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  literal = 1
  while literal < len(parts) - 1 and not any(c in parts[literal] for c in "*?["):
    literal += 1
  return f"{scheme}://" + "/".join(parts[:literal]), "/".join(parts[literal:])


def publish(local_file: str, final: str) -> None:
  """Moves a finished local file to `final` atomically (never visible half-written).

  Local: a rename in the destination folder. Bucket: one upload (a single object
  create), then the local file is removed.
  """
  if is_remote(final):
    epath.Path(local_file).copy(epath.Path(final), overwrite=True)
    os.remove(local_file)
  else:
    os.replace(local_file, final)


def write_text(path: str, text: str) -> None:
  """Writes a small text file atomically (a temporary name, then a rename) or as one
  object create in a bucket."""
  if is_remote(path):
    epath.Path(path).write_text(text)
    return
  tmp = f"{path}.partial-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def read_text(path: str) -> str:
  return epath.Path(path).read_text()


def exists(path: str) -> bool:
  return _exists(epath.Path(path))
