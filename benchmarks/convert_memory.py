r"""Peak resident memory of `python -m jf_jax.convert` on a release-sized checkpoint.

Writes random bfloat16 weights in the official safetensors layout (all 587 tensors of the
1.3B release, ~3.8 GiB, in shards of at most --shard_gib so this writer stays small), runs
the converter in a fresh process, prints its last line (which reports the peak) and the
child's peak from `getrusage(RUSAGE_CHILDREN)`, then deletes both directories.

  python benchmarks/convert_memory.py                     # full 1.3B size, needs ~12 GB disk
  python benchmarks/convert_memory.py --llm_layers 6      # smaller, for a before/after
  python benchmarks/convert_memory.py --jf_path /work/main  # another checkout's converter
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import ml_dtypes
import numpy as np
import safetensors.numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax import config_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.checkpoint import convert_hf  # pylint: disable=wrong-import-position
from jf_jax.checkpoint import params_io  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_LLM_LAYERS = flags.DEFINE_integer("llm_layers", 24, "LLM layers (24 = the release).")
_SHARD_GIB = flags.DEFINE_float("shard_gib", 0.5, "Largest safetensors shard written.")
_TMP = flags.DEFINE_string("tmp", None, "Where to write (default: the system temp dir).")
_JF_PATH = flags.DEFINE_string("jf_path", _ROOT, "Checkout whose jf_jax.convert runs.")


def write_random_release(directory: str, expected: dict, shard_bytes: float) -> int:
  """Random bf16 tensors of `expected` shapes in sharded safetensors; returns bytes."""
  rng = np.random.default_rng(0)
  shard, size, index, total = {}, 0, 0, 0

  def flush():
    nonlocal shard, size, index
    if shard:
      safetensors.numpy.save_file(shard, os.path.join(
          directory, f"model-{index:05d}.safetensors"), metadata={"format": "pt"})
      shard, size, index = {}, 0, index + 1

  for name, shape in sorted(expected.items()):
    tensor = (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)
    shard[name] = tensor
    size += tensor.nbytes
    total += tensor.nbytes
    if size >= shard_bytes:
      flush()
  flush()
  return total


def main(argv):
  del argv
  model = config_defaults.model_1p3b()
  model.llm.num_layers = _LLM_LAYERS.value
  model.repa.layer = min(model.repa.layer, _LLM_LAYERS.value)
  cfg = model_config.from_config_dict(model)
  expected = convert_hf.expected_official_shapes(cfg, params_io.abstract_params(cfg))
  root = tempfile.mkdtemp(prefix="jf_convert_mem_", dir=_TMP.value)
  src, dst = os.path.join(root, "release"), os.path.join(root, "converted")
  os.makedirs(src)
  try:
    nbytes = write_random_release(src, expected, _SHARD_GIB.value * 2**30)
    print(f"wrote {len(expected)} random bf16 tensors ({nbytes / 2**30:.2f} GiB) to {src}",
          flush=True)
    cmd = [sys.executable, "-m", "jf_jax.convert", "--src", src, "--dst", dst,
           "--config", os.path.join(_ROOT, "configs", "janusflow_1p3b.py"),
           f"--config.model.llm.num_layers={_LLM_LAYERS.value}",
           f"--config.model.repa.layer={model.repa.layer}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_JF_PATH.value)
    proc = subprocess.run(cmd, env=env, cwd=_JF_PATH.value, capture_output=True, text=True,
                          check=False)
    if proc.returncode:
      raise RuntimeError(f"convert failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    print(f"converter ({_JF_PATH.value}) last line: {lines[-1]}")
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"convert peak resident memory (getrusage children): {child:.2f} GiB for "
          f"{nbytes / 2**30:.2f} GiB of bf16 weights (LLM layers {_LLM_LAYERS.value})")
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
