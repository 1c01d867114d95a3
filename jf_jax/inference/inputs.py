"""Model inputs for inference, built with the training rows' own code (`data/packing.py`).

Generation prompts are left-padded [pad, BOS, "User: {caption}\\n\\nAssistant:"] (the
sampler appends the unconditional CFG rows itself, `sampling/image.cfg_prompt_rows`);
understanding prompts are the unsupervised prefix of a training row, with one image slot
block (BOI + placeholders), left-padded so every row's answer starts at the same column.
"""

from typing import Any, Sequence

import numpy as np

from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config


def unknown_words(tok: tok_lib.Tokenizer, texts: Sequence[str]) -> list[str]:
  """The distinct words of user `texts` (as `tok.user_text` encodes them) that the
  vocabulary lacks, in order of appearance; sample.py warns with them."""
  words = [w for text in texts for w in tok.unknown_words(tok.user_text(text))]
  return list(dict.fromkeys(words))


def generation_prompts(tok: tok_lib.Tokenizer, captions: Sequence[str]
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n, Lp] int32, mask [n, Lp] bool), left-padded to the longest prompt; captions
  lower-cased for a case-free vocabulary (`Tokenizer.user_text`)."""
  captions = [tok.user_text(c) for c in captions]
  prompt_len = max(len(packing.gen_prompt_ids(tok, c)) for c in captions)
  rows = [packing.pack_gen(tok, c, prompt_len) for c in captions]
  return (np.stack([r["prompt_ids"] for r in rows]),
          np.stack([r["prompt_mask"] for r in rows]))


def understanding_prompts(tok: tok_lib.Tokenizer, cfg: model_config.JanusFlowConfig,
                          questions: Sequence[str], images: Sequence[Any],
                          system_prompt: str) -> dict[str, np.ndarray]:
  """One question about one image per row.

  Args:
    questions: the question texts (no image tag: the template places the image;
      lower-cased for a case-free vocabulary).
    images: uint8 [H, W, 3] arrays, encoded bytes or paths (`preprocess.load_image`).
    system_prompt: the understanding system prompt the model trained with.
  Returns:
    ids [n, S] int32 left-padded with pad_id, valid [n, S] bool, image_mask [n, S] bool
    (BOI + placeholders), images [n, 1, s, s, 3] float32 SigLIP inputs.
  """
  if len(questions) != len(images):
    raise ValueError(f"{len(questions)} questions but {len(images)} images")
  prompts = [packing.und_prompt_ids(tok, tok.user_text(q), cfg.und_encoder.num_patches,
                                    system_prompt) for q in questions]
  seq = max(len(ids) for ids, _ in prompts)
  ids = np.full((len(prompts), seq), tok.pad_id, np.int32)
  image_mask = np.zeros((len(prompts), seq), bool)
  for r, (row, flags) in enumerate(prompts):
    ids[r, seq - len(row):], image_mask[r, seq - len(row):] = row, flags
  valid = np.arange(seq)[None] >= (seq - np.array([len(p[0]) for p in prompts]))[:, None]
  size = cfg.und_encoder.image_size
  pixels = np.stack([preprocess.und_image(preprocess.load_image(im), size) for im in images])
  return {"ids": ids, "valid": valid, "image_mask": image_mask, "images": pixels[:, None]}
