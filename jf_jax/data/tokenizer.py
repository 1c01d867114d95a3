"""Tokenizers behind one interface: the DeepSeek BPE from a checkpoint, or a word-level one.

Both are HF `tokenizers.Tokenizer`s wrapped in `Tokenizer`, which knows the seven special
ids the model uses. Special tokens are written with the official strings in both (so the
conversation templates in `templates.py` are one set of strings) and always encode to one
id each.

* `from_checkpoint_dir(path)`: `tokenizer.json` of a JanusFlow / DeepSeek-LLM checkpoint.
  As the official `VLChatProcessor` does, the image and generation tags are added as special
  tokens if the vocabulary lacks them, and pad falls back to EOS if `<｜▁pad▁｜>` is absent
 . All ids are read from the file.
* `word_level(tokens_cfg, words)`: a word-level vocabulary of a small world's words (e.g.
  the shapes world's, `jf_jax/shapes/vocabulary.py`), the conversation template and the
  official system prompt, with the special ids of `config.tokens`
  (`config_defaults.tokens_tiny`). Pieces keep their leading space (" circle"), so
  `decode(encode(s)) == s` for any text made of known words.

`make_tokenizer(config)` picks one from `config.data.tokenizer` and checks its ids against
`config.tokens`, which the train step uses (pad id of the CFG-dropped prompts): a directory
holding `tokenizer.json`, or the name of a module whose `tokenizer(tokens_cfg)` builds one
(a dotted path, or a project package under jf_jax/: "shapes" is `jf_jax.shapes`).
"""

import dataclasses
import functools
import os
from typing import Any, Sequence

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers

from jf_jax.data import plugins
from jf_jax.data import storage

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
GEN_TAG = "<｜begin▁of▁generation｜>"
UNK = "<unk>"  # word-level tokenizers only

# `config.tokens` key -> special-token string.
SPECIAL_TOKENS = {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "boi_id": BOI, "eoi_id": EOI,
                  "image_id": IMAGE, "gen_tag_id": GEN_TAG}
# Tags the official processor adds when the vocabulary lacks them.
_ADDED_IF_MISSING = (IMAGE, BOI, EOI, GEN_TAG)

# Words of the official understanding system prompt and of the conversation template.
_TEMPLATE_WORDS = (
    "User Assistant You are a helpful language and vision assistant able to understand the "
    "visual content that user provides assist with variety of tasks using natural").split()
