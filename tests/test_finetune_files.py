"""The fine-tuning recipe at reduced size: convert a release, train on user files in latent
space from the converted weights.

Fixtures (`release_fixtures.py`): a reduced release (random bf16 weights, official layout,
two shards, a tokenizer.json with the DeepSeek special tokens), a random SDXL-layout VAE
saved by diffusers, and a folder of mixed-size PNG/JPEG images with captions (one corrupt,
one with an empty caption), a multi-turn LLaVA JSON and a text file. The recipe config
(`configs/janusflow_1p3b_finetune.py`) runs with only sizes overridden: in-process, and as
the user runs it (`python train.py` with the overrides as `--config.*` flags, interrupted
and resumed, then `python sample.py` on the run's workdir).
"""

import json
import os
import re
import shlex
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jf_jax import convert
from jf_jax.checkpoint import params_io
from jf_jax.models import config as model_config
from jf_jax.train import loop
import config_files
import release_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipe_config() -> ml_collections.ConfigDict:
  """The recipe as its file gives it (no overrides)."""
  return config_files.load("janusflow_1p3b_finetune")


def finetune_config(release: str, converted: str, vae_dir: str, data: dict):
  config = recipe_config()
  # Size overrides only (what a user shrinking the recipe would pass on the command line).
  config.model = fx.reduced_model()
  config.tokens = fx.tokens_of(release)
  config.batch.update(dict(und_rows=2, text_rows=2, gen_rows=4, und_seq_len=96,
                           text_seq_len=64, gen_prompt_len=32))
  config.mesh.update(dict(data=2, fsdp=1, tensor=1))  # batch-sharded over 2 devices
  config.optim.update(dict(warmup_steps=2, total_steps=6, learning_rate=1e-3))
  config.train.update(dict(num_steps=6, log_every=1, checkpoint_every=3,
                           init_params_from=converted))
  config.data.update(dict(tokenizer=release, gen_files=(data["images"],),
                          und_files=(data["llava"],), text_files=(data["text"],)))
  config.vae.update(dict(path=vae_dir, **fx.SMALL_SDXL))
  return config


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
  root = tmp_path_factory.mktemp("finetune")
  release = fx.write_release(str(root / "release"))
  vae_dir = str(root / "sdxl-vae")
  fx.write_diffusers_vae(vae_dir)
  data = fx.write_user_data(str(root / "data"))
  converted = str(root / "converted")
  config = finetune_config(release, converted, vae_dir, data)
  convert.official_to_ours(release, converted, config)
  return root, config


def _leaves(config, prefix: str = "") -> dict:
  """{'a.b.c': value} of a (nested) config."""
  out = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def override_flags(config: ml_collections.ConfigDict) -> list[str]:
  """`--config.KEY=VALUE` for every leaf where `config` differs from the recipe file: the
  command line a user shrinking the recipe would type (tuples in Python syntax)."""
  base, ours = _leaves(recipe_config()), _leaves(config)
  assert set(ours) == set(base), set(ours) ^ set(base)  # overrides only, no new keys
  return [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
          for k, v in sorted(ours.items()) if v != base[k]]


