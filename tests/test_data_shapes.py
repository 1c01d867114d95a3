"""Input pipeline: tokenizers, templates, packing, sources, user data (on the shapes world).

Small datasets (a few hundred examples, built in about a second) keep the file fast.
"""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from jf_jax import config_defaults
from jf_jax.data import layout
from jf_jax.data import packing
from jf_jax.data import pipeline
from jf_jax.data import preprocess
from jf_jax.data import processor
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.data import user_data
from jf_jax.data.records import BadExample
from jf_jax.models import config as model_config
from jf_jax.shapes import config as shapes_config
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import task_data as shapes_tasks
from jf_jax.shapes import vocabulary
from jf_jax.shapes import world as shapes_world
import config_files

SIZES = dict(num_train=300, num_validation=30, num_test=200)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  shapes_world.load(path, **SIZES)
  return path


@pytest.fixture(scope="module")
def splits(data_dir):
  return shapes_world.load(data_dir, **SIZES)


def _config(data_dir, **batch):
  """A tiny pixel-space config on the test dataset (16 SigLIP patches -> short rows)."""
  config = shapes_config.add_world(config_defaults.base_config())  # tiny, pixel space
  config.data.update(dict(source="shapes", data_dir=data_dir, **SIZES))
  config.batch.update({**dict(und_rows=4, text_rows=2, gen_rows=6, und_seq_len=40,
                              text_seq_len=52, gen_prompt_len=24), **batch})
  return config, model_config.from_config_dict(config.model)


# --------------------------------------------------------------------------- tokenizers
def _write_bpe(path, specials):
  """A small byte-level BPE tokenizer.json with the given special tokens (ids 0..)."""
  hf = tokenizers.Tokenizer(models.BPE())
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  hf.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  hf.train_from_iterator(["User: what color is the circle?\n\nAssistant: red",
                          "a red circle to the left of a blue square"] * 4, trainer)
  os.makedirs(path, exist_ok=True)
  hf.save(os.path.join(path, "tokenizer.json"))
  return path


def test_checkpoint_tokenizer_reads_ids_from_file(tmp_path):
  specials = [tok_lib.EOS, tok_lib.BOS, tok_lib.IMAGE, tok_lib.PAD, tok_lib.BOI, tok_lib.EOI]
  tok = tok_lib.from_checkpoint_dir(_write_bpe(str(tmp_path / "ckpt"), specials))
  assert (tok.eos_id, tok.bos_id, tok.image_id, tok.pad_id, tok.boi_id, tok.eoi_id) == (
      0, 1, 2, 3, 4, 5)
  assert tok.gen_tag_id == 300  # absent from the file: added, as the official processor does
  text = (templates.und_prompt("what color? ünïcode", templates.SYSTEM_PROMPT) + " red"
          + tok_lib.EOS + tok_lib.GEN_TAG)
  ids = tok.encode(text)
  assert ids.count(tok.image_id) == 1 and ids[-2:] == [tok.eos_id, tok.gen_tag_id]
  assert tok.decode(ids, skip_special=False) == text
  assert tok_lib.IMAGE not in tok.decode(ids)


def test_checkpoint_tokenizer_pad_falls_back_to_eos(tmp_path):
  tok = tok_lib.from_checkpoint_dir(_write_bpe(str(tmp_path / "nopad"), [tok_lib.BOS,
                                                                         tok_lib.EOS]))
  assert tok.pad_id == tok.eos_id == 1
  assert len({tok.image_id, tok.boi_id, tok.eoi_id, tok.gen_tag_id}) == 4


def test_make_tokenizer_checks_config_ids(tmp_path):
  path = _write_bpe(str(tmp_path / "ckpt"), [tok_lib.BOS, tok_lib.EOS, tok_lib.PAD])
  config = config_defaults.base_config()
  config.data.tokenizer = path
  config.tokens = config_defaults.tokens_deepseek()
  with pytest.raises(ValueError, match="config.tokens.pad_id=100015"):
    tok_lib.make_tokenizer(config)
  config.tokens.update(dict(bos_id=0, eos_id=1, pad_id=2, image_id=-1, boi_id=-1, eoi_id=-1))
  assert tok_lib.make_tokenizer(config).pad_id == 2


