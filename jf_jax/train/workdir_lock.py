"""One writer per workdir: `WORKDIR/lock.json` names the run that holds the workdir.

  with workdir_lock.hold(workdir, stale_after_s=600, heartbeat_s=60):
    ...  # train, checkpoint, evaluate

A second run on the same workdir stops before it builds anything, with
"workdir W is in use by pid N on host H ...". The lock is created atomically: on a local
(or mounted) file system with O_CREAT | O_EXCL, on `gs://` as an object written with the
precondition `ifGenerationMatch=0` (gcsfs `mode="create"`), so of two runs starting
together exactly one gets it. The holder rewrites the lock every `heartbeat_s` (a daemon
thread) and deletes it when it ends.

A lock whose run has crashed does not stick. It is stale when
  * it names this host and its pid is no longer running (a killed run, a second Ctrl-C), or
  * it has not been rewritten for `stale_after_s` (a run on another host that died, where
    the pid cannot be checked);
a stale lock is replaced, with a line saying whose it was. After writing, the lock is read
back and must carry this run's token: a store that ignores the precondition (e.g. the
storage emulator) still cannot leave two holders that both believe they hold it, unless
their writes and read-backs interleave exactly.
"""

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from absl import logging

LOCK_NAME = "lock.json"


class WorkdirInUse(RuntimeError):
  """Another live run holds the workdir."""


class _LocalStore:
  """The lock file on a local or mounted file system."""

  def __init__(self, path: str):
    self.path = path

  def create(self, data: bytes) -> bool:
    """Writes `data` only if no lock exists; False if one does."""
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return True

  def overwrite(self, data: bytes) -> None:
    tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"  # rename: a reader never sees half a lock
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, self.path)

  def read(self) -> tuple[bytes, float] | None:
    """(contents, seconds since the last write) or None if there is no lock."""
    try:
      with open(self.path, "rb") as f:
        data = f.read()
      return data, time.time() - os.stat(self.path).st_mtime
    except FileNotFoundError:
      return None

  def delete(self) -> None:
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)


class _GcsStore:
  """The lock object on Google Cloud Storage (gcsfs)."""

  def __init__(self, path: str):
    import gcsfs  # pylint: disable=g-import-not-at-top
    self.path = path
    # A fresh instance: fsspec's cached one keeps the endpoint of its first use.
    self._fs = gcsfs.GCSFileSystem(skip_instance_cache=True)

  def create(self, data: bytes) -> bool:
    if self._fs.exists(self.path):  # the precondition below is what makes it atomic
      return False
    try:
      self._fs.pipe_file(self.path, data, mode="create")  # ifGenerationMatch=0
    except FileExistsError:  # HTTP 412: another run created it first
      return False
    return True

  def overwrite(self, data: bytes) -> None:
    self._fs.pipe_file(self.path, data)

  def read(self) -> tuple[bytes, float] | None:
    try:
      self._fs.invalidate_cache(self.path)
      data = self._fs.cat_file(self.path)
      modified = self._fs.modified(self.path)
    except FileNotFoundError:
      return None
    now = datetime.datetime.now(datetime.timezone.utc)
    return data, (now - modified).total_seconds()

  def delete(self) -> None:
    with contextlib.suppress(FileNotFoundError):
      self._fs.rm_file(self.path)


def _store(workdir: str):
  path = f"{workdir.rstrip('/')}/{LOCK_NAME}"
  if workdir.startswith("gs://"):
    return _GcsStore(path)
  return _LocalStore(os.path.abspath(path))


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def stale_reason(holder: dict, age_s: float, stale_after_s: float) -> str | None:
  """Why the lock of `holder` (its JSON), last written `age_s` ago, is stale; None if live."""
  if holder.get("host") == socket.gethostname() and not _pid_running(int(holder["pid"])):
    return "that process is not running"
  if age_s > stale_after_s:
    return f"its lock was last renewed {age_s / 60:.1f} min ago"
  return None


