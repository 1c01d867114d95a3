"""Shapes-world edits: exact ground truth checked by the detector, the held-out rule, the
edit score and its copy-the-source baseline."""

import numpy as np
import pytest

from jf_jax.shapes import detector
from jf_jax.shapes import edits
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import scores

SIZE = 32
HOLDOUT = shapes_scene.holdout_pairs(0)


def _edits(kind, test, n=40, layout="columns"):
  out = []
  for i in range(400):
    rng = np.random.default_rng([5, int(test), i])
    scene = shapes_scene.sample_scene(rng, SIZE, HOLDOUT, test=test, layout=layout)
    if edits.possible(kind, len(scene)):
      try:
        out.append(edits.make_edit(rng, scene, SIZE, HOLDOUT, test=test, kind=kind,
                                   layout=layout))
      except ValueError:  # this kind cannot meet the held-out rule on this scene
        continue
    if len(out) == n:
      return out
  raise AssertionError(f"too few scenes for {kind}")


@pytest.mark.parametrize("layout", shapes_scene.LAYOUTS)
@pytest.mark.parametrize("kind", edits.EDIT_TYPES)
def test_every_target_is_the_instruction_applied_to_the_source(kind, layout):
  """Rendered, the target is detected as the instruction applied to the detected source,
  for every edit type, in both splits' kinds of scenes and both layouts."""
  for test in (False, True):
    for edit in _edits(kind, test, n=15, layout=layout):
      assert edit.kind == kind
      source = detector.scene(shapes_scene.render(list(edit.source), SIZE))
      target = detector.scene(shapes_scene.render(list(edit.target), SIZE))
      assert source == edits.pairs(edit.source)
      assert target == edits.apply_instruction(source, edit.instruction), edit
      assert target != source  # every edit changes the scene
      assert edits.kind_of(edit.instruction) == kind


def test_held_out_pairs_only_in_test_targets():
  for i in range(100):  # a drawn kind: every scene gets an edit of some type
    rng = np.random.default_rng([6, i])
    scene = shapes_scene.sample_scene(rng, SIZE, HOLDOUT, test=True)
    edit = edits.make_edit(rng, scene, SIZE, HOLDOUT, test=True)
    assert shapes_scene.has_holdout([(o.color, o.shape) for o in edit.target], HOLDOUT)
  for kind in edits.EDIT_TYPES:
    for test in (False, True):
      for edit in _edits(kind, test, n=10):
        target = [(o.color, o.shape) for o in edit.target]
        assert shapes_scene.has_holdout(target, HOLDOUT) == test


def test_instructions_use_the_world_vocabulary_and_bad_ones_are_named():
  from jf_jax import config_defaults  # pylint: disable=g-import-not-at-top
  from jf_jax.shapes import vocabulary  # pylint: disable=g-import-not-at-top
  tok = vocabulary.tokenizer(config_defaults.tokens_tiny())
  for kind in edits.EDIT_TYPES:
    for edit in _edits(kind, False, n=5):
      assert tok.unknown_words(edit.instruction) == []
  with pytest.raises(ValueError, match="not a shapes-world edit"):
    edits.apply_instruction([("red", "circle")], "paint the red circle")
  with pytest.raises(ValueError, match="names a blue square"):
    edits.apply_instruction([("red", "circle")], "remove the blue square")
  with pytest.raises(ValueError, match="does not apply"):
    edits.make_edit(np.random.default_rng(0), _edits("add", False, 1)[0].source[:1], SIZE,
                    HOLDOUT, test=False, kind="remove")


def test_edit_words_leave_the_caption_ids_unchanged():
  """The edit words come after every other piece: old runs' token ids are kept."""
  from jf_jax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  old = tok_lib.word_level_pieces(shapes_scene.vocabulary())
  new = tok_lib.word_level_pieces(shapes_scene.vocabulary(), edits.EDIT_WORDS)
  assert new[:len(old)] == old and len(new) > len(old)


def test_edit_score_by_type_and_the_copy_baseline():
  batch = [e for kind in edits.EDIT_TYPES for e in _edits(kind, True, n=4)]
  targets = [e.target_pairs for e in batch]
  kinds = [e.kind for e in batch]
  perfect = scores.edit_scores([shapes_scene.render(list(e.target), SIZE) for e in batch],
                               targets, kinds)
  copy = scores.edit_scores([shapes_scene.render(list(e.source), SIZE) for e in batch],
                            targets, kinds)
  assert perfect["score"] == 1.0 and set(perfect["score_by_type"]) == set(edits.EDIT_TYPES)
  assert copy["score"] == 0.0 and all(v == 0.0 for v in copy["score_by_type"].values())
  # A copied recolour keeps every object but one: the softer figure sees that.
  recolor = [i for i, k in enumerate(kinds) if k == "recolor"]
  soft = scores.edit_scores([shapes_scene.render(list(batch[i].source), SIZE)
                             for i in recolor], [targets[i] for i in recolor],
                            ["recolor"] * len(recolor))
  assert 0.0 < soft["object_accuracy"] < 1.0


def test_split_edits_carry_what_the_diagnostic_needs(tmp_path):
  """Each test edit's target caption is its target scene in caption words, its source is
  the detected source image, and its questions are the source example's; outputs equal
  to the source count as copies, blank ones do not."""
  from jf_jax import config_defaults  # pylint: disable=g-import-not-at-top
  from jf_jax.shapes import config as shapes_config  # pylint: disable=g-import-not-at-top
  from jf_jax.shapes import edit_eval  # pylint: disable=g-import-not-at-top
  config = shapes_config.add_world(config_defaults.base_config())
  config.data.update(dict(data_dir=str(tmp_path), num_train=10, num_validation=10,
                          num_test=30))
  items = edit_eval.split_edits(config.data, "test", per_type=2)
  assert sorted({x["kind"] for x in items}) == sorted(edits.EDIT_TYPES)
  for x in items:
    assert shapes_scene.parse_caption(x["target_caption"]) == x["target"]
    assert detector.scene(x["image"]) == x["source"]
    assert edits.apply_instruction(x["source"], x["instruction"]) == x["target"]
    assert len(x["questions"]) == len(x["answers"]) > 0
  assert edit_eval.copies([x["image"] for x in items], items)["rate"] == 1.0
  blank = edit_eval.copies([np.full_like(x["image"], 255) for x in items], items)
  assert blank["rate"] == 0.0 and set(blank["by_type"]) == set(edits.EDIT_TYPES)
