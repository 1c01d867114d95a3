"""The files in configs/: one step count, default.py on top of tiny_shapes.py, and the
1.3B config's stage-2 batch that splits over a v5p:4x4x4 slice without extra flags."""

import types

import pytest

from jf_jax import config_defaults
from jf_jax.train import loop
from jf_jax.train import optim
import config_files


@pytest.mark.parametrize("name", ["tiny", "tiny_shapes", "default", "janusflow_1p3b"])
def test_total_steps_follows_num_steps_unless_set(name):
  config = config_files.load(name)
  assert optim.from_config(config).total_steps == config.train.num_steps
  config.train.num_steps = 12_345
  assert optim.from_config(config).total_steps == 12_345
  # A run shorter than the warmup ends inside it (the cosine schedule stays valid).
  config.train.num_steps = 2
  resolved = optim.from_config(config)
  assert resolved.total_steps == max(2, config.optim.warmup_steps + 1)
  assert 0 <= optim.make_schedule(resolved)(1) < config.optim.learning_rate
  config.optim.total_steps = 99
  assert optim.from_config(config).total_steps == 99
  # The stage's freeze regexes come first, then the user's.
  config.optim.freeze = ("repa_projector/.*",)
  freeze = optim.from_config(config).freeze
  assert freeze == optim.stage_freeze_regexes(config.stage) + ("repa_projector/.*",)


def test_default_builds_on_tiny_shapes():
  default, shapes = config_files.load("default"), config_files.load("tiny_shapes")
  # Inherited unchanged: the model but the generation stem's width, the data source.
  assert default.model.llm == shapes.model.llm
  assert default.model.und_encoder == shapes.model.und_encoder
  assert default.model.latent_size == shapes.model.latent_size
  for key in ("source", "tokenizer", "gen_space", "image_size"):
    assert default.data[key] == shapes.data[key]
  # Its own: stage 2 with a pre-trained, frozen understanding tower and the cosine
  # schedule over the run's steps.
  assert default.stage == 2 and default.encoder_pretrain.steps > 0
  assert optim.make_schedule(optim.from_config(default))(default.train.num_steps) == (
      pytest.approx(default.optim.end_learning_rate))


def _fake_mesh(**shape):
  return types.SimpleNamespace(shape=dict(dict(data=1, fsdp=1, tensor=1), **shape))


def test_1p3b_carries_the_stage2_batch():
  config = config_files.load("janusflow_1p3b")
  b = config.batch
  phases = [(b.und_rows, b.gen_rows, b.text_rows),
            (b.switch.und_rows, b.switch.gen_rows, b.switch.text_rows)]
  assert [sum(p) for p in phases] == [512, 512]  # the paper's batch size
  assert b.switch.step == 10_000
  # und:gen:text near 30:50:20, then near 14:80:6: rows are multiples of 64, each task
  # within one such step of its share (text keeps 64 rows rather than none).
  for rows, paper in zip(phases, [(30, 50, 20), (14, 80, 6)]):
    assert all(r % 64 == 0 and r > 0 for r in rows), rows
    for r, share in zip(rows, paper):
      assert abs(r / 512 - share / 100) < 64 / 512, (rows, paper)
  # 576 image tokens fit with text to spare; generation rows are 64-multiples.
  assert b.und_seq_len > 578 and b.und_seq_len % 64 == 0
  assert (b.gen_prompt_len + 1 + (config.model.latent_size // 2) ** 2) % 64 == 0
  # The batch check of the AOT tool's v5p:4x4x4 (64 chips, pure FSDP) passes as is.
  loop.check_batch_config(config, _fake_mesh(fsdp=64))
  with pytest.raises(ValueError, match="config.batch"):
    loop.check_batch_config(config, _fake_mesh(fsdp=256))


def test_checkpoints_with_removed_options_off_still_load():
  """Model configs saved before 2026-12-03 carry the removed position-embedding options
  switched off: they load; one switched on is refused, naming it."""
  from jf_jax.models import config as model_config  # pylint: disable=g-import-not-at-top
  old = config_defaults.model_tiny().to_dict()
  old["und_encoder"]["llm_position_embedding"] = False
  old["gen_encoder"]["position_embedding"] = False
  assert model_config.from_config_dict(old) == model_config.from_config_dict(
      config_defaults.model_tiny())
  old["gen_encoder"]["position_embedding"] = True
  with pytest.raises(ValueError, match="GenEncoderConfig.position_embedding=True"):
    model_config.from_config_dict(old)