# ---------------------------------------------------------------------------- templates
def test_templates_match_the_official_strings():
  sys_prompt = templates.SYSTEM_PROMPT
  assert templates.und_prompt(" what is it? ", sys_prompt) == (
      sys_prompt + "\n\nUser: <image_placeholder>\nwhat is it?\n\nAssistant:")
  assert templates.und_prompt("q", "") == "User: <image_placeholder>\nq\n\nAssistant:"
  assert templates.und_prompt("q2", "", history=[("q1", "a1")]) == (
      "User: <image_placeholder>\nq1\n\nAssistant: a1<｜end▁of▁sentence｜>User: q2\n\n"
      "Assistant:")
  assert templates.gen_prompt(" a red circle ") == "User: a red circle\n\nAssistant:"


# ------------------------------------------------------------------------------ packing
def test_pack_und_masks_answers_and_image_slots():
  tok = vocabulary.tokenizer(config_defaults.tokens_tiny())
  row = packing.pack_und(tok, [("what color is the circle?", "red"), ("how many shapes are "
                                                                      "there?", "two")],
                         num_patches=16, seq_len=64, system_prompt="")
  ids, n = row["ids"], int(row["valid"].sum())
  assert ids[0] == tok.bos_id and np.all(ids[n:] == tok.pad_id) and row["valid"][:n].all()
  flagged = np.flatnonzero(row["image_mask"])
  assert len(flagged) == 17 and ids[flagged[0]] == tok.boi_id
  assert np.all(ids[flagged[1:]] == tok.image_id) and ids[flagged[-1] + 1] == tok.eoi_id
  np.testing.assert_array_equal(row["targets"][:-1], ids[1:])
  supervised = row["targets"][row["weights"] > 0]
  assert tok.decode(supervised, skip_special=False) == " red<｜end▁of▁sentence｜> two" + (
      "<｜end▁of▁sentence｜>")
  prompt_ids, flags = packing.und_prompt_ids(tok, "what color is the circle?", 16, "")
  np.testing.assert_array_equal(ids[:len(prompt_ids)], prompt_ids)
  np.testing.assert_array_equal(row["image_mask"][:len(flags)], flags)


def test_pack_text_and_gen():
  tok = vocabulary.tokenizer(config_defaults.tokens_tiny())
  row = packing.pack_text(tok, "there is one shape.", 12)
  n = int(row["valid"].sum())
  assert row["ids"][0] == tok.bos_id and row["ids"][n - 1] == tok.eos_id
  assert row["weights"].sum() == n - 1 and row["weights"][n - 1] == 0
  gen = packing.pack_gen(tok, "a red circle", 12)
  first = int(np.argmax(gen["prompt_mask"]))
  assert gen["prompt_ids"][first] == tok.bos_id and gen["prompt_mask"][first:].all()
  assert tok.decode(gen["prompt_ids"][first:]) == "User: a red circle\n\nAssistant:"
  for fn, arg in ((packing.pack_text, "there is one shape."), (packing.pack_gen, "a red circle")):
    with pytest.raises(BadExample, match="too_long"):
      fn(tok, arg, 4)
    with pytest.raises(BadExample, match="empty_text"):
      fn(tok, "  ", 12)


def test_preprocess_ranges_and_padding():
  image = np.zeros((16, 32, 3), np.uint8)
  image[..., 0] = 255
  und = preprocess.und_image(image, 32)
  assert und.shape == (32, 32, 3) and und.min() >= -1 and und.max() <= 1
  np.testing.assert_allclose(und[0, 0], (127 / 255 - 0.5) / 0.5)  # grey padding band
  np.testing.assert_allclose(und[16, 16], [1, -1, -1])
  crop = preprocess.center_crop(np.arange(40 * 20 * 3, dtype=np.uint8).reshape(40, 20, 3), 10)
  assert crop.shape == (10, 10, 3)
  pixels = np.arange(256, dtype=np.uint8)
  latent = preprocess.to_pixel_latent(pixels)
  assert latent.dtype == np.float32 and latent[0] == -1.0 and latent[-1] == 1.0


# ------------------------------------------------------------------------ mixture source
def test_shapes_source_layout_and_config_keys(data_dir):
  config, cfg = _config(data_dir)
  source = pipeline.make_source(config, cfg)
  batch = next(source)
  layout.check_batch(batch, config.batch, cfg, cfg.latent_size)  # pixel space: P = L
  for key, (shape, dtype) in layout.batch_shapes(config.batch, cfg, cfg.latent_size).items():
    assert batch[key].dtype == dtype, key
  assert batch["gen_weights"].tolist() == [1.0] * 6
  # Pixel space: one uint8 picture at 32 px, the flow's latent and (at S = P) SigLIP's.
  assert batch["gen_pixels"].shape == (6, 32, 32, 3)
  assert (batch["und_image_mask"].sum(1) == cfg.num_und_tokens).all()


