"""Edit rows (source image + instruction -> edited image): the packed row, the one dropout
rule shared by the train step and the sampler, the model's edit velocity, the engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax import testing
from jf_jax.data import packing
from jf_jax.data import pipeline
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import sequence
from jf_jax.sampling import edit as edit_sampling
from jf_jax.shapes import config as shapes_config
from jf_jax.shapes import detector
from jf_jax.shapes import edits
from jf_jax.shapes import world as shapes_world
from jf_jax.train import step as step_lib

SIZES = dict(num_train=60, num_validation=10, num_test=40)


@pytest.fixture(scope="module")
def batch_and_config(tmp_path_factory):
  """The first batch of a shapes-world mixture with understanding and edit rows."""
  path = str(tmp_path_factory.mktemp("tfds"))
  shapes_world.load(path, **SIZES)
  config = shapes_config.add_world(config_defaults.base_config())  # tiny, pixel space
  config.data.update(dict(source="shapes", data_dir=path, **SIZES))
  config.batch.update(dict(und_rows=2, text_rows=0, gen_rows=2, edit_rows=6, und_seq_len=40,
                           gen_prompt_len=24, edit_prompt_len=48))
  cfg = model_config.from_config_dict(config.model)
  source = pipeline.make_source(config, cfg)
  batch = next(source)
  source.close()
  return batch, config, cfg


def test_edit_rows_hold_the_source_where_und_rows_do_and_the_edit_as_target(
    batch_and_config):
  """Read back from the packed batch: each edit row's prompt up to <end_of_image> is an
  understanding row's (BOS, "User: ", <begin_of_image>, the N image slots, EOI), the
  instruction follows, and the row's images are the source (SigLIP's input) and the
  target (uint8 in the generation space, as gen rows carry theirs), whose detected scene
  is the decoded instruction applied to the source's."""
  batch, config, cfg = batch_and_config
  tok = tok_lib.make_tokenizer(config)
  und_ids, und_mask = batch["und_ids"][0], batch["und_image_mask"][0]
  und_block = int(np.flatnonzero(und_mask)[-1]) + 2  # through EOI
  assert batch["edit_pixels"].shape[1:] == batch["gen_pixels"].shape[1:]
  assert batch["edit_pixels"].dtype == batch["gen_pixels"].dtype == np.uint8
  kinds = set()
  for r in range(batch["edit_prompt_ids"].shape[0]):
    ids, mask = batch["edit_prompt_ids"][r], batch["edit_prompt_mask"][r]
    image_mask = batch["edit_image_mask"][r]
    start = int(np.argmax(mask))
    assert mask[start:].all() and not mask[:start].any()  # left-padded
    assert image_mask.sum() == cfg.num_und_tokens == und_mask.sum()
    np.testing.assert_array_equal(ids[start:start + und_block], und_ids[:und_block])
    np.testing.assert_array_equal(image_mask[start:start + und_block], und_mask[:und_block])
    text = tok.decode(ids[start + und_block:].tolist())
    assert text.startswith("\n") and text.endswith("\n\nAssistant:")
    instruction = text.strip().split("\n")[0]
    source = detector.scene(batch["edit_images"][r, 0])
    assert detector.scene(batch["edit_pixels"][r]) == edits.apply_instruction(
        source, instruction)
    kinds.add(edits.kind_of(instruction))
  assert len(kinds) >= 2 and batch["edit_weights"].tolist() == [1.0] * 6


def _rows(batch):
  return (jnp.asarray(batch["edit_prompt_ids"]), jnp.asarray(batch["edit_prompt_mask"]),
          jnp.asarray(batch["edit_image_mask"]))


def _dropped(batch, config, drops):
  """The train step's edit rows after its dropout with shares `drops` (text, image, both)."""
  step_cfg = step_lib.step_config(config, config.tokens.pad_id)
  step_cfg = step_lib.StepConfig(**{**step_cfg.__dict__, "edit_drop": drops})
  rows = batch["edit_prompt_ids"].shape[0]
  out = step_lib.draw_edit_noise(
      jax.random.key(0), {**dict(zip(("edit_prompt_ids", "edit_prompt_mask",
                                      "edit_image_mask"), _rows(batch))),
                          "edit_latents": jnp.zeros((rows, 4, 4, 3))}, step_cfg)
  return np.asarray(out["edit_prompt_ids"]), np.asarray(out["edit_prompt_mask"])