_PUNCTUATION = (".", ",", "?", ":", "!", "'")
_WORD_SPLIT = r"\n\n|\n| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\s"


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Text <-> ids, plus the special ids the model needs (`config.tokens` names)."""
  hf: tokenizers.Tokenizer
  pad_id: int
  bos_id: int
  eos_id: int
  boi_id: int
  eoi_id: int
  image_id: int
  gen_tag_id: int

  @property
  def vocab_size(self) -> int:
    return self.hf.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    """Ids of `text`, no BOS/EOS added; special-token strings become their single id."""
    return self.hf.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def special_ids(self) -> dict[str, int]:
    return {key: getattr(self, key) for key in SPECIAL_TOKENS}

  @functools.cached_property
  def unk_id(self) -> int | None:
    """The id unknown words map to (word-level tokenizers); None for byte-level BPE."""
    return self.hf.token_to_id(UNK)

  @functools.cached_property
  def case_free(self) -> bool:
    """Whether the vocabulary has no upper-case words (the template's aside): then user
    text is lower-cased before encoding, so "Red" is "red" and not <unk>."""
    if self.unk_id is None:
      return False
    template = {w.lower() for w in _TEMPLATE_WORDS}
    pieces = (p.strip() for p in self.hf.get_vocab(with_added_tokens=False))
    return not any(p != p.lower() and p.lower() not in template for p in pieces)

  def user_text(self, text: str) -> str:
    """A prompt, caption or question as it is encoded: lower-cased if `case_free`."""
    return text.lower() if self.case_free else text

  def unknown_words(self, text: str) -> list[str]:
    """The words of `text` the vocabulary lacks (each becomes <unk>), in order."""
    if self.unk_id is None:
      return []
    encoding = self.hf.encode(text, add_special_tokens=False)
    return [text[start:end].strip() for i, (start, end) in zip(encoding.ids, encoding.offsets)
            if i == self.unk_id]


def _special(hf: tokenizers.Tokenizer, **overrides) -> dict[str, int]:
  ids = {key: hf.token_to_id(tok) for key, tok in SPECIAL_TOKENS.items()}
  ids.update(overrides)
  missing = sorted(k for k, v in ids.items() if v is None)
  if missing:
    raise ValueError(f"tokenizer lacks special tokens for {missing}")
  return ids


def from_checkpoint_dir(path: str) -> Tokenizer:
  """The DeepSeek tokenizer of a checkpoint directory (its `tokenizer.json`)."""
  file = path if path.endswith(".json") else storage.join(path, "tokenizer.json")
  if not storage.exists(file):
    raise FileNotFoundError(f"no tokenizer.json at {file} (config.data.tokenizer)")
  hf = tokenizers.Tokenizer.from_file(storage.local_copy(file))  # reads local files only
  missing = [t for t in _ADDED_IF_MISSING if hf.token_to_id(t) is None]
  hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                         for t in missing])
  for tok in (BOS, EOS):
    if hf.token_to_id(tok) is None:
      raise ValueError(f"{file} has no {tok!r} token; is it a DeepSeek-LLM tokenizer?")
  pad = hf.token_to_id(PAD)
  return Tokenizer(hf, **_special(hf, pad_id=hf.token_to_id(EOS) if pad is None else pad))


def word_level_pieces(words: Sequence[str], extra_words: Sequence[str] = ()) -> list[str]:
  """Non-special pieces of a word-level tokenizer of `words`, in id order.

  `extra_words` (those not already there) come after every other piece, so adding them
  leaves the ids of a vocabulary without them unchanged (old runs' tokens keep their ids).
  """
  words = sorted(set(words) | set(_TEMPLATE_WORDS))
  pieces = [p for w in words for p in (w, " " + w)]
  pieces += [p for c in _PUNCTUATION for p in (c, " " + c)]
  pieces += [" ", "\n", "\n\n"]
  extra = sorted(set(extra_words) - set(words))
  return pieces + [p for w in extra for p in (w, " " + w)]


def word_level(tokens_cfg: Any, words: Sequence[str], extra_words: Sequence[str] = ()
               ) -> Tokenizer:
  """Word-level tokenizer of `words` and the templates, then `extra_words` (ids after all
  others: `word_level_pieces`); special ids from `tokens_cfg`."""
  ids = {SPECIAL_TOKENS[k]: int(tokens_cfg[k]) for k in SPECIAL_TOKENS}
  num_special = int(tokens_cfg.num_special)
  free = sorted(set(range(num_special)) - set(ids.values()))
  if len(set(ids.values())) != len(ids) or max(ids.values()) >= num_special or not free:
    raise ValueError("config.tokens must give distinct special ids below num_special with "
                     f"one spare id for <unk>; got {dict(tokens_cfg)}")
  vocab = {**ids, UNK: free[0]}
  pieces = word_level_pieces(words, extra_words)
  vocab.update({p: num_special + i for i, p in enumerate(pieces)})
  hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  hf.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(_WORD_SPLIT), behavior="isolated")
  hf.decoder = decoders.Fuse()
  hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                         for t in [*SPECIAL_TOKENS.values(), UNK]])
  return Tokenizer(hf, **{k: ids[t] for k, t in SPECIAL_TOKENS.items()})


def _is_path(name: str) -> bool:
  """Whether `config.data.tokenizer` names a tokenizer.json (else a module)."""
  return (not name or os.sep in name or name.endswith(".json") or storage.is_remote(name)
          or os.path.exists(os.path.join(name, "tokenizer.json")))


def from_module(name: str, tokens_cfg: Any) -> Tokenizer:
  """`tokenizer(tokens_cfg)` of module `name` (dotted path, or a package under jf_jax/)."""
  try:
    module = plugins.import_named(name, "config.data.tokenizer", "tokenizer")
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{e}; it is neither a directory holding tokenizer.json nor a "
                            "tokenizer module") from e
  return module.tokenizer(tokens_cfg)


def load(name: str, tokens_cfg: Any) -> Tokenizer:
  """The tokenizer `config.data.tokenizer` names: a tokenizer.json directory or a module."""
  return from_checkpoint_dir(name) if _is_path(name) else from_module(name, tokens_cfg)


def make_tokenizer(config: Any) -> Tokenizer:
  """`load(config.data.tokenizer)`, its ids checked against config.tokens.

  A `config.tokens` id of -1 means "whatever the file says" (not checked).
  """
  name = config.data.tokenizer
  tok = load(name, config.tokens)
  for key, value in tok.special_ids().items():
    want = int(config.tokens[key])
    if want != -1 and want != value:
      raise ValueError(f"config.tokens.{key}={want} but the tokenizer ({name}) has "
                       f"{SPECIAL_TOKENS[key]!r} = {value}; fix config.tokens")
  if tok.vocab_size > config.model.llm.vocab_size:
    raise ValueError(f"tokenizer ({name}) has {tok.vocab_size} tokens, more than "
                     f"config.model.llm.vocab_size={config.model.llm.vocab_size}")
  return tok
