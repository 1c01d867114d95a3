"""Config validation before anything is built (`jf_jax/train/validate.py`): every problem
at once, each naming its config key; gs:// paths checked on a real storage emulator;
train.py stops with them before initialising anything."""

import os
import socket
import subprocess
import sys

from etils import epath
import pytest

import config_files
from jf_jax.train import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["default", "tiny", "tiny_shapes"])
def test_shipped_configs_have_no_problems(name):
  assert validate.problems(config_files.load(name)) == []


def test_the_1p3b_configs_ask_for_exactly_the_paths_the_user_passes():
  """The README's commands pass these keys (the VAE, the tokenizer, the data files)."""
  keys = lambda name: sorted(p.split("=")[0] for p in
                             validate.problems(config_files.load(name)))
  assert keys("janusflow_1p3b") == ["config.vae.path"]
  assert keys("janusflow_1p3b_finetune") == [
      "config.batch.gen_rows", "config.batch.text_rows", "config.batch.und_rows",
      "config.data.tokenizer", "config.vae.path"]


def _bad_files_config(tmp_path):
  config = config_files.load("tiny")
  (tmp_path / "text.txt").write_text("hello\n")
  config.data.update(dict(source="files", gen_files=(str(tmp_path / "no_images"),),
                          und_files=(str(tmp_path / "text.txt"),), text_files=(),
                          tokenizer=str(tmp_path / "no_tokenizer")))
  config.train.update(dict(num_steps=0, init_params_from=str(tmp_path / "no_ckpt")))
  config.optim.learning_rate = -1.0
  config.loss.cfg_drop_prob = 1.5
  config.batch.text_rows = 2
  config.optim.schedule = "cosin"
  return config


def test_every_problem_is_reported_with_its_key(tmp_path):
  found = validate.problems(_bad_files_config(tmp_path))
  expected_keys = ["config.train.num_steps=0", "config.optim.learning_rate=-1.0",
                   "config.loss.cfg_drop_prob=1.5", "config.optim.schedule='cosin'",
                   "config.data.gen_files[0]=", "config.batch.text_rows=2 but "
                   "config.data.text_files is empty", "config.data.tokenizer=",
                   "config.train.init_params_from="]
  assert len(found) == len(expected_keys), found
  for key, problem in zip(sorted(expected_keys), sorted(found)):
    assert problem.startswith(key), (key, problem)
  with pytest.raises(validate.ConfigError, match=f"{len(found)} problem"):
    validate.check_config(_bad_files_config(tmp_path))


def test_edit_drop_shares_over_one_are_named_together():
  config = config_files.load("default")
  config.loss.edit_drop_text, config.loss.edit_drop_image = 0.6, 0.5
  found = validate.problems(config)
  assert len(found) == 1 and found[0].startswith(
      "config.loss.edit_drop_text + edit_drop_image + edit_drop_both = 1.15"), found
  config.loss.edit_drop_image = 0.3
  assert not validate.problems(config)


def test_unknown_source_is_named():
  config = config_files.load("tiny")
  config.data.source = "filez"
  assert validate.problems(config) == [
      "config.data.source='filez': expected synthetic, files, records or the name of a data "
      "package "
      "(e.g. shapes)"]


@pytest.fixture(scope="module")
def gcs():
  """A GCS emulator on 127.0.0.1 with a bucket "bucket" (gcsfs, behind epath, reads
  STORAGE_EMULATOR_HOST)."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket="bucket")
  server.start()
  saved = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  yield "gs://bucket"
  server.stop()
  if saved is None:
    os.environ.pop("STORAGE_EMULATOR_HOST")
  else:
    os.environ["STORAGE_EMULATOR_HOST"] = saved


def test_gs_paths_are_checked_where_they_live(gcs):
  (epath.Path(gcs) / "tok" / "tokenizer.json").write_text("{}")
  (epath.Path(gcs) / "images" / "a.txt").write_text("a red circle")
  config = config_files.load("tiny")
  config.batch.update(dict(und_rows=0, text_rows=0))
  config.data.update(dict(source="files", tokenizer=f"{gcs}/tok",
                          gen_files=(f"{gcs}/images", f"{gcs}/missing")))
  assert validate.problems(config) == [
      f"config.data.gen_files[1]={gcs}/missing: does not exist"]


def test_train_py_lists_the_problems_before_building_anything(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "train.py", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}",
       "--config.data.source=filez", "--config.train.num_steps=0"], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "devices:" not in proc.stdout and not (tmp_path / "w").exists()
  assert proc.stderr.splitlines() == [
      "train.py: error: config has 2 problem(s) (nothing was built):",
      "  config.train.num_steps=0: must be > 0",
      "  config.data.source='filez': expected synthetic, files, records or the name of a data package "
      "(e.g. shapes)"]


def test_plug_in_names_are_checked():
  config = config_files.load("default")
  config.after_training = "jf_jax.shapes.main_jobb"
  assert validate.problems(config) == [
      "config.after_training='jf_jax.shapes.main_jobb': no module of that name (a dotted "
      "path or jf_jax.NAME)"]


def test_records_source_names_each_missing_pattern_and_each_task_without_records(tmp_path):
  """config.data.source='records' (`python -m jf_jax.prepare` shards): a pattern that
  matches nothing and a task with rows but no patterns are each reported by key."""
  shard = tmp_path / "gen-00000-of-00001.array_record"
  shard.write_bytes(b"")
  config = config_files.load("tiny")
  config.data.update(dict(source="records", gen_records=(str(tmp_path / "gen-*"),),
                          und_records=(str(tmp_path / "nothing-*"),), text_records=()))
  found = validate.problems(config)
  assert not [p for p in found if p.startswith("config.data.gen_records")], found
  assert any(p.startswith("config.data.und_records[0]: ") and "matches no file" in p
             for p in found), found
  assert any(p.startswith("config.batch.text_rows=") and "config.data.text_records is empty"
             in p for p in found), found