def test_train_dropout_builds_the_rows_the_sampler_guides_with(batch_and_config):
  """Dropping the instruction (or both) at training gives exactly the sampler's image-only
  (or BOS-only) guidance rows; BOS-only is `keep_only_bos`, the caption rows' rule;
  dropping the image keeps BOS and the text and masks the whole image block."""
  batch, config, _ = batch_and_config
  tok = tok_lib.make_tokenizer(config)
  ids, mask, image_mask = _rows(batch)
  b = ids.shape[0]
  g_ids, g_mask, g_image = edit_sampling.guidance_rows(ids, mask, image_mask, tok.pad_id,
                                                       tok.eoi_id)
  np.testing.assert_array_equal(g_image, np.concatenate([image_mask] * 3))
  for drops, part in [((0.0, 0.0, 0.0), 0), ((1.0, 0.0, 0.0), 1), ((0.0, 0.0, 1.0), 2)]:
    got_ids, got_mask = _dropped(batch, config, drops)
    np.testing.assert_array_equal(got_ids, g_ids[part * b:(part + 1) * b], err_msg=str(drops))
    np.testing.assert_array_equal(got_mask, g_mask[part * b:(part + 1) * b])
  bos_ids, bos_mask = sequence.keep_only_bos(ids, mask, tok.pad_id)
  np.testing.assert_array_equal(g_ids[2 * b:], bos_ids)
  np.testing.assert_array_equal(g_mask[2 * b:], bos_mask)
  no_image_ids, no_image_mask = _dropped(batch, config, (0.0, 1.0, 0.0))
  for r in range(b):
    kept = np.asarray(ids[r])[no_image_mask[r]]
    full = np.asarray(ids[r])[np.asarray(mask[r])]
    assert kept[0] == tok.bos_id and tok.boi_id not in kept and tok.eoi_id not in kept
    assert tok.image_id not in kept
    boi_at, eoi_at = (int(np.flatnonzero(full == i)[0]) for i in (tok.boi_id, tok.eoi_id))
    np.testing.assert_array_equal(kept[1:], np.concatenate([full[1:boi_at],
                                                            full[eoi_at + 1:]]))
    assert (no_image_ids[r][~no_image_mask[r]] == tok.pad_id).all()
  # Shares: a quarter each of drop text / image / both, the rest keep both (many rows).
  keep_image, keep_text = step_lib.edit_keeps(jax.random.key(1), 4800, (0.25, 0.25, 0.25))
  for want_image, want_text in [(True, False), (False, True), (False, False), (True, True)]:
    share = float(np.mean((np.asarray(keep_image) == want_image)
                          & (np.asarray(keep_text) == want_text)))
    assert abs(share - 0.25) < 0.03, (want_image, want_text, share)


def test_edit_velocity_places_the_flow_where_generation_does():
  """With no image slot flagged, an edit row is a generation row: the same velocity as
  `generate_velocity`; with a source image, the image tokens are SigLIP + aligner output
  (the understanding path's) and change the velocity."""
  cfg = model_config.from_config_dict(config_defaults.base_config().model)
  model = janusflow.JanusFlow(cfg)
  params = testing.numpy_random_params(cfg, std=0.1)
  rng = np.random.default_rng(0)
  n = cfg.num_und_tokens
  ids = jnp.asarray(rng.integers(8, 100, (2, n + 6)), jnp.int32)
  mask = jnp.ones((2, n + 6), bool).at[0, :2].set(False)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 1, 32, 32, 3)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(2, cfg.latent_size, cfg.latent_size, 3)), jnp.float32)
  t = jnp.asarray([0.3, 0.7], jnp.float32)
  none = jnp.zeros_like(mask)
  v_edit = model.apply({"params": params}, ids, images, none, z, t, mask,
                       method="edit_velocity")
  v_gen = model.apply({"params": params}, ids, z, t, mask, method="generate_velocity")
  np.testing.assert_allclose(v_edit, v_gen, atol=1e-6)
  flags = jnp.zeros_like(mask).at[:, 3:3 + n].set(True)
  v_image = model.apply({"params": params}, ids, images, flags, z, t, mask,
                        method="edit_velocity")
  assert float(jnp.abs(v_image - v_gen).max()) > 1e-3


