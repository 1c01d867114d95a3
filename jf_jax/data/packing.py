"""Records -> fixed-length token rows with loss masks (the `layout.py` row formats).

Understanding rows are right-padded:
  [BOS, prompt ..., BOI, N x IMAGE, EOI, prompt ..., answer ..., EOS, (next turn ...), pad]
with `image_mask` on BOI and the N placeholders (N = SigLIP patches, so BOI + N =
`cfg.num_und_tokens`, the embeddings the model writes there), `weights` 1 exactly where the
*target* is an answer token or its EOS (the paper: loss on responses only). Text rows are
[BOS, text, EOS, pad] with every target supervised. Generation prompts are left-padded
[pad, BOS, "User: {caption}\\n\\nAssistant:"] (as the official sampler: BOS first, tag dropped).
Edit prompts are left-padded too, [pad, BOS, "User: ", BOI, N x IMAGE, EOI,
"\\n{instruction}\\n\\nAssistant:"], with `image_mask` on BOI and the N placeholders as in
understanding rows (the source image's SigLIP tokens go there) and the flow's inputs after
them as in generation rows.

A row that does not fit, or has empty text, raises `BadExample`; `padding_row` gives the
zero-weight row the source puts in its place so batches keep their static shape.
"""

import numpy as np

from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.data.records import BadExample


def _shifted(ids: np.ndarray, pad_id: int) -> np.ndarray:
  targets = np.full_like(ids, pad_id)
  targets[:-1] = ids[1:]
  return targets


def _expand_image(tok: tok_lib.Tokenizer, ids: list[int], num_patches: int):
  """Replaces the one IMAGE id by BOI + num_patches x IMAGE + EOI; returns (ids, image_flags)."""
  if ids.count(tok.image_id) != 1:
    raise BadExample("image_tag_count", f"{ids.count(tok.image_id)} image tags in a turn")
  at = ids.index(tok.image_id)
  block = [tok.boi_id] + [tok.image_id] * num_patches + [tok.eoi_id]
  flags = [False] * at + [True] * (num_patches + 1) + [False] * (len(ids) - at)
  return ids[:at] + block + ids[at + 1:], flags


def und_prompt_ids(tok: tok_lib.Tokenizer, question: str, num_patches: int,
                   system_prompt: str) -> tuple[list[int], list[bool]]:
  """The inference prompt [BOS, ..., BOI, N x IMAGE, EOI, ..., "Assistant:"] and its image
  flags (BOI + placeholders), exactly the unsupervised prefix of a `pack_und` row."""
  ids = [tok.bos_id] + tok.encode(templates.und_prompt(question, system_prompt))
  return _expand_image(tok, ids, num_patches)


def pack_und(tok: tok_lib.Tokenizer, turns, num_patches: int, seq_len: int,
             system_prompt: str) -> dict[str, np.ndarray]:
  """One understanding conversation -> ids/image_mask/valid/targets/weights [seq_len]."""
  if not turns or any(not q.strip() or not a.strip() for q, a in turns):
    raise BadExample("empty_text", "a question or answer is empty")
  ids, image, supervised = [tok.bos_id], [False], [False]
  for i, (text, is_answer) in enumerate(templates.und_segments(turns, system_prompt)):
    piece = tok.encode(text)
    flags = [False] * len(piece)
    if i == 0:
      piece, flags = _expand_image(tok, piece, num_patches)
    elif tok.image_id in piece:
      raise BadExample("image_tag_count", "an image tag after the first turn")
    if is_answer:
      piece, flags = piece + [tok.eos_id], flags + [False]
    ids += piece
    image += flags
    supervised += [is_answer] * len(piece)
  n = len(ids)
  if n > seq_len:
    raise BadExample("too_long", f"understanding row of {n} tokens > und_seq_len={seq_len}",
                     length=n)
  row = np.full((seq_len,), tok.pad_id, np.int32)
  row[:n] = ids
  image_mask = np.zeros((seq_len,), bool)
  image_mask[:n] = image
  sup = np.zeros((seq_len + 1,), bool)
  sup[:n] = supervised
  return {"ids": row, "image_mask": image_mask, "valid": np.arange(seq_len) < n,
          "targets": _shifted(row, tok.pad_id), "weights": sup[1:].astype(np.float32)}


