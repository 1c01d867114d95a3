"""Checks of user prompts before sampling: words the vocabulary lacks are named.

A word-level vocabulary (the shapes world's) maps every word it lacks to <unk>, which the
model never saw in a prompt; sample.py warns with the list instead of sampling silently
from a different prompt. Case-free vocabularies lower-case the text first
(`Tokenizer.user_text`), so capitals are not unknown words.
"""

import sys
from typing import Sequence, TextIO

from jf_jax.data import tokenizer as tok_lib
from jf_jax.inference import inputs


def unknown_words_message(tok: tok_lib.Tokenizer, texts: Sequence[str]) -> str | None:
  """'warning: ...' naming the words of `texts` that become <unk>; None if there are none."""
  words = inputs.unknown_words(tok, texts)
  if not words:
    return None
  return (f"warning: {len(words)} word(s) not in the tokenizer's vocabulary, each encoded "
          f"as <unk>: {', '.join(words)}")


def warn_unknown_words(tok: tok_lib.Tokenizer, texts: Sequence[str],
                       stream: TextIO = sys.stderr) -> None:
  """Writes `unknown_words_message` to `stream` when there are unknown words."""
  message = unknown_words_message(tok, texts)
  if message:
    stream.write(message + "\n")
    stream.flush()
