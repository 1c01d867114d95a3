"""Prompt checks: unknown words are named, case-free vocabularies lower-case user text."""

from jf_jax import config_defaults
from jf_jax.data import tokenizer as tok_lib
from jf_jax.inference import inputs
from jf_jax.inference import prompts
from jf_jax.shapes import vocabulary
import release_fixtures


def test_word_level_vocabulary_names_unknown_words_and_ignores_case():
  tok = vocabulary.tokenizer(config_defaults.tokens_tiny())
  assert tok.case_free
  assert inputs.unknown_words(tok, ["A Red fox circle", "a blue FOX square"]) == ["fox"]
  assert prompts.unknown_words_message(tok, ["a red circle"]) is None
  ids, _ = inputs.generation_prompts(tok, ["A Red Circle"])
  lower, _ = inputs.generation_prompts(tok, ["a red circle"])
  assert (ids == lower).all() and tok.unk_id not in ids


def test_byte_level_vocabulary_has_no_unknown_words(tmp_path):
  tok = tok_lib.from_checkpoint_dir(release_fixtures.write_tokenizer(str(tmp_path)))
  assert not tok.case_free and tok.unk_id is None
  assert inputs.unknown_words(tok, ["A red fox in the snow"]) == []
