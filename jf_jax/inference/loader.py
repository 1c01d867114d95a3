"""A checkpoint ready for inference: config, model, params, tokenizer and image decoder.

  loaded = loader.load("/ckpt/jf_1p3b", vae="/ckpt/sdxl-vae")   # params dir (convert.py)
  loaded = loader.load("/tmp/shapes")                            # a train.py --workdir

A checkpoint is either a params directory written by `python -m jf_jax.convert` (params/ +
model.json) or a training workdir (checkpoints/: the latest step's params and the run's
saved config). The tokenizer is the checkpoint's `tokenizer.json` (or `tokenizer=DIR`),
else the one the run's `config.data.tokenizer` names. The image decoder is the SDXL-VAE
from `vae` (diffusers layout) or the checkpoint's vae/; a pixel-space model
(`config.vae.kind='identity'`, `config.data.gen_space='pixel'` or `vae='identity'`) needs
none. `python sample.py`, the shapes world's evaluation, `jf_jax.bench` and `jf_jax.serve` all
load through here (and then build an `engine.Engine`).
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax.checkpoint import vae_map
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import vae as vae_lib
from jf_jax.sampling import common
from jf_jax.sampling import image as image_sampling

@dataclasses.dataclass
class Loaded:
  """Everything the samplers need from one checkpoint (params on one device)."""
  config: ml_collections.ConfigDict  # the run's config (only `model` for a params dir)
  cfg: model_config.JanusFlowConfig
  model: janusflow.JanusFlow
  params: Any  # floating leaves in the compute dtype
  tok: tok_lib.Tokenizer
  step: int | None  # training step of a workdir checkpoint; None for a params dir
  decode_fn: image_sampling.DecodeFn | None = None  # None: not loaded (understanding only)
  decode_params: Any = None
  ema: bool = False  # params are a training run's moving average (`uses_ema`)

  @property
  def system_prompt(self) -> str:
    """The understanding system prompt the run trained with (official one by default)."""
    return (self.config.get("data") or {}).get("system_prompt", templates.SYSTEM_PROMPT)


def load_config(checkpoint: str) -> tuple[ml_collections.ConfigDict, int | None]:
  """(config, step): a workdir's saved config and latest step, or a params dir's
  model.json as `{"model": ...}` and None."""
  if params_io.checkpoint_kind(checkpoint) == params_io.PARAMS:
    path = os.path.join(checkpoint, "model.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing; give the config explicitly (--config)")
    with open(path) as f:
      return ml_collections.ConfigDict({"model": json.load(f)}), None
  config, step = ckpt.restore_config(checkpoint)
  return ml_collections.ConfigDict(config), step


def uses_ema(config: ml_collections.ConfigDict) -> bool:
  """Whether a run kept a moving average of its params (then inference samples with it,
  as diffusion models are usually evaluated)."""
  return float(((config.get("train") or {}).get("ema_decay")) or 0.0) > 0


def load_params(checkpoint: str, cfg: model_config.JanusFlowConfig,
                step: int | None = None, ema: bool = False) -> Any:
  """Params on the default device, floating leaves in the compute dtype `cfg.dtype`;
  `ema`: a training workdir's moving average of the params."""
  abstract = params_io.abstract_params(cfg)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = params_io.restore_any(checkpoint, abstract,
                                 jax.tree.map(lambda _: sharding, abstract), step, ema=ema)
  return common.cast_floating(params, cfg.dtype)


def load_tokenizer(checkpoint: str, config: ml_collections.ConfigDict,
                   override: str | None = None) -> tok_lib.Tokenizer:
  """`override`'s or the checkpoint's tokenizer.json, else `config.data.tokenizer`'s."""
  path = override or checkpoint
  if os.path.exists(os.path.join(path, "tokenizer.json")) or path.endswith(".json"):
    return tok_lib.from_checkpoint_dir(path)
  if (config.get("data") or {}).get("tokenizer"):
    return tok_lib.make_tokenizer(config)
  raise FileNotFoundError(
      f"no tokenizer.json in {path}; pass --tokenizer DIR (e.g. the official "
      "deepseek-ai/JanusFlow-1.3B download) or copy its tokenizer.json there")


