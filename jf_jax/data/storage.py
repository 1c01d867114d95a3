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


def absolute(path: str) -> str:
  """A local path made absolute; a bucket path as it is."""
  return str(path) if is_remote(path) else os.path.abspath(os.path.expanduser(str(path)))


def join(path: str, *parts: str) -> str:
  """`os.path.join` for local and bucket paths."""
  return str(epath.Path(path).joinpath(*parts)) if is_remote(path) else os.path.join(
      path, *parts)


def is_dir(path: str) -> bool:
  try:
    return epath.Path(path).is_dir()
  except OSError:  # a missing bucket
    return False


def makedirs(path: str) -> None:
  """A local folder tree; nothing for a bucket (objects need no folders)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def append_text(path: str, text: str) -> None:
  """Appends to a text file. Bucket objects cannot be appended to: the object is
  rewritten whole (fine for logs of one line per logged step)."""
  if not is_remote(path):
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)
    return
  target = epath.Path(path)
  target.write_text((target.read_text() if _exists(target) else "") + text)


def local_copy(path: str) -> str:
  """A local path holding `path`: itself if local, else a download of the file or
  directory tree into a cache folder (for libraries that read local files only: the
  tokenizers and safetensors readers)."""
  if not is_remote(path):
    return path
  import hashlib  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  cache = os.path.join(tempfile.gettempdir(), "jf_jax_downloads",
                       hashlib.sha256(str(path).encode()).hexdigest()[:16])
  source = epath.Path(path)
  if not _exists(source):
    raise FileNotFoundError(f"{path} does not exist")
  target = os.path.join(cache, source.name)
  files = [source] if not source.is_dir() else [p for p in source.rglob("*")
                                                 if not p.is_dir()]
  for file in files:
    local = target if file == source else os.path.join(target,
                                                       str(file.relative_to(source)))
    if not os.path.exists(local):
      os.makedirs(os.path.dirname(local), exist_ok=True)
      file.copy(epath.Path(local + ".partial"), overwrite=True)
      os.replace(local + ".partial", local)
  return target
