"""Test setup: 8 fake CPU devices (set before JAX is imported), exact matmuls, and a
persistent compilation cache so identical programs compiled by several tests (and by the
`train.py` subprocesses) compile once."""

import os
import tempfile

# Collectives between fake devices are threads on 2 cores; under load they can take longer
# than XLA's default 40 s rendezvous timeout, so the timeouts are raised.
os.environ.setdefault("XLA_FLAGS", " ".join([
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_collective_timeout_seconds=900",
    "--xla_cpu_collective_call_terminate_timeout_seconds=900"]))
# The suite runs on (fake) CPU devices. With libtpu installed (the `test` extra, for the AOT
# test) JAX would otherwise start the TPU plugin in every process, print warnings about
# the missing TPU and hold libtpu's /tmp lockfile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = os.path.join(tempfile.gettempdir(), "jf_jax_test_compilation_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def gcs():
  """A GCS endpoint on a free 127.0.0.1 port (`gcs_emulator.py`) with a bucket "bucket";
  its environment is set in this process while the session runs (`gcs.env` is what
  subprocesses need: `dict(os.environ)` already holds it)."""
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  emulator = gcs_emulator.Emulator(buckets=("bucket",))
  saved = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  yield emulator
  emulator.stop()
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value
