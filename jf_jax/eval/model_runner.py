"""The thin adapter between a training checkpoint and the samplers (`jf_jax/sampling`).

`load_run(workdir)` restores the run's config, params and tokenizer; `generate_images`
turns captions into uint8 images (pixel-space models) and `answer_questions` turns
(image, question) pairs into answer strings (greedy). Both batch with fixed shapes (the
last batch is padded), so each compiles once.
"""

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.sampling import common
from jf_jax.sampling import image as image_sampling
from jf_jax.sampling import text as text_sampling


@dataclasses.dataclass
class Run:
  config: Any  # the run's ConfigDict
  cfg: model_config.JanusFlowConfig
  model: janusflow.JanusFlow
  params: Any
  tok: tok_lib.Tokenizer
  step: int


def load_config(workdir: str) -> tuple[ml_collections.ConfigDict, int]:
  """(config, step) of the latest checkpoint of a training workdir."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data", "config"))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {directory} (--checkpoint is a train.py "
                            "--workdir)")
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored.config), step


def load_run(workdir: str) -> Run:
  """Config, params (compute dtype, one device) and tokenizer of a training run."""
  config, step = load_config(workdir)
  cfg = model_config.from_config_dict(config.model)
  abstract = params_io.abstract_params(cfg)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = ckpt.restore_params(workdir, abstract, jax.tree.map(lambda _: device, abstract),
                               step)
  return Run(config, cfg, janusflow.JanusFlow(cfg), common.cast_floating(params, cfg.dtype),
             tok_lib.make_tokenizer(config), step)


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Repeats the last row up to `rows` rows (fixed batch shape -> one compile)."""
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)]) if len(x) < rows else x


def generate_images(run: Run, captions: Sequence[str], *, steps: int = 30,
                    guidance: float = 2.0, seed: int = 0, batch_size: int = 32) -> np.ndarray:
  """uint8 [n, L, L, 3] images for captions (pixel-space generation only)."""
  if run.config.data.get("gen_space", "pixel") != "pixel" or run.cfg.gen_encoder.in_channels != 3:
    raise NotImplementedError("generate_images decodes pixel-space models only; a VAE model "
                              "needs sample.py --vae")
  prompt_len = max(len(packing.gen_prompt_ids(run.tok, c)) for c in captions)
  rows = [packing.pack_gen(run.tok, c, prompt_len) for c in captions]
  ids = np.stack([r["prompt_ids"] for r in rows])
  mask = np.stack([r["prompt_mask"] for r in rows])
  sampler = image_sampling.make_sampler(run.model, pad_id=run.tok.pad_id,
                                        decode_fn=image_sampling.pixel_space_decode)
  key, out = jax.random.key(seed), []
  for i, (lo, hi) in enumerate(_batches(len(captions), batch_size)):
    size = min(batch_size, len(captions))
    result = sampler(run.params, jnp.asarray(_pad_rows(ids[lo:hi], size)),
                     jnp.asarray(_pad_rows(mask[lo:hi], size)), jax.random.fold_in(key, i),
                     steps, guidance)
    out.append(np.asarray(jax.device_get(result["images"]))[:hi - lo])
  return np.concatenate(out)


def _question_rows(run: Run, images, questions):
  """Left-padded prompt ids / mask / image mask [n, S] and SigLIP images [n, 1, s, s, 3]."""
  system_prompt = run.config.data.get("system_prompt", "")
  prompts = [packing.und_prompt_ids(run.tok, q, run.cfg.und_encoder.num_patches,
                                    system_prompt) for q in questions]
  seq = max(len(ids) for ids, _ in prompts)
  ids = np.full((len(prompts), seq), run.tok.pad_id, np.int32)
  image_mask = np.zeros((len(prompts), seq), bool)
  for r, (row, flags) in enumerate(prompts):
    ids[r, seq - len(row):], image_mask[r, seq - len(row):] = row, flags
  valid = np.arange(seq)[None] >= (seq - np.array([len(p[0]) for p in prompts]))[:, None]
  size = run.cfg.und_encoder.image_size
  pixels = np.stack([preprocess.und_image(preprocess.load_image(im), size) for im in images])
  return ids, valid, image_mask, pixels[:, None]


def answer_questions(run: Run, images: Sequence[np.ndarray], questions: Sequence[str], *,
                     max_new_tokens: int = 8, batch_size: int = 64) -> list[str]:
  """Greedy answers (special tokens removed, stripped) to questions about images."""
  ids, valid, image_mask, pixels = _question_rows(run, images, questions)
  decoder = text_sampling.make_decoder(run.model, max_new_tokens=max_new_tokens)
  answers = []
  for lo, hi in _batches(len(questions), batch_size):
    size = min(batch_size, len(questions))
    arrays = [jnp.asarray(_pad_rows(x[lo:hi], size)) for x in (ids, valid, pixels, image_mask)]
    tokens, lengths = decoder(run.params, arrays[0], arrays[1], jax.random.key(0),
                              run.tok.eos_id, run.tok.pad_id, 0.0, 1.0, arrays[2], arrays[3])
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    answers += [run.tok.decode(tokens[r, :lengths[r]].tolist()).strip()
                for r in range(hi - lo)]
  return answers
