"""A short version of the default job (`python train.py`, issue 5): trains a few steps on a
small shapes world, then writes the PNG grid and the JSON with both scores.

Runs as a subprocess, as a user would (train.py's absl flags would clash with other CLIs
imported by the test session). The model is configs/default.py's; only the step counts
(encoder pre-training included), the dataset size and the evaluation are cut down. XLA's backend optimisation is turned
off: a few steps do not pay for LLVM's optimisation of the step and sampler programs.
"""

import json
import os
import pathlib
import subprocess
import sys

from PIL import Image

import config_files

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_short_main_job_writes_grid_and_scores(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  args = [
      "--workdir", str(workdir),
      # Both of the default's mixtures: understanding rows only, then from step 1 on
      # understanding + generation rows (config.batch.switch).
      "--config.train.num_steps=2", "--config.train.log_every=1",
      "--config.batch.switch.step=1",
      "--config.encoder_pretrain.steps=20", "--config.encoder_pretrain.log_every=10",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.data.num_train=60", "--config.data.num_validation=4",
      "--config.data.num_test=12",
      "--config.eval.num_gen=4", "--config.eval.num_und=6", "--config.eval.steps=2",
      "--config.eval.batch_size=4", "--config.eval.grid_size=4",
      "--config.eval.show_questions=3",
  ]
  proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  out = proc.stdout
  assert "encoder step 20/20" in out and "encoder pre-trained in" in out
  assert "done at step 2" in out
  switch = config_files.load("default").batch.switch  # the default's second mixture
  assert (f"step 1: batches now hold und/text/gen rows {switch.und_rows}/"
          f"{switch.text_rows}/{switch.gen_rows}") in out
  assert switch.gen_rows > 0
  assert "generation score" in out and "understanding accuracy" in out
  assert out.count("Q: ") == 3

  grid = Image.open(workdir / "samples_test.png")
  assert grid.mode == "RGB"
  assert grid.size == (4 * (2 * 33), 4 * (2 * 33))  # 2x2 tiles of 32 px + 1 px gaps, x4

  result = json.loads((workdir / "main_job.json").read_text())
  assert {"split", "step", "generation", "understanding", "eval_seconds", "wall_seconds",
          "train_seconds", "train_metrics", "command"} <= set(result)
  assert result["split"] == "test" and result["step"] == 2
  gen, und = result["generation"], result["understanding"]
  assert {"score", "count_accuracy", "objects_accuracy", "position_accuracy",
          "num_images", "steps", "guidance", "grid", "samples"} <= set(gen)
  assert gen["num_images"] == 4 and len(gen["samples"]) == 4 and 0 <= gen["score"] <= 1
  assert pathlib.Path(gen["grid"]) == (workdir / "samples_test.png").resolve()
  assert {"accuracy", "num_questions", "accuracy_by_type", "examples"} <= set(und)
  assert und["num_questions"] == 6 and 0 <= und["accuracy"] <= 1
  assert len(und["examples"]) == 3
  assert {"question", "answer", "prediction"} <= set(und["examples"][0])
  assert {"loss", "ar_loss", "rf_loss"} <= set(result["train_metrics"])
  assert result["train_metrics"]["rf_loss"] > 0  # the last step trained generation rows
