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
  """Tiles upscaled to >= 256 px, labelled in grid.json; capitals are lower-cased for the
  case-free vocabulary and the one unknown word is named."""
  out = checkpoint / "grid.png"
  prompt = "A Red fox circle"
  proc = _run(f"--checkpoint={checkpoint / 'ckpt'}", f"--prompt={prompt}", f"--out={out}",
              "--num=3", "--steps=2", "--cfg=2.0", "--seed=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sampled in" in proc.stdout and "wrote" in proc.stdout
  warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and warnings[0].endswith("<unk>: fox"), proc.stderr[-3000:]
  size = tiny_checkpoint.config().model.latent_size
  tile = size * -(-256 // size)  # the smallest multiple of the size >= 256 px
  assert Image.open(out).size == (2 * tile, 2 * tile)  # 3 images: 2 x 2 grid
  with open(checkpoint / "grid.json") as f:
    sidecar = json.load(f)
  assert sidecar["tile_pixels"] == [tile, tile] and sidecar["generated_pixels"] == [size, size]
  assert [(t["row"], t["column"], t["prompt"]) for t in sidecar["tiles"]] == [
      (0, 0, prompt), (0, 1, prompt), (1, 0, prompt)]


BAD_FLAGS = {"max_new_tokens": "0", "temperature": "-1", "top_p": "0", "num": "0"}


def test_bad_flag_values_fail_before_loading(checkpoint):
  """Each is one line naming the flag, exit status 2, before the checkpoint is read (the
  checkpoint does not exist: its error would come later)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  (checkpoint / "corrupt.png").write_bytes(b"\x89PNG not really")
  runs = {flag: ["--prompt=a red circle" if flag == "num" else "--question=what?",
                 f"--image={checkpoint / 'cat.png'}" if flag != "num" else "--cfg=2",
                 f"--{flag}={value}"] for flag, value in BAD_FLAGS.items()}
  runs["image"] = ["--question=what?", f"--image={checkpoint / 'corrupt.png'}"]
  procs = {name: subprocess.Popen(
      [sys.executable, "sample.py", "--checkpoint=/nonexistent/ckpt", *args], cwd=REPO,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for name, args in runs.items()}
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (name, stderr[-2000:])
    assert f"--{name}" in lines[0] and "nonexistent" not in lines[0], lines[0]


def test_question_prints_an_answer(checkpoint):
  proc = _run(f"--checkpoint={checkpoint / 'ckpt'}", f"--image={checkpoint / 'cat.png'}",
              "--question=what shape is it?", "--max_new_tokens=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "decoded" in proc.stdout


def test_image_and_prompt_write_the_edited_image(checkpoint):
  """--image + --prompt edits: OUT is one image at the generated size."""
  out = checkpoint / "edited.png"
  proc = _run(f"--checkpoint={checkpoint / 'ckpt'}", f"--image={checkpoint / 'cat.png'}",
              "--prompt=make the red circle blue", f"--out={out}", "--steps=2",
              "--guidance_text=2.5", "--guidance_image=1.5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "edited in" in proc.stdout and "guidance text 2.5 image 1.5" in proc.stdout
  size = tiny_checkpoint.config().model.latent_size
  assert np.asarray(Image.open(out)).shape == (size, size, 3)


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
