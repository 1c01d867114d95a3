"""The grain input pipeline: task streams, the mixture and its switch, per-process rows,
resume exactness and bad-example counts, with 0 and 2 loader worker processes.

Worker processes take a few seconds to start on a small machine, so the tests that use
them each start one loader with workers and compare it against in-process loaders.
"""

import io
import json
import pickle

import numpy as np
from PIL import Image
import pytest

from jf_jax import config_defaults
from jf_jax.data import layout
from jf_jax.data import loader
from jf_jax.data import mixture
from jf_jax.data import packing
from jf_jax.data import pipeline
from jf_jax.data import tokenizer as tok_lib
from jf_jax.data import tfds_source
from jf_jax.models import config as model_config
from jf_jax.shapes import config as shapes_config
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world

SIZES = dict(num_train=300, num_validation=30, num_test=200)
SWITCH = dict(step=2, und_rows=2, text_rows=0, gen_rows=4)
# The resume test's mixture holds edit rows too (2 per batch, 4 after its switch).
EDIT_SWITCH = dict(SWITCH, edit_rows=4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  shapes_world.load(path, **SIZES)
  return path


def _config(data_dir, switch=None, workers=0, **batch):
  """A tiny pixel-space config on the test dataset (16 SigLIP patches -> short rows)."""
  config = shapes_config.add_world(config_defaults.base_config())  # tiny, pixel space
  config.data.update(dict(source="shapes", data_dir=data_dir, workers=workers, **SIZES))
  config.batch.update({**dict(und_rows=4, text_rows=2, gen_rows=6, und_seq_len=40,
                              text_seq_len=52, gen_prompt_len=24), **batch})
  if switch:
    config.batch.switch.update(switch)
  return config, model_config.from_config_dict(config.model)


def _take(source, n):
  batches = [next(source) for _ in range(n)]
  source.close()
  return batches


def _assert_same(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w)
    for key, value in w.items():
      np.testing.assert_array_equal(g[key], value, err_msg=key)


def _json(state):
  return json.loads(json.dumps(state))  # what Orbax JsonSave stores


# --------------------------------------------------------------------------- task streams
class _IndexRows:
  """A row builder that keeps the item itself (the stream's order is what is tested)."""

  def build(self, task, record):
    del task
    return {"ids": np.array([record["i"]])}

  def padding(self, task):
    del task
    return {"ids": np.array([-1])}


def test_task_rows_cover_every_epoch_in_a_new_order():
  items = [{"i": i} for i in range(50)]
  rows = mixture.task_rows(items, lambda item, rng: item, _IndexRows(), "gen", seed=0)
  order = [int(rows[k][0]["ids"][0]) for k in range(150)]
  epochs = [order[:50], order[50:100], order[100:]]
  assert all(sorted(e) == list(range(50)) for e in epochs)
  assert len({tuple(e) for e in epochs}) == 3 and epochs[0] != list(range(50))
  other = mixture.task_rows(items, lambda item, rng: item, _IndexRows(), "text", seed=0)
  assert [int(other[k][0]["ids"][0]) for k in range(50)] != epochs[0]  # per-task order
  plain = mixture.task_rows(items, lambda item, rng: item, _IndexRows(), "gen", seed=0,
                            shuffle=False)
  assert [int(plain[k][0]["ids"][0]) for k in range(60)] == list(range(50)) + list(range(10))


def test_slots_before_follows_the_switch():
  config, _ = _config("", switch=SWITCH)
  assert layout.slots_before(config.batch, 0) == dict(und=0, text=0, gen=0, edit=0)
  assert layout.slots_before(config.batch, 2) == dict(und=8, text=4, gen=12, edit=0)
  assert layout.slots_before(config.batch, 5) == dict(und=14, text=4, gen=24, edit=0)


# ------------------------------------------------------------------------------ mixture
def test_switch_continues_each_task_stream(data_dir):
  """From the switch on, batches hold the switch's rows, taken from where each task's
  stream stood: the rows a run without a switch would have used next."""
  config, cfg = _config(data_dir, switch=SWITCH)
  switched = _take(pipeline.make_source(config, cfg), 3)
  plain = _take(pipeline.make_source(_config(data_dir)[0], cfg), 3)
  _assert_same(switched[:2], plain[:2])
  after = switched[2]
  layout.check_batch(after, layout.with_rows(config.batch, layout.rows_at(config.batch, 2)),
                     cfg, cfg.latent_size)  # pixel space: P = L
  assert after["text_ids"].shape[0] == 0
  np.testing.assert_array_equal(after["und_ids"], plain[2]["und_ids"][:2])
  np.testing.assert_array_equal(after["gen_prompt_ids"], plain[2]["gen_prompt_ids"][:4])


def test_resume_is_exact_across_the_switch_with_0_and_2_workers(data_dir):
  """A loader restored from the state after step 1 (before the switch at 2) gives the
  batches of one that never stopped, with 0 or 2 workers, and two processes' halves of
  them concatenate to the one-process batch; the mixture holds edit rows (a fourth task,
  whose examples are drawn per slot)."""
  config, cfg = _config(data_dir, switch=EDIT_SWITCH, edit_rows=2)
  straight = pipeline.make_source(config, cfg)
  expected = _take(straight, 5)
  assert [b["edit_weights"].shape[0] for b in expected] == [2, 2, 4, 4, 4]
  assert all(b["edit_weights"].all() for b in expected)
  first = pipeline.make_source(config, cfg)
  next(first)
  state = _json(first.get_state())
  assert state["step"] == 1
  for workers in (0, 2):
    resumed = pipeline.make_source(_config(data_dir, switch=EDIT_SWITCH, workers=workers,
                                           edit_rows=2)[0], cfg)
    resumed.set_state(state)
    _assert_same(_take(resumed, 4), expected[1:])
    assert resumed.get_state()["step"] == 5
  halves = [pipeline.make_source(config, cfg, process_index=p, process_count=2)
            for p in range(2)]
  for h in halves:
    h.set_state(state)
  parts = [_take(h, 4) for h in halves]
  joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts)]
  _assert_same(joined, expected[1:])