def cli_env(num_devices: int = 2) -> dict:
  """The environment of a `train.py`/`sample.py` subprocess: `num_devices` fake CPU
  devices (the recipe's overridden mesh), the tests' exact matmuls."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest")
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={num_devices}"])
  return env


def run_cli(args: list[str], **env) -> subprocess.CompletedProcess:
  # The command as a user would type it (shown with `pytest -s`: the README's rehearsal).
  print("$ python " + shlex.join(args), flush=True)
  out = subprocess.run([sys.executable] + args, cwd=REPO, env=cli_env(**env),
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
  return out


def logged_losses(workdir: str) -> dict[int, float]:
  """{step: loss} of WORKDIR/metrics.jsonl; a step logged twice must agree."""
  losses = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      assert losses.setdefault(row["step"], row["loss"]) == row["loss"], row
  return losses


@pytest.fixture(scope="module")
def trained(recipe):
  """The recipe trained uninterrupted, in-process: (workdir, last logged metrics)."""
  root, config = recipe
  workdir = str(root / "run")
  return workdir, loop.train(config, workdir, devices=jax.devices()[:2])


@pytest.fixture(scope="module")
def cli_run(recipe):
  """`python train.py --config <recipe> <size flags>` stopped after its first checkpoint
  (step 3 of 6) and run again to the end in the same workdir: (workdir, both outputs)."""
  root, config = recipe
  workdir = str(root / "cli_run")
  cmd = ["train.py", "--config=configs/janusflow_1p3b_finetune.py", f"--workdir={workdir}"]
  cmd += override_flags(config)
  first = run_cli(cmd + ["--config.train.num_steps=3"])
  second = run_cli(cmd)
  return workdir, first.stdout, second.stdout


def test_converted_release_is_stored_in_bf16_and_restores(recipe):
  _, config = recipe
  cfg = model_config.from_config_dict(config.model)
  params = params_io.load_params(config.train.init_params_from,
                                 params_io.abstract_params(cfg))
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}


def test_trains_from_converted_weights_on_files_in_latent_space(trained):
  _, last = trained
  assert last["final_step"] == 6
  for key in ("loss", "ar_loss", "rf_loss", "und_loss", "text_loss"):
    assert np.isfinite(last[key]) and last[key] > 0, (key, last[key])
  assert -1 <= last["repa_loss"] <= 1  # negative cosine similarity to SigLIP's features
  # 22 generation items, 24 slots drawn: the corrupt image and the empty caption were met
  # and skipped (counted), the run went on.
  assert last["data/skipped/gen/undecodable_image"] >= 1, last
  assert last["data/skipped/gen/empty_text"] >= 1, last


def test_train_py_stopped_and_resumed_logs_the_uninterrupted_losses(trained, cli_run):
  workdir, first, second = cli_run
  assert "initialised params from" in first and "step 3/3" in first, first[-2000:]
  assert "resumed from" in second and "at step 3" in second, second[-2000:]
  assert "done at step 6" in second, second[-2000:]
  resumed, uninterrupted = logged_losses(workdir), logged_losses(trained[0])
  assert sorted(resumed) == sorted(uninterrupted) == list(range(1, 7))
  for step in range(1, 7):
    # Same config, devices and data order: the resumed steps 4..6 continue the same
    # params, optimizer state, input-pipeline position and PRNG stream.
    np.testing.assert_allclose(resumed[step], uninterrupted[step], rtol=1e-5,
                               err_msg=f"step {step}")
  assert len(set(resumed.values())) == 6  # the loss moves: the check compares something


def test_sample_py_draws_through_the_runs_vae(recipe, cli_run, tmp_path):
  _, config = recipe
  out = str(tmp_path / "fox.png")
  # No --vae and no --tokenizer: the run's config.vae.path and config.data.tokenizer.
  result = run_cli(["sample.py", f"--checkpoint={cli_run[0]}", "--prompt=a red circle",
                    f"--out={out}", "--num=1", "--steps=2", "--min_tile=1"], num_devices=1)
  assert f"wrote {out}" in result.stdout, result.stdout[-2000:]
  # The SDXL-VAE upsamples its latents 8x; --min_tile=1: the tile is not upscaled.
  side = 8 * config.model.latent_size
  with Image.open(out) as image:
    assert image.size == (side, side) and image.mode == "RGB"
    pixels = np.asarray(image)
  assert pixels.std() > 0  # decoded from the latents, not a blank tile


def test_sample_py_answers_about_an_image(recipe, cli_run):
  _, config = recipe
  image = os.path.join(config.data.gen_files[0], "img01.png")
  result = run_cli(["sample.py", f"--checkpoint={cli_run[0]}", f"--image={image}",
                    "--question=What is in the image?", "--max_new_tokens=4"],
                   num_devices=1)
  # The answer follows the timing line (random weights: any text, possibly empty).
  head, marker, answer = result.stdout.rpartition("decoded the answer in")
  assert head and marker, result.stdout[-2000:]
  assert answer.count("\n") >= 2, answer  # the timing line's end, then the answer's line
  print("answer:", repr(answer.split("\n", 1)[1]))


def test_train_py_names_a_missing_vae_directory(recipe, tmp_path):
  _, config = recipe
  missing, workdir = str(tmp_path / "no_vae_here"), tmp_path / "run"
  cmd = ["train.py", "--config=configs/janusflow_1p3b_finetune.py", f"--workdir={workdir}"]
  cmd += override_flags(config) + [f"--config.vae.path={missing}"]
  out = subprocess.run([sys.executable] + cmd, cwd=REPO, env=cli_env(), capture_output=True,
                       text=True, timeout=900)
  assert out.returncode != 0
  assert re.search(r"config\.vae\.path=.*no_vae_here", out.stderr), out.stderr[-3000:]
  assert not (workdir / "checkpoints").exists()  # stopped before training wrote anything
