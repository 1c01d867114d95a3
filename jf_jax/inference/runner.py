"""Batched inference on a loaded checkpoint (`loader.Loaded`): captions -> images and
(image, question) pairs -> answers.

Both batch with fixed shapes (the last batch is padded by repeating its last row), so each
compiles once; batch i draws its randomness from `fold_in(key(seed), i)`.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jf_jax.inference import inputs
from jf_jax.inference import loader
from jf_jax.sampling import image as image_sampling
from jf_jax.sampling import text as text_sampling


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Repeats the last row up to `rows` rows (fixed batch shape -> one compile)."""
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)]) if len(x) < rows else x


def generate_images(loaded: loader.Loaded, captions: Sequence[str], *, steps: int = 30,
                    guidance: float = 2.0, seed: int = 0, batch_size: int = 32,
                    solver: str = "euler",
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
  """uint8 [n, H, W, 3] images, one per caption (classifier-free guidance `guidance`).

  `progress(done)` is called after each batch with the number of images drawn so far.
  """
  if loaded.decode_fn is None:
    raise ValueError("generate_images needs the image decoder: load the checkpoint with "
                     "image_decoder=True")
  ids, mask = inputs.generation_prompts(loaded.tok, captions)
  sampler = image_sampling.make_sampler(loaded.model, pad_id=loaded.tok.pad_id,
                                        solver=solver, decode_fn=loaded.decode_fn)
  key, size, out = jax.random.key(seed), min(batch_size, len(captions)), []
  for i, (lo, hi) in enumerate(_batches(len(captions), batch_size)):
    result = sampler(loaded.params, jnp.asarray(_pad_rows(ids[lo:hi], size)),
                     jnp.asarray(_pad_rows(mask[lo:hi], size)), jax.random.fold_in(key, i),
                     steps, guidance, loaded.decode_params)
    out.append(np.asarray(jax.device_get(result["images"]))[:hi - lo])
    if progress is not None:
      progress(hi)
  return np.concatenate(out)


def answer_questions(loaded: loader.Loaded, images: Sequence[Any], questions: Sequence[str],
                     *, max_new_tokens: int = 8, batch_size: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> list[str]:
  """Answers (special tokens removed, stripped) to questions about images.

  `images`: uint8 [H, W, 3] arrays, encoded bytes or paths; temperature 0 is greedy.
  `progress(done)` is called after each batch with the number of questions answered.
  """
  rows = inputs.understanding_prompts(loaded.tok, loaded.cfg, questions, images,
                                      loaded.system_prompt)
  decoder = text_sampling.make_decoder(loaded.model, max_new_tokens=max_new_tokens)
  key, size, answers = jax.random.key(seed), min(batch_size, len(questions)), []
  for i, (lo, hi) in enumerate(_batches(len(questions), batch_size)):
    batch = {k: jnp.asarray(_pad_rows(v[lo:hi], size)) for k, v in rows.items()}
    tokens, lengths = decoder(loaded.params, batch["ids"], batch["valid"],
                              jax.random.fold_in(key, i), loaded.tok.eos_id,
                              loaded.tok.pad_id, temperature, top_p, batch["images"],
                              batch["image_mask"])
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    answers += [loaded.tok.decode(tokens[r, :lengths[r]].tolist()).strip()
                for r in range(hi - lo)]
    if progress is not None:
      progress(hi)
  return answers