def load_image_decoder(config: ml_collections.ConfigDict, cfg: model_config.JanusFlowConfig,
                       checkpoint: str, vae: str | None = None
                       ) -> tuple[image_sampling.DecodeFn, Any]:
  """(decode_fn(params, latents) -> images in [-1, 1], its params) for the sampler.

  `vae`: a diffusers-layout SDXL-VAE directory (or file), 'identity' for a pixel-space
  model, or None: pixel space if the run trained there, else the run's `config.vae.path`,
  else the checkpoint's vae/ directory.
  """
  vae_cfg = vae_lib.config_from_dict(config.vae) if config.get("vae") else None
  pixel_space = (config.get("data") or {}).get("gen_space") == "pixel"
  if vae_cfg is None and (vae == "identity" or (vae is None and pixel_space)):
    return image_sampling.pixel_space_decode, None
  if vae_cfg is not None and vae_cfg.kind == "identity":
    params = {}
  else:
    vae_cfg = vae_cfg or vae_lib.VAEConfig()
    # `vae`, else the run's own config.vae.path (a latent-space run), else DIR/vae.
    path = vae or (config.get("vae") or {}).get("path") or os.path.join(checkpoint, "vae")
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"no VAE at {path}: this model generates SDXL-VAE latents; pass --vae DIR "
          "(stabilityai/sdxl-vae, diffusers layout) or put it in the checkpoint's vae/ "
          "(--vae=identity only for pixel-space models)")
    params = common.cast_floating(jax.device_put(vae_map.load_vae(path, vae_cfg)), cfg.dtype)
  return vae_lib.make_decode_fn(vae_lib.make_vae(vae_cfg, dtype=cfg.dtype)), params


def load(checkpoint: str, *, config: ml_collections.ConfigDict | None = None,
         tokenizer: str | None = None, vae: str | None = None, image_decoder: bool = True,
         dtype: str | None = None, ema: bool | None = None) -> Loaded:
  """Loads a params dir or training workdir for inference (see the module docstring).

  Args:
    checkpoint: the directory.
    config: the run's config; default the one the checkpoint stores (with a config given,
      a workdir's latest step is read and `Loaded.step` is None).
    tokenizer: a directory (or file) holding tokenizer.json, instead of the checkpoint's.
    vae: see `load_image_decoder`.
    image_decoder: False skips the image decoder (understanding only; no VAE needed).
    dtype: compute dtype ('float32', 'bfloat16'), instead of `config.model.dtype`.
    ema: read a workdir's moving average of the params (None: when the run kept one,
      `config.train.ema_decay` > 0).
  """
  checkpoint = os.path.abspath(checkpoint)
  config, step = load_config(checkpoint) if config is None else (config, None)
  if dtype is not None:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.model.dtype = dtype
  cfg = model_config.from_config_dict(config.model)
  tok = load_tokenizer(checkpoint, config, tokenizer)
  decode_fn, decode_params = (load_image_decoder(config, cfg, checkpoint, vae)
                              if image_decoder else (None, None))
  ema = (uses_ema(config) and params_io.checkpoint_kind(checkpoint) == params_io.WORKDIR
         if ema is None else ema)
  params = load_params(checkpoint, cfg, step, ema)
  return Loaded(config, cfg, janusflow.JanusFlow(cfg), params, tok, step, decode_fn,
                decode_params, ema)


def at_step(loaded: Loaded, checkpoint: str, step: int) -> Loaded:
  """`loaded` with the params of training step `step` of the workdir `checkpoint` (config,
  tokenizer and image decoder kept: they do not change along a run)."""
  return dataclasses.replace(loaded, step=step,
                             params=load_params(checkpoint, loaded.cfg, step, loaded.ema))
