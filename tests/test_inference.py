"""The inference layer: loading a params checkpoint, prompt rows, batching, grids, and the
tokenizer a config names."""

import os

import jax
import numpy as np
from PIL import Image
import pytest

from jf_jax import config_defaults
from jf_jax.checkpoint import params_io
from jf_jax.data import packing
from jf_jax.data import tokenizer as tok_lib
from jf_jax.inference import grid
from jf_jax.inference import inputs
from jf_jax.inference import loader
from jf_jax.inference import runner
from jf_jax.models import config as model_config
import tiny_checkpoint

CAPTIONS = ["a red circle", "a blue square to the left of a green triangle", "a red square"]
QUESTIONS = ["what color is the circle?", "how many shapes are there?", "is there a square?"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A params dir as `python -m jf_jax.convert` writes it (pixel space, word tokenizer)."""
  return tiny_checkpoint.write_params_dir(
      str(tmp_path_factory.mktemp("inference") / "ckpt"))


def _images(n, seed=0):
  return list(np.random.default_rng(seed).integers(0, 255, (n, 40, 30, 3), np.uint8))


def test_load_params_dir(checkpoint):
  loaded = loader.load(checkpoint, dtype="bfloat16")
  assert params_io.checkpoint_kind(checkpoint) == params_io.PARAMS and loaded.step is None
  assert loaded.cfg.llm.embed_dim == config_defaults.model_tiny().llm.embed_dim
  dtypes = {x.dtype for x in jax.tree.leaves(loaded.params)}
  assert dtypes == {np.dtype(jax.numpy.bfloat16)}  # cast to the requested compute dtype
  # generation.json names pixel space: the decoder is the identity, with no params.
  latents = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(loaded.decode_fn(loaded.decode_params, latents), latents)
  assert loaded.decode_params == {}
  assert loaded.tok.special_ids() == {k: config_defaults.tokens_tiny()[k]
                                      for k in tok_lib.SPECIAL_TOKENS}
  assert loader.load(checkpoint, image_decoder=False).decode_fn is None


def test_params_dir_without_generation_file_is_in_the_release_space(checkpoint, tmp_path):
  """No generation.json: the release's SDXL-VAE space, whose 4 latent channels do not fit
  this RGB model (the error names the keys)."""
  for name in ("params", "model.json", "tokenizer.json"):
    os.symlink(os.path.join(checkpoint, name), tmp_path / name)
  with pytest.raises(ValueError, match="config.vae.latent_channels=4"):
    loader.load(str(tmp_path))


def test_load_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    loader.load(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="neither a params checkpoint"):
    loader.load(str(tmp_path))


def test_generation_prompts_are_the_training_rows():
  tok = tiny_checkpoint.tokenizer()
  ids, mask = inputs.generation_prompts(tok, CAPTIONS)
  longest = max(len(packing.gen_prompt_ids(tok, c)) for c in CAPTIONS)
  assert ids.shape == mask.shape == (3, longest)
  for row_ids, row_mask, caption in zip(ids, mask, CAPTIONS):
    want = packing.gen_prompt_ids(tok, caption)
    assert row_ids[row_mask].tolist() == want and row_mask[-len(want):].all()
    assert not row_mask[:-len(want)].any() and (row_ids[~row_mask] == tok.pad_id).all()


def test_understanding_prompts_left_pad_one_image_block():
  cfg = model_config.from_config_dict(config_defaults.model_tiny())
  tok = tiny_checkpoint.tokenizer()
  rows = inputs.understanding_prompts(tok, cfg, QUESTIONS, _images(3), "")
  n, seq = rows["ids"].shape
  size = cfg.und_encoder.image_size
  assert rows["images"].shape == (n, 1, size, size, 3)
  for r, question in enumerate(QUESTIONS):
    want, flags = packing.und_prompt_ids(tok, question, cfg.und_encoder.num_patches, "")
    assert rows["ids"][r, seq - len(want):].tolist() == want
    assert rows["valid"][r].sum() == len(want) and rows["valid"][r, -1]
    assert rows["image_mask"][r, seq - len(want):].tolist() == flags
    assert rows["image_mask"][r].sum() == cfg.num_und_tokens
  with pytest.raises(ValueError, match="2 questions but 3 images"):
    inputs.understanding_prompts(tok, cfg, QUESTIONS[:2], _images(3), "")


def test_batching_does_not_change_results(checkpoint):
  """Greedy answers and per-batch-seeded images do not depend on how rows are batched
  (the last batch is padded to the batch shape)."""
  loaded = loader.load(checkpoint)
  images = _images(3, seed=1)
  one_batch = runner.answer_questions(loaded, images, QUESTIONS, max_new_tokens=3,
                                      batch_size=3)
  assert runner.answer_questions(loaded, images, QUESTIONS, max_new_tokens=3,
                                 batch_size=2) == one_batch
  pics = runner.generate_images(loaded, CAPTIONS, steps=2, guidance=2.0, seed=3,
                                batch_size=2)
  size = loaded.cfg.latent_size
  assert pics.shape == (3, size, size, 3) and pics.dtype == np.uint8
  again = runner.generate_images(loaded, CAPTIONS[:2], steps=2, guidance=2.0, seed=3,
                                 batch_size=2)
  np.testing.assert_array_equal(again, pics[:2])  # batch 0: same rows, same key


def test_save_grid_layout(tmp_path):
  tiles = np.stack([np.full((4, 6, 3), 40 * (i + 1), np.uint8) for i in range(3)])
  grid.save_grid(tiles, str(tmp_path / "plain.png"))
  plain = np.asarray(Image.open(tmp_path / "plain.png"))
  assert plain.shape == (8, 12, 3)  # 2 x 2 tiles, row-major
  assert plain[0, 0, 0] == 40 and plain[0, 6, 0] == 80 and plain[4, 0, 0] == 120
  assert plain[4, 6, 0] == 255  # no fourth image
  grid.save_grid(tiles, str(tmp_path / "sub" / "sheet.png"), scale=2, gap=1)
  sheet = np.asarray(Image.open(tmp_path / "sub" / "sheet.png"))
  assert sheet.shape == (2 * 2 * 5, 2 * 2 * 7, 3)
  assert sheet[0, 0, 0] == 40 and sheet[0, 2 * 6, 0] == 255 and sheet[0, 2 * 7, 0] == 80


def test_config_names_a_tokenizer_module(tmp_path):
  config = config_defaults.base_config()
  config.data.tokenizer = "shapes"  # the project package jf_jax.shapes
  shapes_tok = tok_lib.make_tokenizer(config)
  config.data.tokenizer = "jf_jax.shapes.vocabulary"  # a dotted module path
  assert tok_lib.make_tokenizer(config).hf.get_vocab() == shapes_tok.hf.get_vocab()
  config.data.tokenizer = "no_such_world"
  with pytest.raises(FileNotFoundError, match="neither a directory holding tokenizer.json"):
    tok_lib.make_tokenizer(config)
  config.data.tokenizer = "jf_jax.data.templates"
  with pytest.raises(ValueError, match="has no tokenizer"):
    tok_lib.make_tokenizer(config)
  config.data.tokenizer = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    tok_lib.make_tokenizer(config)


def test_a_run_with_ema_is_sampled_with_its_moving_average(checkpoint, tmp_path):
  """`train.ema_decay` > 0: `load` reads the workdir's `ema_params` (by default and with
  ema=True), `ema=False` its raw params; the two differ after training."""
  from jf_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = config_defaults.base_config()
  config.stage = 3
  config.batch.update(dict(und_rows=2, text_rows=2, gen_rows=2, und_seq_len=32,
                           text_seq_len=16, gen_prompt_len=8))
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.optim.update(dict(learning_rate=3e-3, warmup_steps=0))
  config.train.update(dict(num_steps=2, checkpoint_every=2, ema_decay=0.5))
  workdir = str(tmp_path / "run")
  loop.train(config, workdir, devices=jax.devices()[:1])
  kw = dict(tokenizer=checkpoint, image_decoder=False)
  default, raw = loader.load(workdir, **kw), loader.load(workdir, ema=False, **kw)
  assert default.ema and not raw.ema
  abstract = params_io.abstract_params(default.cfg)
  ema = params_io.restore_any(workdir, abstract, jax.tree.map(lambda _: None, abstract),
                              ema=True)
  for got, want in zip(jax.tree.leaves(default.params), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  differ = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(default.params),
                                                      jax.tree.leaves(raw.params))]
  assert any(differ)
