"""A checkpoint ready for inference: config, model, params, tokenizer and image decoder.

  loaded = loader.load("/ckpt/jf_1p3b", vae="/ckpt/sdxl-vae")   # params dir (convert.py)
  loaded = loader.load("/tmp/shapes")                            # a train.py --workdir

A checkpoint is either a params directory written by `python -m jf_jax.convert` (params/ +
model.json) or a training workdir (checkpoints/: the latest step's params and the run's
saved config). The tokenizer is the checkpoint's `tokenizer.json` (or `tokenizer=DIR`),
else the one the run's `config.data.tokenizer` names. The image decoder is the run's
generation space's (`models/latent_space.py`, `config.data.gen_space`): nothing to read in
pixel space; the SDXL-VAE from `vae` (diffusers layout), the run's `config.vae.path` or the
checkpoint's vae/ otherwise. A params dir stores only the model, so it is in the release's
SDXL-VAE space unless `config` says otherwise. `python sample.py`, the shapes world's
evaluation, `jf_jax.bench` and `jf_jax.serve` all load through here (and then build an
`engine.Engine`).
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax import config_defaults
from jf_jax.checkpoint import vae_map
from jf_jax.data import storage
from jf_jax.data import templates
from jf_jax.data import tokenizer as tok_lib
from jf_jax.lora import base as lora_base
from jf_jax.lora import model as lora_model
from jf_jax.lora import quantize as quantize_lib
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import latent_space
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
  quantize: str | None = None  # weight-only quantization of the LLM ('int8'; None: off)

  @property
  def system_prompt(self) -> str:
    """The understanding system prompt the run trained with (official one by default)."""
    return (self.config.get("data") or {}).get("system_prompt", templates.SYSTEM_PROMPT)


def load_config(checkpoint: str, step: int | None = None
                ) -> tuple[ml_collections.ConfigDict, int | None]:
  """(config, step): a workdir's saved config and its `step` (default the latest), or a
  params dir's model.json as `{"model": ...}` plus its generation.json (without one: the
  release's SDXL-VAE space, `{"data": {"gen_space": "sdxl_vae"}, "vae": vae_defaults()}`)
  and None (`step` must be None then: a params directory holds one set of params)."""
  if params_io.checkpoint_kind(checkpoint) == params_io.PARAMS:
    if step is not None:
      raise ValueError(f"--step={step}: {checkpoint} is a params directory (one set of "
                       "params); --step selects a checkpoint of a training workdir")
    path = storage.join(checkpoint, "model.json")
    if not storage.exists(path):
      raise FileNotFoundError(f"{path} is missing; give the config explicitly (--config)")
    config = {"model": json.loads(storage.read_text(path)),
              "data": {"gen_space": "sdxl_vae"},
              "vae": config_defaults.vae_defaults().to_dict()}
    generation = storage.join(checkpoint, params_io.GENERATION_FILE)
    if storage.exists(generation):
      config.update(json.loads(storage.read_text(generation)))
    return ml_collections.ConfigDict(config), None
  config, step = ckpt.restore_config(checkpoint, step)
  return ml_collections.ConfigDict(config), step


def uses_ema(config: ml_collections.ConfigDict) -> bool:
  """Whether a run kept a moving average of its params (then inference samples with it,
  as diffusion models are usually evaluated)."""
  return float(((config.get("train") or {}).get("ema_decay")) or 0.0) > 0


def load_params(checkpoint: str, cfg: model_config.JanusFlowConfig,
                step: int | None = None, ema: bool = False,
                config: ml_collections.ConfigDict | None = None,
                quantize: str | None = None) -> Any:
  """Params on the default device, floating leaves in the compute dtype `cfg.dtype`;
  `ema`: a training workdir's moving average of the params.

  A LoRA run's workdir (its `config.lora.rank` > 0) holds adapters only: they are merged
  into the base its config names (`jf_jax/lora/base.py`). `quantize` ('int8'): the LLM's
  kernels are quantized once, here, from the float params (`jf_jax/lora/quantize.py`;
  build the model with `model_for`).
  """
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  if (config is not None and lora_model.enabled(config)
      and params_io.checkpoint_kind(checkpoint) == params_io.WORKDIR):
    params = lora_base.load_merged(config, checkpoint, cfg, sharding, step, ema)
  else:
    abstract = params_io.abstract_params(cfg)
    params = params_io.restore_any(checkpoint, abstract,
                                   jax.tree.map(lambda _: sharding, abstract), step, ema=ema)
  if quantize:
    params = quantize_lib.quantize_for_inference(janusflow.JanusFlow(cfg), params, quantize,
                                                 cfg.dtype)[1]
  return common.cast_floating(params, cfg.dtype)


def model_for(cfg: model_config.JanusFlowConfig, quantize: str | None = None):
  """The module the samplers apply: JanusFlow, Qwix-wrapped when `quantize` is set."""
  model = janusflow.JanusFlow(cfg)
  return quantize_lib.quantized_model(model, quantize) if quantize else model


def load_tokenizer(checkpoint: str, config: ml_collections.ConfigDict,
                   override: str | None = None) -> tok_lib.Tokenizer:
  """`override`'s or the checkpoint's tokenizer.json, else `config.data.tokenizer`'s,
  else that of the params the run started from (`config.train.init_params_from`: a LoRA
  run's workdir holds adapters only, its base holds the tokenizer)."""
  path = override or checkpoint
  if os.path.exists(os.path.join(path, "tokenizer.json")) or path.endswith(".json"):
    return tok_lib.from_checkpoint_dir(path)
  if (config.get("data") or {}).get("tokenizer"):
    return tok_lib.make_tokenizer(config)
  base = (config.get("train") or {}).get("init_params_from")
  if not override and base and os.path.exists(os.path.join(base, "tokenizer.json")):
    return tok_lib.from_checkpoint_dir(base)
  raise FileNotFoundError(
      f"no tokenizer.json in {path}; pass --tokenizer DIR (e.g. the official "
      "deepseek-ai/JanusFlow-1.3B download) or copy its tokenizer.json there")


def load_image_decoder(config: ml_collections.ConfigDict, cfg: model_config.JanusFlowConfig,
                       checkpoint: str, vae: str | None = None
                       ) -> tuple[image_sampling.DecodeFn, Any]:
  """(decode_fn(params, latents) -> images in [-1, 1], its params) for the sampler: the
  run's `LatentSpace.decode`, with {} in pixel space, else the SDXL-VAE from `vae` (a
  diffusers-layout directory or file), the run's `config.vae.path` or DIR/vae."""
  space = latent_space.from_config(config, cfg)
  if not space.has_params:
    return space.decode, {}
  path = vae or config.vae.get("path") or os.path.join(checkpoint, "vae")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no VAE at {path}: this model generates SDXL-VAE latents; pass --vae DIR "
        "(stabilityai/sdxl-vae, diffusers layout) or put it in the checkpoint's vae/")
  params = vae_map.load_vae(path, space.module.cfg)
  return space.decode, common.cast_floating(jax.device_put(params), cfg.dtype)


