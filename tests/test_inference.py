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
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import grid
from jf_jax.inference import inputs
from jf_jax.inference import loader
from jf_jax.models import config as model_config
from jf_jax.parallel import mesh as mesh_lib
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


@pytest.fixture(scope="module")
def engine(checkpoint):
  """An engine on one device with one batch bucket of 4 rows (conftest gives 8 devices;
  the bench tests compare 1 and 8). In one compiled shape a row never depends on the
  others; across shapes XLA:CPU may round differently (docs/serving.md)."""
  config = engine_lib.default_config()
  config.batch_buckets = (4,)
  return engine_lib.Engine(loader.load(checkpoint), config,
                           engine_lib.local_mesh(1))


def test_images_do_not_depend_on_their_batch(engine):
  """Each image's noise comes from (seed, its index in the request): a caption batched
  with others gives the pixels it gives alone (padded with copies of itself)."""
  keys = engine_lib.request_keys(3, len(CAPTIONS))
  together = engine.generate(CAPTIONS, keys=keys, steps=2, guidance=2.0)
  size = engine.loaded.cfg.latent_size
  assert together.shape == (3, size, size, 3) and together.dtype == np.uint8
  for i, caption in enumerate(CAPTIONS):
    alone = engine.generate([caption], keys=engine_lib.request_keys(3, 1, start=i), steps=2,
                            guidance=2.0)
    np.testing.assert_array_equal(alone[0], together[i])
  twice = engine.generate([CAPTIONS[0]] * 2, keys=engine_lib.request_keys(3, 2), steps=2,
                          guidance=2.0)
  np.testing.assert_array_equal(twice[0], together[0])
  assert not np.array_equal(twice[0], twice[1])  # same prompt, own key, other image


def test_answers_do_not_depend_on_their_batch(engine):
  """Greedy and sampled answers (per-row keys, temperature, top_p, token limits) of rows
  batched together equal each row decoded alone."""
  images = _images(3, seed=1)
  keys = engine_lib.request_keys(5, 3)
  settings = dict(max_new_tokens=[3, 5, 4], temperature=[0.0, 1.0, 0.7], top_p=[1.0, 0.9, 1.0])
  together = engine.answer(images, QUESTIONS, keys=keys, **settings)
  for i in range(3):
    alone, = engine.answer([images[i]], [QUESTIONS[i]], keys=keys[i:i + 1],
                           **{k: v[i] for k, v in settings.items()})
    assert alone == together[i]
  assert all(a.completion_tokens <= n for a, n in zip(together, settings["max_new_tokens"]))
  assert all(a.finish_reason in ("stop", "length") for a in together)
  assert engine.device_calls >= 4


def test_params_follow_the_logical_rules_on_a_sharded_mesh(engine):
  """On an fsdp mesh the engine shards params by the logical rules (embed over fsdp) and
  the rows over the devices (batch bucket 1 rounds up to 2); answers stay the same."""
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.local_devices()[:2])
  config = engine_lib.default_config()
  config.batch_buckets = (1,)
  sharded = engine_lib.Engine(engine.loaded, config, mesh)
  assert sharded.batch_buckets == (2,)
  embedding = sharded.params["language_model"]["model"]["embed_tokens"]["embedding"]
  vocab, embed = embedding.shape  # ('vocab', 'embed'): embed split over fsdp
  assert [s.data.shape for s in embedding.addressable_shards] == [(vocab, embed // 2)] * 2
  images, keys = _images(3, seed=1), engine_lib.request_keys(5, 3)
  assert ([a.text for a in sharded.answer(images, QUESTIONS, keys=keys, max_new_tokens=3)] ==
          [a.text for a in engine.answer(images, QUESTIONS, keys=keys, max_new_tokens=3)])


def test_buckets_and_batches():
  assert engine_lib.bucket(5, (4, 8, 16)) == 8 and engine_lib.bucket(16, (4, 8, 16)) == 16
  assert engine_lib.bucket(40, (4, 8, 16)) == 48  # past the largest: its next multiple
  assert engine_lib.batch_sizes(19, (1, 4, 8)) == [(0, 8, 8), (8, 16, 8), (16, 19, 4)]
  assert engine_lib.batch_sizes(1, (1, 4, 8)) == [(0, 1, 1)]


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


class _FetchOnce:
  """A dispatched call as `Pending` sees it: fetch() (raising or not) and its seconds."""

  def __init__(self, fails: bool):
    self.fails, self.fetched, self.seconds = fails, False, 0.25

  def fetch(self):
    self.fetched = True
    if self.fails:
      raise RuntimeError("device call failed")
    return np.zeros((2, 3))


def test_pending_fetches_every_call_when_one_fails():
  # The calls after a failing one must still be fetched: fetching is what counts a call
  # finished in the engine's busy time.
  calls = [_FetchOnce(True), _FetchOnce(False)]
  pending = engine_lib.Pending(calls)
  with pytest.raises(RuntimeError, match="device call failed"):
    pending.result()
  assert all(c.fetched for c in calls) and pending.seconds == 0.5
  with pytest.raises(RuntimeError, match="device call failed"):
    pending.result()  # the same error again, nothing fetched twice
