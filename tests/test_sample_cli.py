"""`sample.py` end to end on a tiny params checkpoint: a PNG grid, an answer, clear errors.

The checkpoint is random tiny params written like `python -m jf_jax.convert` writes them
(params/ + model.json) plus the shapes world's tokenizer saved as `tokenizer.json`; images
are decoded in pixel space (its generation.json). Runs as subprocesses, like a user would (and
because sample.py's absl flags would clash with other CLIs imported by the test session).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import tiny_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp("sample_cli")
  tiny_checkpoint.write_params_dir(str(root / "ckpt"))
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(
      root / "cat.png")
  return root


def _run(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "sample.py", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_prompt_writes_a_grid(checkpoint):
  out = checkpoint / "grid.png"
  proc = _run(f"--checkpoint={checkpoint / 'ckpt'}", "--prompt=a red circle", f"--out={out}",
              "--num=3", "--steps=2", "--cfg=2.0", "--seed=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sampled in" in proc.stdout and "wrote" in proc.stdout
  size = tiny_checkpoint.config().model.latent_size
  assert Image.open(out).size == (2 * size, 2 * size)  # 3 images: 2 x 2 grid


def test_question_prints_an_answer(checkpoint):
  proc = _run(f"--checkpoint={checkpoint / 'ckpt'}", f"--image={checkpoint / 'cat.png'}",
              "--question=what shape is it?", "--max_new_tokens=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "decoded" in proc.stdout


def test_missing_tokenizer_and_vae_are_named(checkpoint, tmp_path):
  bare = tmp_path / "bare"
  bare.mkdir()
  os.symlink(checkpoint / "ckpt" / "params", bare / "params")
  os.symlink(checkpoint / "ckpt" / "model.json", bare / "model.json")
  proc = _run(f"--checkpoint={bare}", "--prompt=a red circle")
  assert proc.returncode != 0 and "no tokenizer.json" in proc.stderr
  # A latent-space params dir (its generation.json) without its VAE.
  os.symlink(checkpoint / "ckpt" / "tokenizer.json", bare / "tokenizer.json")
  (bare / "generation.json").write_text(json.dumps(
      {"data": {"gen_space": "sdxl_vae"}, "vae": {"latent_channels": 3}}))
  proc = _run(f"--checkpoint={bare}", "--prompt=a red circle")
  assert proc.returncode != 0 and "no VAE at" in proc.stderr and "--vae" in proc.stderr