def load(checkpoint: str, *, config: ml_collections.ConfigDict | None = None,
         tokenizer: str | None = None, vae: str | None = None, image_decoder: bool = True,
         dtype: str | None = None, ema: bool | None = None, step: int | None = None,
         quantize: str | None = None) -> Loaded:
  """Loads a params dir or training workdir for inference (see the module docstring).

  Args:
    checkpoint: the directory.
    config: the run's config; default the one the checkpoint stores (with a config given,
      a workdir's `step` (default latest) is read and `Loaded.step` is None).
    tokenizer: a directory (or file) holding tokenizer.json, instead of the checkpoint's.
    vae: see `load_image_decoder`.
    image_decoder: False skips the image decoder (understanding only; no VAE needed).
    dtype: compute dtype ('float32', 'bfloat16'), instead of `config.model.dtype`.
    ema: read a workdir's moving average of the params (None: when the run kept one,
      `config.train.ema_decay` > 0).
    step: the training step of a workdir to read (default its latest checkpoint).
    quantize: 'int8' for weight-only int8 LLM kernels (Qwix PTQ), None for float.
  """
  checkpoint = os.path.abspath(checkpoint)
  if config is None:
    config, step = load_config(checkpoint, step)
  elif step is not None and params_io.checkpoint_kind(checkpoint) == params_io.PARAMS:
    load_config(checkpoint, step)  # raises: a params directory has no steps
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
  params = load_params(checkpoint, cfg, step, ema, config, quantize)
  return Loaded(config, cfg, model_for(cfg, quantize), params, tok, step, decode_fn,
                decode_params, ema, quantize)


def at_step(loaded: Loaded, checkpoint: str, step: int) -> Loaded:
  """`loaded` with the params of training step `step` of the workdir `checkpoint` (config,
  tokenizer and image decoder kept: they do not change along a run)."""
  return dataclasses.replace(loaded, step=step,
                             params=load_params(checkpoint, loaded.cfg, step, loaded.ema,
                                                loaded.config, loaded.quantize))