def pack_text(tok: tok_lib.Tokenizer, text: str, seq_len: int) -> dict[str, np.ndarray]:
  """[BOS, text, EOS] -> ids/valid/targets/weights [seq_len]; every target supervised."""
  if not text.strip():
    raise BadExample("empty_text", "empty text")
  ids = [tok.bos_id] + tok.encode(text) + [tok.eos_id]
  n = len(ids)
  if n > seq_len:
    raise BadExample("too_long", f"text row of {n} tokens > text_seq_len={seq_len}", length=n)
  row = np.full((seq_len,), tok.pad_id, np.int32)
  row[:n] = ids
  return {"ids": row, "valid": np.arange(seq_len) < n, "targets": _shifted(row, tok.pad_id),
          "weights": (np.arange(seq_len) < n - 1).astype(np.float32)}


def gen_prompt_ids(tok: tok_lib.Tokenizer, caption: str) -> list[int]:
  """[BOS, tokens of "User: {caption}\\n\\nAssistant:"] (the sampler's prefix too)."""
  return [tok.bos_id] + tok.encode(templates.gen_prompt(caption))


def pack_gen(tok: tok_lib.Tokenizer, caption: str, prompt_len: int) -> dict[str, np.ndarray]:
  """A caption -> left-padded prompt_ids/prompt_mask [prompt_len]."""
  if not caption.strip():
    raise BadExample("empty_text", "empty caption")
  row, start = _left_padded(tok, gen_prompt_ids(tok, caption), prompt_len,
                            "prompt", "gen_prompt_len")
  return {"prompt_ids": row, "prompt_mask": np.arange(prompt_len) >= start}


def _left_padded(tok: tok_lib.Tokenizer, ids: list[int], prompt_len: int, what: str,
                 key: str) -> tuple[np.ndarray, int]:
  """ids left-padded to [prompt_len] and the first real position; a prompt longer than
  `key` (the config key of prompt_len) is a too_long bad example."""
  n = len(ids)
  if n > prompt_len:
    raise BadExample("too_long", f"{what} of {n} tokens > {key}={prompt_len}", length=n)
  row = np.full((prompt_len,), tok.pad_id, np.int32)
  row[prompt_len - n:] = ids
  return row, prompt_len - n


def edit_prompt_ids(tok: tok_lib.Tokenizer, instruction: str, num_patches: int
                    ) -> tuple[list[int], list[bool]]:
  """[BOS, "User: ", BOI, N x IMAGE, EOI, "\\n{instruction}\\n\\nAssistant:"] and its image
  flags (BOI + placeholders): the packed edit row's prompt and the sampler's."""
  ids = [tok.bos_id] + tok.encode(templates.edit_prompt(instruction))
  return _expand_image(tok, ids, num_patches)


def pack_edit(tok: tok_lib.Tokenizer, instruction: str, num_patches: int, prompt_len: int
              ) -> dict[str, np.ndarray]:
  """An instruction -> left-padded prompt_ids/prompt_mask/image_mask [prompt_len]."""
  if not instruction.strip():
    raise BadExample("empty_text", "empty instruction")
  ids, flags = edit_prompt_ids(tok, instruction, num_patches)
  row, start = _left_padded(tok, ids, prompt_len, "edit prompt", "edit_prompt_len")
  image_mask = np.zeros((prompt_len,), bool)
  image_mask[start:] = flags
  return {"prompt_ids": row, "prompt_mask": np.arange(prompt_len) >= start,
          "image_mask": image_mask}


def padding_row(task: str, tok: tok_lib.Tokenizer, seq_len: int) -> dict[str, np.ndarray]:
  """A zero-weight row (BOS only, attended) standing in for a skipped example."""
  if task == "edit":
    row = padding_row("gen", tok, seq_len)
    return {**row, "image_mask": np.zeros((seq_len,), bool)}
  if task == "gen":
    row = np.full((seq_len,), tok.pad_id, np.int32)
    row[-1] = tok.bos_id
    return {"prompt_ids": row, "prompt_mask": np.arange(seq_len) == seq_len - 1}
  row = np.full((seq_len,), tok.pad_id, np.int32)
  row[0] = tok.bos_id
  out = {"ids": row, "valid": np.arange(seq_len) < 1, "targets": _shifted(row, tok.pad_id),
         "weights": np.zeros((seq_len,), np.float32)}
  if task == "und":
    out["image_mask"] = np.zeros((seq_len,), bool)
  return out