def _describe(workdir: str, holder: dict, age_s: float) -> str:
  return (f"workdir {workdir} is in use by pid {holder.get('pid')} on host "
          f"{holder.get('host')} (since {holder.get('started')}, lock renewed {age_s:.0f} s "
          f"ago: {workdir.rstrip('/')}/{LOCK_NAME}); wait for that run to end, stop it, or "
          "use another --workdir")


class WorkdirLock:
  """The lock of one workdir, held between `acquire()` and `release()`."""

  def __init__(self, workdir: str, stale_after_s: float = 600, heartbeat_s: float = 60):
    if heartbeat_s >= stale_after_s:
      raise ValueError(f"the lock's heartbeat ({heartbeat_s} s) must be shorter than its "
                       f"stale time ({stale_after_s} s)")
    self.workdir = workdir
    self._store = _store(workdir)
    self._stale_after_s, self._heartbeat_s = stale_after_s, heartbeat_s
    self._holder = dict(pid=os.getpid(), host=socket.gethostname(), token=uuid.uuid4().hex,
                        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    self._stop = threading.Event()
    self._thread = None

  def _encoded(self) -> bytes:
    return json.dumps({**self._holder, "renewed": time.time()}).encode()

  def _read(self) -> tuple[dict, float] | None:
    found = self._store.read()
    if found is None:
      return None
    data, age_s = found
    try:
      return json.loads(data), age_s
    except ValueError:  # a half-written or foreign file: judged by its age alone
      return {}, age_s

  def acquire(self) -> None:
    """Takes the lock (replacing a stale one) or raises WorkdirInUse."""
    for _ in range(3):  # a stale lock replaced between our read and our create: retry
      if self._store.create(self._encoded()):
        break
      found = self._read()
      if found is None:
        continue  # released meanwhile
      holder, age_s = found
      if holder:
        reason = stale_reason(holder, age_s, self._stale_after_s)
      else:  # being written right now, or not a lock of ours: judged by its age
        reason = "its lock file is unreadable" if age_s > self._heartbeat_s else None
      if reason is None:
        raise WorkdirInUse(_describe(self.workdir, holder, age_s) if holder else (
            f"workdir {self.workdir}: its lock {self.workdir.rstrip('/')}/{LOCK_NAME} is "
            "being written by another run or unreadable; try again, or delete it if no "
            "run uses this workdir"))
      again = self._read()
      if again is not None and again[0] == holder:  # not replaced by a third run meanwhile
        print(f"workdir {self.workdir}: replacing the stale lock of pid "
              f"{holder.get('pid')} on host {holder.get('host')} ({reason})", flush=True)
        self._store.delete()
    else:
      raise WorkdirInUse(f"workdir {self.workdir}: could not take its lock in 3 tries")
    mine = self._read()
    if mine is None or mine[0].get("token") != self._holder["token"]:
      raise WorkdirInUse(_describe(self.workdir, *(mine or ({}, 0.0))))
    self._thread = threading.Thread(target=self._renew, name="workdir-lock", daemon=True)
    self._thread.start()

  def _renew(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        found = self._read()
        if found is None or found[0].get("token") != self._holder["token"]:
          logging.warning("workdir %s: the lock is no longer this run's (%s); not "
                          "renewing it", self.workdir, found and found[0])
          return
        self._store.overwrite(self._encoded())
      except OSError as e:  # a storage hiccup: try again at the next beat
        logging.warning("workdir %s: could not renew the lock: %s", self.workdir, e)

  def release(self) -> None:
    """Stops renewing and deletes the lock if it is still this run's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    found = self._read()
    if found is not None and found[0].get("token") == self._holder["token"]:
      self._store.delete()


@contextlib.contextmanager
def hold(workdir: str, stale_after_s: float = 600, heartbeat_s: float = 60
         ) -> Iterator[WorkdirLock]:
  """Holds `workdir`'s lock for the enclosed block (raises WorkdirInUse if taken)."""
  lock = WorkdirLock(workdir, stale_after_s, heartbeat_s)
  lock.acquire()
  try:
    yield lock
  finally:
    lock.release()