def test_device_batches_count_only_what_was_handed_out(data_dir):
  """The device feed builds ahead in a thread; the state is the batches taken."""
  config, cfg = _config(data_dir)
  want = _take(pipeline.make_source(config, cfg), 2)
  source = pipeline.make_source(config, cfg)
  feed = source.device_batches(lambda rows: float(rows["gen_weights"].sum()))
  got = [next(feed) for _ in range(2)]
  assert source.get_state()["step"] == 2
  source.close()
  _assert_same([rows for rows, _ in got], want)
  assert [placed for _, placed in got] == [6.0, 6.0]


# ----------------------------------------------------------------------- bad examples
def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def test_bad_examples_are_skipped_and_counted(data_dir):
  config, cfg = _config(data_dir, und_rows=2, text_rows=2, gen_rows=2, edit_rows=2)
  config.data.shuffle = False
  good = shapes_scene.render([shapes_scene.Obj(0, 0, (4, 4, 14, 14))], 32)
  gen = [{"image": good, "caption": "a red circle"},
         {"image": b"not an image", "caption": "a red circle"},            # undecodable
         {"image": _png(good[:20]), "caption": "a red circle"},             # wrong size
         {"image": _png(good), "caption": ""},                              # empty caption
         {"image": _png(good), "caption": "a red circle " * 20}]            # too long
  und = [{"image": good, "turns": [("how many shapes are there?", "one")]},
         {"image": np.zeros((32, 32), np.float32), "turns": [("q", "a")]},  # bad array
         {"image": good, "turns": [("how many shapes are there?", "")]}]    # empty answer
  text = ["there is one shape.", "", "the circle is red. " * 20]
  edit = [{"image": good, "instruction": "make the red circle blue", "target": good},
          {"image": good, "instruction": "remove the red circle", "target": b"broken"},
          {"image": good, "instruction": "", "target": good},              # empty
          {"image": good, "instruction": "remove the red circle " * 10, "target": good},
          {"image": good[:20], "instruction": "remove the red circle", "target": good}]
  ident = lambda item, rng: item
  tasks = {"gen": (gen, ident), "und": (und, ident),
           "text": (text, lambda item, rng: {"text": item}), "edit": (edit, ident)}
  source = pipeline.make_source(config, cfg, tasks=tasks)
  batches = _take(source, 15)  # 30 slots per task: 6 / 10 / 10 epochs
  # Each bad example counted once ("skipped"), each of its draws in "draws".
  assert source.stats()["skipped"] == {
      "gen/undecodable_image": 1, "gen/wrong_size": 1, "gen/empty_text": 1,
      "gen/too_long": 1, "und/undecodable_image": 1, "und/empty_text": 1,
      "text/empty_text": 1, "text/too_long": 1, "edit/undecodable_image": 1,
      "edit/empty_text": 1, "edit/too_long": 1, "edit/wrong_size": 1}
  assert source.stats()["draws"] == {
      "edit/undecodable_image": 6, "edit/empty_text": 6, "edit/too_long": 6,
      "edit/wrong_size": 6,
      "gen/undecodable_image": 6, "gen/wrong_size": 6, "gen/empty_text": 6,
      "gen/too_long": 6, "und/undecodable_image": 10, "und/empty_text": 10,
      "text/empty_text": 10, "text/too_long": 10}
  tok = tok_lib.make_tokenizer(config)  # the longest too-long rows: the planted ones
  assert source.stats()["longest"] == {
      "gen/too_long": len(packing.gen_prompt_ids(tok, gen[4]["caption"])),
      "text/too_long": len(tok.encode(text[2])) + 2,  # BOS, EOS
      "edit/too_long": len(packing.edit_prompt_ids(tok, edit[3]["instruction"],
                                                    cfg.num_und_tokens - 1)[0])}
  assert source.stats()["rows"] == {"gen": 6, "und": 10, "text": 10, "edit": 6}
  edit_weights = np.concatenate([b["edit_weights"] for b in batches])
  assert edit_weights.tolist() == [1.0, 0, 0, 0, 0] * 6
  weights = np.concatenate([b["gen_weights"] for b in batches])
  assert weights.tolist() == [1.0, 0, 0, 0, 0] * 6
  und_rows = np.concatenate([b["und_weights"] for b in batches]).sum(1) > 0
  assert und_rows.tolist() == [True, False, False] * 10
  for b in batches:
    layout.check_batch(b, config.batch, cfg, cfg.latent_size)
  restored = pipeline.make_source(config, cfg, tasks=tasks)
  restored.set_state(_json(source.get_state()))
  assert restored.stats() == source.stats()


