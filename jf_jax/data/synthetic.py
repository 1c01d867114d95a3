"""Synthetic batches with the real layout (`layout.py`), for tests and benchmarks.

Deterministic in (seed, step). Content is random but well formed: understanding rows are
[BOS, prompt, BOI, placeholders, EOI, question, answer, EOS, pad...] with loss only on the
answer and EOS; text rows are fully supervised up to their random length; generation rows
have a left-padded prompt and uniform uint8 pixels; edit rows a left-padded
[BOS, word, BOI, placeholders, EOI, words] prompt, a uniform source and target.
"""

from typing import Any

import numpy as np

from jf_jax.data import layout
from jf_jax.models.config import JanusFlowConfig


def _und_rows(rng, b, seq, n_img, tok, vocab):
  ids = np.full((b, seq), tok.pad_id, np.int32)
  image_mask = np.zeros((b, seq), bool)
  weights = np.zeros((b, seq), np.float32)
  first_word = tok.num_special
  for r in range(b):
    prompt = rng.integers(first_word, vocab, size=rng.integers(1, 4))
    question = rng.integers(first_word, vocab, size=rng.integers(1, 4))
    answer = rng.integers(first_word, vocab, size=rng.integers(1, 4))
    row = [tok.bos_id, *prompt, tok.boi_id, *([tok.image_id] * (n_img - 1)), tok.eoi_id,
           *question]
    start = len(row)
    row = row + [*answer, tok.eos_id]
    if len(row) > seq:
      raise ValueError(f"config.batch.und_seq_len={seq} is too short for {n_img} image "
                       f"tokens plus text ({len(row)} needed)")
    ids[r, :len(row)] = row
    image_mask[r, len(prompt) + 1:len(prompt) + 1 + n_img] = True
    weights[r, start - 1:len(row) - 1] = 1.0  # positions whose *target* is answer / EOS
  return ids, image_mask, weights


def _text_rows(rng, b, seq, tok, vocab):
  ids = np.full((b, seq), tok.pad_id, np.int32)
  weights = np.zeros((b, seq), np.float32)
  for r in range(b):
    n = int(rng.integers(seq // 2, seq + 1))
    ids[r, 0] = tok.bos_id
    ids[r, 1:n] = rng.integers(tok.num_special, vocab, size=n - 1)
    weights[r, :n - 1] = 1.0
  return ids, weights


def _shift(ids, pad_id):
  targets = np.full_like(ids, pad_id)
  targets[:, :-1] = ids[:, 1:]
  return targets


def _gen_rows(rng, b, prompt_len, tok, vocab):
  ids = np.full((b, prompt_len), tok.pad_id, np.int32)
  mask = np.zeros((b, prompt_len), bool)
  for r in range(b):
    n = int(rng.integers(2, prompt_len + 1))
    ids[r, -n] = tok.bos_id
    ids[r, prompt_len - n + 1:] = rng.integers(tok.num_special, vocab, size=n - 1)
    mask[r, -n:] = True
  return ids, mask


def _edit_rows(rng, b, prompt_len, n_img, tok, vocab):
  ids = np.full((b, prompt_len), tok.pad_id, np.int32)
  image_mask = np.zeros((b, prompt_len), bool)
  for r in range(b):
    words = rng.integers(tok.num_special, vocab, size=rng.integers(1, 4))
    row = [tok.bos_id, int(rng.integers(tok.num_special, vocab)), tok.boi_id,
           *([tok.image_id] * (n_img - 1)), tok.eoi_id, *words]
    if len(row) > prompt_len:
      raise ValueError(f"config.batch.edit_prompt_len={prompt_len} is too short for {n_img} "
                       f"image tokens plus text ({len(row)} needed)")
    ids[r, prompt_len - len(row):] = row
    image_mask[r, prompt_len - len(row) + 2:prompt_len - len(row) + 2 + n_img] = True
  return ids, image_mask


def make_batch(batch_cfg: Any, tok: Any, cfg: JanusFlowConfig, seed: int, step: int,
               pixel_size: int) -> dict[str, np.ndarray]:
  """One global batch (numpy) with the layout of `layout.batch_shapes` (`pixel_size`: P of
  the run's `LatentSpace`); images uniform uint8."""
  rng = np.random.default_rng([seed, step])
  shapes = layout.batch_shapes(batch_cfg, cfg, pixel_size)
  vocab = cfg.llm.vocab_size
  u, us = shapes["und_ids"][0]
  und_ids, und_image_mask, und_weights = _und_rows(rng, u, us, cfg.num_und_tokens, tok, vocab)
  t, ts = shapes["text_ids"][0]
  text_ids, text_weights = _text_rows(rng, t, ts, tok, vocab)
  g, pl = shapes["gen_prompt_ids"][0]
  gen_ids, gen_mask = _gen_rows(rng, g, pl, tok, vocab)
  def random(key):
    return rng.integers(0, 256, shapes[key][0], dtype=np.uint8)
  batch = {
      "und_ids": und_ids, "und_images": random("und_images"),
      "und_image_mask": und_image_mask, "und_valid": und_ids != tok.pad_id,
      "und_targets": _shift(und_ids, tok.pad_id), "und_weights": und_weights,
      "text_ids": text_ids, "text_valid": text_ids != tok.pad_id,
      "text_targets": _shift(text_ids, tok.pad_id), "text_weights": text_weights,
      "gen_prompt_ids": gen_ids, "gen_prompt_mask": gen_mask,
      "gen_pixels": random("gen_pixels"), "gen_weights": np.ones((g,), np.float32),
  }
  e, el = shapes["edit_prompt_ids"][0]
  if e:  # drawn after everything else: batches without edit rows are unchanged
    edit_ids, edit_image_mask = _edit_rows(rng, e, el, cfg.num_und_tokens, tok, vocab)
    batch.update(edit_prompt_ids=edit_ids, edit_prompt_mask=edit_ids != tok.pad_id,
                 edit_image_mask=edit_image_mask, edit_images=random("edit_images"),
                 edit_pixels=random("edit_pixels"), edit_weights=np.ones((e,), np.float32))
  else:
    batch.update({k: np.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()
                  if k.startswith("edit_")})
  return batch

