"""A `python -m jf_jax.serve` subprocess for the tests (tests/test_serve.py, and the LoRA
workdir check in tests/test_lora.py): started on a free 127.0.0.1 port, ready when
/health says so, stopped with SIGTERM."""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def env() -> dict:
  """sample.py's and the server's environment: one CPU device, default precision."""
  out = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  out.pop("XLA_FLAGS", None)
  return out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(checkpoint, flags, log_path, timeout_s: float = 900):
  """Yields (base URL, process) of a ready server on `checkpoint` with `flags`; its output
  goes to `log_path`."""
  port = free_port()
  log_path = pathlib.Path(log_path)
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jf_jax.serve", f"--checkpoint={checkpoint}", f"--port={port}",
         *flags], cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
      deadline = time.time() + timeout_s
      while time.time() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
          if httpx.get(f"{base}/health", timeout=5).status_code == 200:
            break
        except httpx.TransportError:
          pass
        time.sleep(1)
      else:
        pytest.fail("the server did not become ready: " + log_path.read_text())
      yield base, proc
    finally:
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def sample_py(*args: str) -> subprocess.CompletedProcess:
  """sample.py in the server's environment; fails the test on a nonzero exit."""
  proc = subprocess.run([sys.executable, "sample.py", *args], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc
