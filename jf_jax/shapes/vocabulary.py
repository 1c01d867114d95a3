"""The shapes world's word-level tokenizer: every word its scenes, captions and questions
use (`scene.vocabulary`), those of its edit instructions (`edits.EDIT_WORDS`) and the
conversation template (`data/tokenizer.word_level`).

`config.data.tokenizer = "shapes"` selects it: `data/tokenizer.make_tokenizer` calls
`jf_jax.shapes.tokenizer(config.tokens)`, this module's `tokenizer`.
"""

from typing import Any

from jf_jax.data import tokenizer as tok_lib
from jf_jax.shapes import edits
from jf_jax.shapes import scene


def tokenizer(tokens_cfg: Any) -> tok_lib.Tokenizer:
  """Word-level tokenizer of the shapes world; special ids from `tokens_cfg`."""
  # The edit instructions' words come after all others: captions and questions keep the
  # token ids they had before edits existed (runs trained then still read the same ids).
  return tok_lib.word_level(tokens_cfg, scene.vocabulary(), edits.EDIT_WORDS)