def test_guidance_combines_the_three_rows_as_instructpix2pix():
  v_full, v_image, v_none = (jnp.full((1, 2), x) for x in (3.0, 2.0, 1.0))
  v = jnp.concatenate([v_full, v_image, v_none])
  np.testing.assert_allclose(edit_sampling.guide(v, 1.0, 1.0), v_full)
  np.testing.assert_allclose(edit_sampling.guide(v, 0.0, 1.0), v_image)
  np.testing.assert_allclose(edit_sampling.guide(v, 0.0, 0.0), v_none)
  np.testing.assert_allclose(edit_sampling.guide(v, 2.0, 1.5), 1.0 + 1.5 * 1.0 + 2.0 * 1.0)


def test_engine_edit_rows_are_the_packed_rows_and_edits_are_seeded(tmp_path):
  """The engine's prompt is the packed row's (left-padded further to its bucket); edits
  are uint8 images, the same for the same key, whatever else shares the batch."""
  import tiny_checkpoint  # pylint: disable=g-import-not-at-top
  from jf_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from jf_jax.inference import loader  # pylint: disable=g-import-not-at-top
  tiny_checkpoint.write_params_dir(str(tmp_path / "ckpt"))
  loaded = loader.load(str(tmp_path / "ckpt"))
  config = engine_lib.default_config()
  config.batch_buckets = (8,)
  engine = engine_lib.Engine(loaded, config)
  image = np.full((32, 32, 3), 255, np.uint8)
  image[8:20, 4:16] = (220, 40, 40)
  instruction = "make the red square blue"
  row, = engine.edit_rows([image], [instruction])
  packed = packing.pack_edit(loaded.tok, instruction, loaded.cfg.und_encoder.num_patches,
                             len(row["ids"]))
  np.testing.assert_array_equal(row["ids"], packed["prompt_ids"])
  np.testing.assert_array_equal(row["mask"], packed["prompt_mask"])
  np.testing.assert_array_equal(row["image_mask"], packed["image_mask"])
  keys = engine_lib.request_keys(3, 2)
  two = engine.edit([image, image], [instruction, "remove the red square"], keys=keys,
                    steps=2, guidance_text=2.0, guidance_image=1.5)
  one = engine.edit([image], [instruction], keys=keys[:1], steps=2, guidance_text=2.0,
                    guidance_image=1.5)
  assert two.shape == (2, 32, 32, 3) and two.dtype == np.uint8
  np.testing.assert_array_equal(one[0], two[0])
  other = engine.edit([image], [instruction], keys=keys[:1], steps=2, guidance_text=1.0,
                      guidance_image=0.0)
  assert not np.array_equal(other[0], one[0])  # the weights reach the sampler


def test_user_edit_files_become_edit_rows_and_bad_lines_bad_examples(tmp_path):
  """config.data.edit_files: {source, instruction, target} lines; relative paths resolve
  against the file's folder; a broken line or a missing image is a BadExample."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jf_jax.data import processor  # pylint: disable=g-import-not-at-top
  from jf_jax.data import user_data  # pylint: disable=g-import-not-at-top
  from jf_jax.data.records import BadExample  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for name in ("a.png", "b.png"):
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(tmp_path / name)
  lines = [{"source": "a.png", "instruction": "make the red circle blue", "target": "b.png"},
           {"source": "a.png", "instruction": "remove it", "target": "gone.png"}]
  (tmp_path / "edits.jsonl").write_text(
      "".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
  config = config_defaults.base_config()
  config.data.update(dict(source="files", tokenizer="shapes",
                          edit_files=(str(tmp_path / "edits.jsonl"),)))
  items, convert = user_data.file_tasks(config.data)["edit"]
  assert len(items) == 3
  cfg = model_config.from_config_dict(config.model)
  builder = processor.RowBuilder(tok_lib.make_tokenizer(config), config, cfg, 32)
  row = builder.build("edit", convert(items[0], None))
  np.testing.assert_array_equal(row["pixels"], np.asarray(Image.open(tmp_path / "b.png")))
  np.testing.assert_array_equal(row["images"][0], np.asarray(Image.open(tmp_path / "a.png")))
  assert row["image_mask"].sum() == cfg.num_und_tokens
  with pytest.raises(BadExample, match="undecodable_image"):
    builder.build("edit", convert(items[1], None))
  with pytest.raises(BadExample, match="bad_record"):
    convert(items[2], None)
