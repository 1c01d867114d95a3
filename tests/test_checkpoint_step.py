"""A training workdir exports (`python -m jf_jax.convert --reverse --src WORKDIR`) and
any of its steps can be chosen (`--step N`: convert, sample.py, the bench; `loader.load`).

The workdir is `tiny_checkpoint.write_workdir`'s: checkpoints at steps 10 and 20 holding
different random params of the tiny model.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from jf_jax import convert
from jf_jax.bench import cli
from jf_jax.checkpoint import convert_hf
from jf_jax.inference import loader
from jf_jax.models import config as model_config
import tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("step")
  written = tiny_checkpoint.write_workdir(str(root / "run"), steps=(10, 20))
  return root, written


def _official(params, config) -> dict:
  cfg = model_config.from_config_dict(config.model)
  return convert_hf.to_state_dict(jax.tree.map(np.asarray, params), cfg)


def _assert_same_tensors(actual: dict, expected: dict) -> None:
  assert sorted(actual) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(np.asarray(actual[name]), value, err_msg=name)


def test_convert_reverse_from_a_workdir_cli_with_step(workdir):
  root, written = workdir
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  dst = root / "official_step10"
  proc = subprocess.run([sys.executable, "-m", "jf_jax.convert", "--reverse",
                         f"--src={root / 'run'}", f"--dst={dst}", "--step=10"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config, _ = loader.load_config(str(root / "run"))
  _assert_same_tensors(convert_hf.load_state_dict(str(dst)), _official(written[10], config))


def test_convert_reverse_from_a_workdir_reads_the_latest_step(workdir):
  root, written = workdir
  dst = root / "official_latest"
  convert.ours_to_official(str(root / "run"), str(dst))
  config, step = loader.load_config(str(root / "run"))
  assert step == 20
  _assert_same_tensors(convert_hf.load_state_dict(str(dst)), _official(written[20], config))


def test_load_reads_the_chosen_step(workdir):
  root, written = workdir
  for step in (10, 20):
    loaded = loader.load(str(root / "run"), image_decoder=False, step=step)
    assert loaded.step == step
    got = jax.tree.leaves(jax.tree.map(np.asarray, loaded.params))
    for a, b in zip(got, jax.tree.leaves(written[step])):
      np.testing.assert_array_equal(a, np.asarray(b, a.dtype))


def test_a_missing_step_names_the_steps_there(workdir, tmp_path):
  root, _ = workdir
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 15 .* steps 10, 20"):
    loader.load(str(root / "run"), image_decoder=False, step=15)
  params_dir = tiny_checkpoint.write_params_dir(str(tmp_path / "ckpt"))
  with pytest.raises(ValueError, match="--step=3: .* is a params directory"):
    loader.load(params_dir, image_decoder=False, step=3)
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 15"):
    convert.ours_to_official(str(root / "run"), str(tmp_path / "never"), step=15)
  assert not (tmp_path / "never").exists()


def test_bench_records_the_chosen_step(workdir):
  root, _ = workdir
  Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(root / "cat.png")
  (root / "q.jsonl").write_text(json.dumps(
      {"question_id": 1, "image": "cat.png", "text": "what color is it?"}) + "\n")
  out = root / "vqa"
  cli.run(["vqa", f"--checkpoint={root / 'run'}", f"--out={out}", "--step=10",
           f"--questions={root / 'q.jsonl'}", f"--image_root={root}", "--max_new_tokens=2",
           "--batch_per_device=1", "--devices=1"])
  with open(out / "run.json") as f:
    assert json.load(f)["settings"]["checkpoint_step"] == 10