def _planted_folder(root) -> int:
  """Five good image + caption pairs (JPEGs of mixed sizes, and an 8 px tall PNG, which
  the official processor accepts too) and one of each bad kind."""
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate([(40, 56), (64, 48), (32, 32), (50, 90)]):
    pixels = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(root / f"good{i}.jpg", quality=90)
    (root / f"good{i}.txt").write_text("a red circle")
  (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")               # undecodable
  (root / "broken.txt").write_text("a red circle")
  Image.fromarray(np.zeros((8, 40, 3), np.uint8)).save(root / "tiny.png")     # small: good
  (root / "tiny.txt").write_text("a red circle")
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "alone.png")   # no caption
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "empty.png")   # empty caption
  (root / "empty.txt").write_text("  \n")
  return 8


def test_skip_counts_are_equal_with_0_and_2_workers(data_dir, tmp_path):
  """Counts come back from the worker processes: the same with 2 workers as in-process."""
  count = _planted_folder(tmp_path)
  config, cfg = _config(data_dir, und_rows=0, text_rows=0, gen_rows=4)
  config.data.update(dict(source="files", gen_files=(str(tmp_path),), resize_images=True))
  batches = 6  # 24 slots = 3 epochs of 8 items, each bad item once per epoch
  results = {}
  for workers in (0, 2):
    config.data.workers = workers
    source = pipeline.make_source(config, cfg)
    results[workers] = (_take(source, batches), source.get_state())
  assert results[0][1] == results[2][1]
  _assert_same(results[2][0], results[0][0])
  epochs = batches * 4 // count
  assert results[0][1]["stats"] == {
      "rows": {"und": 0, "text": 0, "gen": 5 * epochs, "edit": 0},
      "skipped": {"gen/undecodable_image": 1, "gen/missing_caption": 1,
                  "gen/empty_text": 1},
      "draws": {"gen/undecodable_image": epochs, "gen/missing_caption": epochs,
                "gen/empty_text": epochs},
      "longest": {}}


def test_worker_batches_are_plain_arrays_that_outlive_the_loader():
  """Large arrays cross from a worker in shared memory and come out as plain ndarrays
  (no copy): their data stays valid after the loader closes and pickles as data."""
  pixels = lambda step: np.full((64, 1024, 3), step % 251, np.uint8)  # 192 KB: shared
  batches = lambda step: {"step": step, "rows": {}, "skips": [],
                          "batch": {"pixels": pixels(step), "ids": np.arange(4) + step}}
  source = loader.Loader(batches, workers=1, counts_examples=False)
  got = _take(source, 3)
  for step, batch in enumerate(got):
    assert {type(v) for v in batch.values()} == {np.ndarray}
    _assert_same([pickle.loads(pickle.dumps(batch))],
                 [{"pixels": pixels(step), "ids": np.arange(4) + step}])


def test_bad_loader_settings_and_old_states_are_named():
  with pytest.raises(ValueError, match="config.data.workers=-1"):
    loader.Loader(lambda step: {}, workers=-1)
  with pytest.raises(ValueError, match="before the grain loader"):
    loader.Loader(lambda step: {}).set_state({"cursor": {"und": 4}})


def test_tfds_split_source_reads_a_builder_and_names_a_missing_split(data_dir):
  builder = shapes_world.builder(data_dir, **SIZES)
  data = tfds_source.split_source(builder, "validation")
  assert len(data) == SIZES["num_validation"] and data[0]["image"].shape == (32, 32, 3)
  with pytest.raises(ValueError, match="no split 'dev'"):
    tfds_source.split_source(builder, "dev")
