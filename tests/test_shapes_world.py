"""The shapes world's dataset (`jf_jax/shapes/world.py`, `scene.py`) and word-level tokenizer.

Small datasets (a few hundred examples, built in about a second) keep the file fast.
"""

import glob
import itertools
import os

import numpy as np
import pytest

from jf_jax import config_defaults
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import vocabulary
from jf_jax.shapes import world as shapes_world

SIZES = dict(num_train=300, num_validation=30, num_test=200)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
  return shapes_world.load(str(tmp_path_factory.mktemp("tfds")), **SIZES)


def _texts(example):
  return [example["caption"].decode(), example["text"].decode(),
          *[q.decode() for q in example["questions"]], *[a.decode() for a in example["answers"]]]


# ----------------------------------------------------------------------------- builder
def test_builder_is_deterministic(tmp_path):
  def build(name, seed):
    d = str(tmp_path / name)
    shapes_world.load(d, seed=seed, num_train=40, num_validation=5, num_test=10)
    files = sorted(glob.glob(os.path.join(d, "**", "*.array_record*"), recursive=True))
    return {os.path.basename(f): open(f, "rb").read() for f in files}
  first, again, other = build("a", 0), build("b", 0), build("c", 1)
  assert len(first) == 3 and first == again
  assert first != other


def test_examples_are_consistent(splits):
  for split in ("train", "test"):
    for i in range(50):
      ex = splits[split][i]
      assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
      scene = shapes_world.scene_of(ex)
      assert 1 <= len(scene) <= 3
      assert [o.cx for o in scene] == sorted(o.cx for o in scene)
      names = [(shapes_scene.COLOR_NAMES[o.color], shapes_scene.SHAPE_NAMES[o.shape])
               for o in scene]
      assert shapes_scene.parse_caption(ex["caption"].decode()) == names
      np.testing.assert_array_equal(shapes_scene.render(scene, 32), ex["image"])
      qa = dict(zip([q.decode() for q in ex["questions"]], [a.decode() for a in ex["answers"]]))
      assert qa["how many shapes are there?"] == shapes_scene.COUNT_WORDS[len(scene)]
      assert ex["text"] and all(_texts(ex))


@pytest.mark.parametrize("layout", shapes_scene.LAYOUTS)
def test_layouts_keep_objects_apart(layout):
  """Both layouts: boxes inside the image, 2+ pixels apart, sorted by x centre; "columns"
  puts object k of n inside column k of n (so apart along x)."""
  holdout = shapes_scene.holdout_pairs(0)
  rng = np.random.default_rng(0)
  for i in range(300):
    scene = shapes_scene.sample_scene(rng, 32, holdout, test=i % 2 == 0, layout=layout)
    for o in scene:
      x0, y0, x1, y1 = o.box
      assert 0 < x0 < x1 < 32 and 0 < y0 < y1 < 32 and x1 - x0 >= 8
    for a, b in itertools.combinations(scene, 2):
      apart_x = a.box[2] + 2 <= b.box[0]
      apart_y = a.box[3] + 2 <= b.box[1] or b.box[3] + 2 <= a.box[1]
      assert a.cx < b.cx and (apart_x or (layout == "free" and apart_y))
    if layout == "columns":
      n = len(scene)
      assert all(k * 32 / n - 1 <= o.box[0] and o.box[2] <= (k + 1) * 32 / n + 1
                 for k, o in enumerate(scene))
  with pytest.raises(ValueError, match="layout 'grid'"):
    shapes_scene.sample_scene(rng, 32, holdout, test=False, layout="grid")
  with pytest.raises(ValueError, match="layout 'grid'"):
    shapes_world.config_for(layout="grid")


def test_heldout_combinations_never_in_training(splits):
  holdout = shapes_scene.holdout_pairs(0)
  def objects(ex):
    return [(int(c), int(s)) for c, s in zip(ex["colors"], ex["shapes"])]
  train = [splits["train"][i] for i in range(len(splits["train"]))]
  val = [splits["validation"][i] for i in range(len(splits["validation"]))]
  test = [splits["test"][i] for i in range(len(splits["test"]))]
  assert not any(shapes_scene.has_holdout(objects(ex), holdout) for ex in train + val)
  assert all(shapes_scene.has_holdout(objects(ex), holdout) for ex in test)
  train_captions = {ex["caption"] for ex in train}
  assert not train_captions & {ex["caption"] for ex in test}
  # Every pair a test caption holds out is absent from all training captions ...
  seen_pairs = {tuple(sorted(p)) for ex in train for p in
                itertools.combinations(objects(ex), 2)}
  assert not seen_pairs & holdout
  # ... while every single object of the test split is seen in training.
  assert {o for ex in test for o in objects(ex)} <= {o for ex in train for o in objects(ex)}



# --------------------------------------------------------------------------- tokenizer
def test_shapes_tokenizer_round_trip(splits):
  tokens = config_defaults.tokens_tiny()
  tok = vocabulary.tokenizer(tokens)
  assert tok.special_ids() == {k: tokens[k] for k in tok_lib.SPECIAL_TOKENS}
  unk = tok.hf.token_to_id(tok_lib.UNK)
  for i in range(100):
    for text in _texts(splits["train"][i]):
      ids = tok.encode(text)
      assert unk not in ids and min(ids) >= tokens.num_special
      assert tok.decode(ids) == text
  prompt = templates.und_prompt("what color is the circle?", templates.SYSTEM_PROMPT)
  ids = tok.encode(prompt + " red" + tok_lib.EOS)
  assert unk not in ids and ids.count(tok.image_id) == 1 and ids[-1] == tok.eos_id
  assert tok.decode(ids, skip_special=False) == prompt + " red" + tok_lib.EOS
  assert tok.decode(ids).endswith("\n\nAssistant: red")
  assert tok.encode("a zebra")[-1] == unk
