"""The fine-tuning recipe at reduced size: convert a release, train on user files in latent
space from the converted weights.

Fixtures (`release_fixtures.py`): a reduced release (random bf16 weights, official layout,
two shards, a tokenizer.json with the DeepSeek special tokens), a random SDXL-layout VAE
saved by diffusers, and a folder of mixed-size PNG/JPEG images with captions (one corrupt,
one with an empty caption), a multi-turn LLaVA JSON and a text file. The recipe config
(`configs/janusflow_1p3b_finetune.py`) runs with only sizes overridden.
"""

import importlib.util
import os

import jax
import numpy as np
import pytest

from jf_jax import convert
from jf_jax.checkpoint import params_io
from jf_jax.models import config as model_config
from jf_jax.train import loop
import release_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def finetune_config(release: str, converted: str, vae_dir: str, data: dict):
  spec = importlib.util.spec_from_file_location(
      "finetune_config", os.path.join(REPO, "configs", "janusflow_1p3b_finetune.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  # Size overrides only (what a user shrinking the recipe would pass on the command line).
  config.model = fx.reduced_model()
  config.tokens = fx.tokens_of(release)
  config.batch.update(dict(und_rows=2, text_rows=2, gen_rows=4, und_seq_len=96,
                           text_seq_len=64, gen_prompt_len=32))
  config.mesh.update(dict(data=2, fsdp=1, tensor=1))  # batch-sharded over 2 devices
  config.optim.update(dict(warmup_steps=2, total_steps=6, learning_rate=1e-3))
  config.train.update(dict(num_steps=6, log_every=1, checkpoint_every=3,
                           init_params_from=converted))
  config.data.update(dict(tokenizer=release, gen_files=(data["images"],),
                          und_files=(data["llava"],), text_files=(data["text"],)))
  config.vae.update(dict(path=vae_dir, **fx.SMALL_SDXL))
  return config


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
  root = tmp_path_factory.mktemp("finetune")
  release = fx.write_release(str(root / "release"))
  vae_dir = str(root / "sdxl-vae")
  fx.write_diffusers_vae(vae_dir)
  data = fx.write_user_data(str(root / "data"))
  converted = str(root / "converted")
  config = finetune_config(release, converted, vae_dir, data)
  convert.official_to_ours(release, converted, config)
  return root, config


def test_converted_release_is_stored_in_bf16_and_restores(recipe):
  _, config = recipe
  cfg = model_config.from_config_dict(config.model)
  params = params_io.load_params(config.train.init_params_from,
                                 params_io.abstract_params(cfg))
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}


def test_trains_from_converted_weights_on_files_in_latent_space(recipe):
  root, config = recipe
  last = loop.train(config, str(root / "run"), devices=jax.devices()[:2])
  assert last["final_step"] == 6
  for key in ("loss", "ar_loss", "rf_loss", "und_loss", "text_loss"):
    assert np.isfinite(last[key]) and last[key] > 0, (key, last[key])
  assert -1 <= last["repa_loss"] <= 1  # negative cosine similarity to SigLIP's features
  # 22 generation items, 24 slots drawn: the corrupt image and the empty caption were met
  # and skipped (counted), the run went on.
  assert last["data/skipped/gen/undecodable_image"] >= 1, last
  assert last["data/skipped/gen/empty_text"] >= 1, last
