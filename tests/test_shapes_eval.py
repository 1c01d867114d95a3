"""Shapes-world evaluation: the detector on the dataset's own images, and the scores."""

import collections
import dataclasses
import re

import numpy as np
import pytest

from jf_jax.shapes import detector
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import scores
from jf_jax.shapes import world as shapes_world

SIZES = dict(num_train=50, num_validation=10, num_test=300)


@pytest.fixture(scope="module", params=shapes_scene.LAYOUTS)
def test_split(tmp_path_factory, request):
  splits = shapes_world.load(str(tmp_path_factory.mktemp("tfds")), layout=request.param,
                             **SIZES)
  return [splits["test"][i] for i in range(SIZES["num_test"])]


def _truth(example):
  return [(shapes_scene.COLOR_NAMES[o.color], shapes_scene.SHAPE_NAMES[o.shape])
          for o in shapes_world.scene_of(example)]


def _box_iou(a, b):
  ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detector_accuracy_on_ground_truth_test_images(test_split):
  correct = 0
  for ex in test_split:
    found = detector.detect(ex["image"])
    ok = [(d.color, d.shape) for d in found] == _truth(ex)
    correct += ok
    if ok:
      for d, obj in zip(found, shapes_world.scene_of(ex)):
        assert _box_iou(d.box, obj.box) > 0.6
  assert correct / len(test_split) >= 0.99


@pytest.mark.parametrize("layout", shapes_scene.LAYOUTS)
def test_detector_on_64px_images_and_noise(layout):
  rng = np.random.default_rng(0)
  holdout = shapes_scene.holdout_pairs(0)
  correct = 0
  for i in range(100):
    ex = shapes_world.make_example(3, "train", i, 64, holdout, layout)
    noisy = np.clip(ex["image"] + rng.normal(0, 12, ex["image"].shape), 0, 255)
    correct += detector.scene(noisy.astype(np.uint8)) == _truth(ex)
  assert correct >= 97
  blank = np.full((32, 32, 3), 255, np.uint8)
  assert detector.detect(blank) == []


def test_generation_scores(test_split):
  images = [ex["image"] for ex in test_split[:40]]
  captions = [ex["caption"].decode() for ex in test_split[:40]]
  perfect = scores.generation_scores(images, captions)
  assert perfect["score"] == perfect["count_accuracy"] == perfect["position_accuracy"] == 1.0
  assert perfect["num_images"] == 40
  # Mirrored images: same objects, reversed order -> only the position check fails.
  mirrored = scores.generation_scores([im[:, ::-1] for im in images], captions)
  assert mirrored["objects_accuracy"] == 1.0 and mirrored["score"] == 0.0
  assert mirrored["position_accuracy"] == 0.0
  blank = scores.generation_scores([np.full_like(images[0], 255)] * 2, captions[:2])
  assert blank["score"] == blank["count_accuracy"] == 0.0
  assert perfect["paired_color_accuracy"] == perfect["paired_shape_accuracy"] == 1.0
  assert all(k.split(" -> ")[0] == k.split(" -> ")[1] for k in perfect["shape_confusion"])


def test_generation_scores_say_which_attribute_is_wrong():
  """A scene drawn with its leftmost object's shape swapped: count right, colours right,
  one paired shape wrong, named in the confusion."""
  rng = np.random.default_rng(3)
  holdout = shapes_scene.holdout_pairs(0)
  scenes = [shapes_scene.sample_scene(rng, 32, holdout, test=False) for _ in range(20)]
  scenes = [sc for sc in scenes if len(sc) >= 2][:4]
  swapped = [[dataclasses.replace(sc[0], shape=(sc[0].shape + 1) % 3)] + sc[1:]
             for sc in scenes]
  out = scores.generation_scores([shapes_scene.render(sc, 32) for sc in swapped],
                                 [shapes_scene.caption(sc) for sc in scenes])
  paired = sum(len(sc) for sc in scenes)
  assert out["score"] == 0.0 and out["count_accuracy"] == 1.0
  assert out["paired_color_accuracy"] == 1.0
  assert out["paired_shape_accuracy"] == (paired - len(scenes)) / paired
  names = shapes_scene.SHAPE_NAMES
  wrong = collections.Counter(f"{names[sc[0].shape]} -> {names[(sc[0].shape + 1) % 3]}"
                              for sc in scenes)
  assert {k: v for k, v in out["shape_confusion"].items()
          if k.split(" -> ")[0] != k.split(" -> ")[1]} == dict(wrong)


def test_understanding_scores():
  out = scores.understanding_scores(["Red.", " two", "yes", "circle"],
                                    ["red", "two", "no", "square"],
                                    ["what color is the circle?", "how many shapes are there?",
                                     "is there a red square?", "what shape is the red one?"])
  assert out["accuracy"] == 0.5 and out["num_questions"] == 4
  assert out["accuracy_by_type"] == {"color": 1.0, "count": 1.0, "exists": 0.0, "shape": 0.0}


def test_evaluate_one_half_only(tmp_path):
  """num_gen=0 (python -m jf_jax.shapes --num_gen=0) answers questions only; both 0 is an
  error naming them."""
  from jf_jax.inference import loader  # pylint: disable=g-import-not-at-top
  from jf_jax.shapes import evaluate  # pylint: disable=g-import-not-at-top
  import tiny_checkpoint  # pylint: disable=g-import-not-at-top
  from jf_jax.shapes import config as shapes_config  # pylint: disable=g-import-not-at-top
  config = shapes_config.add_world(tiny_checkpoint.config())  # its model, a small world
  config.data.update(dict(data_dir=str(tmp_path / "tfds"), num_train=10, num_validation=2,
                          num_test=4))
  ckpt = tiny_checkpoint.write_params_dir(str(tmp_path / "ckpt"))
  loaded = loader.load(ckpt, config=config, image_decoder=False)
  result = evaluate.evaluate(loaded, num_gen=0, num_und=3, batch_size=3)
  assert result["generation"] is None and result["understanding"]["num_questions"] == 3
  line = evaluate.summary(result)
  assert line.startswith("understanding accuracy") and "generation" not in line
  assert "{" not in line and not re.search(r"\d\.\d{4}", line), line  # rounded, no dict
  with pytest.raises(ValueError, match="num_gen=0 and num_und=0"):
    evaluate.evaluate(loaded, num_gen=0, num_und=0)