@pytest.mark.parametrize("name", ["tiny_shapes", "default"])
def test_shapes_configs_fit_every_example(splits, name):
  """Every example packs within the config's lengths (with its `und_turns` longest turns)."""
  config = config_files.load(name)
  cfg = model_config.from_config_dict(config.model)
  assert cfg.num_gen_tokens == cfg.und_encoder.num_patches  # REPA aligns the two grids
  tok, b = tok_lib.make_tokenizer(config), config.batch
  num_turns = config.data.und_turns
  for split in ("train", "test"):
    for i in range(len(splits[split])):
      ex = splits[split][i]
      packing.pack_text(tok, ex["text"].decode(), b.text_seq_len)
      packing.pack_gen(tok, ex["caption"].decode(), b.gen_prompt_len)
      turns = [(q.decode(), a.decode()) for q, a in zip(ex["questions"], ex["answers"])]
      turns.sort(key=lambda qa: -len(tok.encode(qa[0] + " " + qa[1])))
      packing.pack_und(tok, turns[:num_turns or None], cfg.und_encoder.num_patches,
                       b.und_seq_len, config.data.system_prompt)


# ----------------------------------------------------------------------------- user data
def test_user_data_readers(data_dir, tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  good = shapes_scene.render([shapes_scene.Obj(2, 1, (4, 4, 14, 14))], 48)
  Image.fromarray(good).save(images / "one.png")
  (images / "one.txt").write_text("a blue square\n")
  Image.fromarray(good).save(images / "two.jpg")  # no caption file -> counted
  jsonl = tmp_path / "gen.jsonl"
  jsonl.write_text(json.dumps({"image": "images/one.png", "caption": "a blue square"}) + "\n"
                   + "{not json\n" + json.dumps({"image": "missing.png", "caption": "x"}) + "\n")
  llava = tmp_path / "llava.json"
  llava.write_text(json.dumps([
      {"image": "images/one.png", "conversations": [
          {"from": "human", "value": "<image>\nwhat color is the square?"},
          {"from": "gpt", "value": "blue"},
          {"from": "human", "value": "how many shapes are there?"},
          {"from": "gpt", "value": "one"}]},
      {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "no"}]},
  ]))
  text = tmp_path / "notes.txt"
  text.write_text("there is one shape.\n\nthe square is blue.\n")
  config, cfg = _config(data_dir, und_rows=2, text_rows=2, gen_rows=5, und_seq_len=64)
  config.data.update(dict(source="files", resize_images=True, shuffle=False,
                          gen_files=(str(images), str(jsonl)), und_files=(str(llava),),
                          text_files=(str(text),)))
  source = pipeline.make_source(config, cfg)
  batch = next(source)
  layout.check_batch(batch, config.batch, cfg, cfg.latent_size)
  stats = source.stats()
  assert stats["rows"] == {"und": 1, "text": 2, "gen": 2, "edit": 0}
  assert stats["skipped"] == {"gen/missing_caption": 1, "gen/bad_record": 1,
                              "gen/undecodable_image": 1, "und/no_image": 1}
  tok = tok_lib.make_tokenizer(config)
  real = int(np.argmax(batch["und_weights"].sum(1)))
  supervised = batch["und_targets"][real][batch["und_weights"][real] > 0]
  assert tok.decode(supervised) == " blue one"  # both turns' answers (EOS skipped)
  assert len(user_data.text_files([str(text)], "file")[0]) == 1


@pytest.mark.parametrize("und_turns", [0, 1, 3])
def test_und_turns_packs_that_many_question_answer_turns(data_dir, splits, und_turns):
  config, cfg = _config(data_dir, und_seq_len=200)  # 16 image slots + up to 11 turns
  config.data.und_turns = und_turns
  data, convert = shapes_tasks.tasks(config.data)["und"]
  builder = processor.RowBuilder(tok_lib.make_tokenizer(config), config, cfg, cfg.latent_size)
  rng = np.random.default_rng(0)
  for i in range(20):
    example = splits["train"][i]
    pairs = set(zip(example["questions"], example["answers"]))
    record = convert(data[i], rng)
    want = len(pairs) if und_turns == 0 else min(und_turns, len(pairs))
    assert len(record["turns"]) == want and set(record["turns"]) <= pairs
    row = builder.build("und", record)
    # Each answer is one word + EOS: two supervised tokens per turn.
    assert row["weights"].sum() == 2 * want
  config.data.und_turns = -1
  with pytest.raises(ValueError, match="und_turns"):
    shapes_tasks.tasks(config.data)
