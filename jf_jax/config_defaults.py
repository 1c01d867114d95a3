"""Default ConfigDict pieces shared by the files in `configs/`.

Config files stay short: they start from `base_config()` and override what differs. Model
sizes live in `model_1p3b()` / `model_tiny()` so both the released size and the CPU-sized
model are spelled out once.
"""

import importlib.util
import os

import ml_collections


def sibling_config(config_file: str, name: str) -> ml_collections.ConfigDict:
  """`get_config()` of `configs/<name>.py` next to `config_file` (a config built on
  another; configs/ is a folder of files, not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"jf_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def model_1p3b() -> ml_collections.ConfigDict:
  """The released JanusFlow-1.3B (official config.json, see docs/architecture.md)."""
  return ml_collections.ConfigDict(dict(
      llm=dict(vocab_size=102400, embed_dim=2048, mlp_dim=5632, num_layers=24, num_heads=16,
               num_kv_heads=16, head_dim=128, rms_norm_eps=1e-6, rope_theta=10000.0,
               remat_policy="full", attention_impl="xla"),  # "cudnn": fused GPU kernel
      und_encoder=dict(image_size=384, patch_size=16, width=1024, depth=24, num_heads=16,
                       mlp_dim=4096, layer_norm_eps=1e-6, attn_pool=True,
                       remat_policy="full"),
      gen_encoder=dict(in_channels=4, patch_size=2, channels=768, num_blocks=2, norm_eps=1e-6,
                       depthwise="grouped"),
      gen_decoder=dict(out_channels=4, patch_size=2, num_blocks=2, norm_eps=1e-6,
                       prediction="velocity", min_one_minus_t=0.05, depthwise="grouped"),
      repa=dict(layer=6, hidden_dim=2048, num_layers=3),
      latent_size=48,  # 384 px through the 8x SDXL-VAE
      dtype="bfloat16",
      param_dtype="float32",
  ))


def model_tiny() -> ml_collections.ConfigDict:
  """A 451,120-parameter model with every component of the real one (CPU, tests).

  Grouped KV heads (4 query heads, 2 KV heads) keep that code path exercised. Latents are
  8x8x4: 2x2 patches give 16 generation tokens, as many as SigLIP's 8-pixel patches of a
  32x32 image (REPA aligns the two grids position by position).
  """
  return ml_collections.ConfigDict(dict(
      llm=dict(vocab_size=512, embed_dim=64, mlp_dim=160, num_layers=4, num_heads=4,
               num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0,
               remat_policy="none", attention_impl="xla"),
      und_encoder=dict(image_size=32, patch_size=8, width=48, depth=2, num_heads=4,
                       mlp_dim=96, layer_norm_eps=1e-6, attn_pool=True, remat_policy="none"),
      gen_encoder=dict(in_channels=4, patch_size=2, channels=32, num_blocks=2, norm_eps=1e-6,
                       depthwise="grouped"),
      gen_decoder=dict(out_channels=4, patch_size=2, num_blocks=2, norm_eps=1e-6,
                       prediction="velocity", min_one_minus_t=0.05, depthwise="grouped"),
      repa=dict(layer=2, hidden_dim=64, num_layers=3),
      latent_size=8,
      dtype="float32",
      param_dtype="float32",
  ))


def use_pixel_space(model: ml_collections.ConfigDict, image_size: int,
                    patch_size: int) -> None:
  """Makes `config.model` generate RGB pixels: both towers see image_size x image_size
  images in patch_size patches (one generation token per SigLIP patch, as REPA's
  position-by-position alignment needs), the "latents" are the images themselves."""
  model.und_encoder.update(dict(image_size=image_size, patch_size=patch_size))
  model.gen_encoder.update(dict(in_channels=3, patch_size=patch_size))
  model.gen_decoder.update(dict(out_channels=3, patch_size=patch_size))
  model.latent_size = image_size


def tokens_tiny() -> ml_collections.ConfigDict:
  """Special-token ids of the tiny synthetic vocabulary (ids below `num_special`)."""
  return ml_collections.ConfigDict(dict(
      pad_id=0, bos_id=1, eos_id=2, boi_id=3, eoi_id=4, image_id=5, gen_tag_id=6,
      num_special=8))


def tokens_deepseek() -> ml_collections.ConfigDict:
  """Special ids of the Janus-family DeepSeek tokenizer, as asserted defaults.

  The tokenizer reads the real ids from `tokenizer.json` and `data/tokenizer.py` checks
  them against these; -1 = not checked (the generation tag is added at load time if the
  file lacks it, and is always dropped from prompts anyway).
  """
  return ml_collections.ConfigDict(dict(
      pad_id=100015, bos_id=100000, eos_id=100001, boi_id=100016, eoi_id=100593,
      image_id=100581, gen_tag_id=-1, num_special=0))


def data_defaults() -> ml_collections.ConfigDict:
  """`config.data`: every input-pipeline key (docs/data.md), source "synthetic"."""
  return ml_collections.ConfigDict(dict(
      source="synthetic",     # synthetic | files | records | a project package (plugins.py)
      tokenizer="",           # a directory holding tokenizer.json, or a project package
                              # (plugins.py); synthetic data uses config.tokens' ids
      system_prompt="",       # understanding SYS; the official one is templates.SYSTEM_PROMPT
      gen_space="pixel",      # pixel | sdxl_vae (+ config.vae): models/latent_space.py
      image_size=32,          # stored image size; other sizes are bad examples ...
      resize_images=False,    # ... unless True (user data of mixed sizes)
      shuffle=True,           # seeded by config.seed, a new order every epoch
      workers=0,              # grain worker processes building batches (0 = in-process)
      prefetch=2,             # batches each worker keeps ready
      # source = "files": user data (jf_jax/data/user_data.py).
      und_files=(),           # LLaVA-style JSON files
      gen_files=(),           # folders of image + .txt, or .jsonl of {"image", "caption"}
      text_files=(),          # plain text files
      edit_files=(),          # .jsonl of {"source", "instruction", "target"} (image edits)
      text_unit="line",       # line | paragraph | file
      image_root="",          # base for relative image paths ('' = next to the file)
      # source = "records": shards of `python -m jf_jax.prepare` (jf_jax/data/record_source.py).
      gen_records=(),         # glob patterns, local or gs://
      und_records=(),
      text_records=(),
      edit_records=(),        # `prepare edit`: {source, instruction, target} records
  ))


def vae_defaults() -> ml_collections.ConfigDict:
  """`config.vae` of an SDXL-VAE latent-space run (`data.gen_space = "sdxl_vae"`).

  The sizes are those of `stabilityai/sdxl-vae` (`models/vae.py` `VAEConfig`; any of its
  fields may be set here; the layout keys below are listed so that `--config.vae.*` flags
  can change them); `path` is its diffusers-layout directory (config.json +
  diffusion_pytorch_model.safetensors), read when training starts and by sample.py.
  """
  return ml_collections.ConfigDict(dict(
      path="",
      latent_mode="sample",    # training latent: posterior "sample" or "mean"
      scaling_factor=0.13025,  # data latent = scaling_factor * VAE latent
      block_out_channels=(128, 256, 512, 512),  # the SDXL-VAE's layout
      layers_per_block=2,
      norm_num_groups=32,
  ))


# The LLM's attention and MLP projections (not the output head: the vocabulary is fixed).
LORA_TARGETS = r"language_model/model/layers/(self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj)"
# Trained in full in every stage of the release: the aligners, the generation encoder and
# decoder, the image-start embedding, the REPA projector (training only).
LORA_TRAIN_IN_FULL = (
    "vision_und_enc_aligner/.*", "beg_of_und_embed", "vision_gen_enc_model/.*",
    "vision_gen_enc_aligner/.*", "vision_gen_dec_model/.*",
    "vision_gen_dec_aligner_norm/.*", "vision_gen_dec_aligner/.*", "repa_projector/.*")


def lora_defaults() -> ml_collections.ConfigDict:
  """`config.lora`: LoRA / QLoRA fine-tuning through Qwix (`jf_jax/lora/`); rank 0 = off."""
  return ml_collections.ConfigDict(dict(
      rank=0,  # > 0: train rank-`rank` adapters instead of the base weights
      alpha=32.0,  # adapter outputs are scaled by alpha / rank
      targets=LORA_TARGETS,  # regex over module paths that get adapters
      base_quant="",  # '' float base; 'int8' or 'nf4': quantized base (QLoRA)
      base_dtype="",  # '' the params' dtype; e.g. 'bfloat16' halves a float32 base
      # Param-path regexes (as config.optim.freeze) trained in full beside the adapters.
      train_in_full=LORA_TRAIN_IN_FULL,
  ))


def base_config() -> ml_collections.ConfigDict:
  """Everything but the model sizes, with defaults; config files fill in `model`.

  The default model is the tiny one in pixel space (32 px RGB latents, 8 px patches on
  both towers: 16 generation tokens = 16 SigLIP patches), matching `data.gen_space`.
  """
  config = ml_collections.ConfigDict()
  config.model = model_tiny()
  use_pixel_space(config.model, image_size=32, patch_size=8)
  config.seed = 0
  config.stage = 2  # 1 adaptation, 2 unified pre-training, 3 SFT (the paper's stages)
  config.tokens = tokens_tiny()
  # Rows per global batch for each task = the stage's mixture (und : text : gen).
  config.batch = ml_collections.ConfigDict(dict(
      und_rows=4, text_rows=2, gen_rows=10, und_seq_len=32, text_seq_len=32,
      gen_prompt_len=16,
      # Image edits (source image + instruction -> edited image; docs/editing.md): rows per
      # batch (0 = off) and the prompt length that holds the source's image tokens.
      edit_rows=0, edit_prompt_len=48,
      # From training step `step` on (0: never) batches hold these rows instead: a mixture
      # that changes within a stage, as the paper's stage 2 (30:50:20 und:gen:text for
      # its first 10,000 steps, then 14:80:6). The step recompiles once at the switch.
      switch=dict(step=0, und_rows=0, text_rows=0, gen_rows=0, edit_rows=0)))
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  config.logical_axis_rules = ()  # (name, mesh axes) overrides of parallel/rules.py
  config.loss = ml_collections.ConfigDict(dict(
      ar_weight=1.0, flow_weight=1.0, repa_weight=1.0,
      t_distribution="logit_normal", t_loc=0.0, t_scale=1.0,  # SD3's default
      cfg_drop_prob=0.1,  # paper: drop 10% of prompts
      # Edit rows' two-condition dropout (InstructPix2Pix: 5% each): the share of rows
      # without the instruction, without the source image, and without both.
      edit_drop_text=0.05, edit_drop_image=0.05, edit_drop_both=0.05))
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, warmup_steps=2000, schedule="constant",
      total_steps=-1,  # the cosine schedule's length; -1 = config.train.num_steps
      end_learning_rate=0.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
      grad_clip_norm=1.0, freeze=(), mu_dtype=""))
  config.train = ml_collections.ConfigDict(dict(
      num_steps=390_000, microbatches=1, ema_decay=0.0, log_every=50,
      checkpoint_every=1000, keep_checkpoints=3, max_nonfinite_in_row=10,
      # A task whose rows are all skipped in the first skip_window steps, or more than
      # max_skip_rate of them in a later window, stops the run (train/skip_guard.py).
      skip_window=20, max_skip_rate=0.5,
      init_params_from="",  # converted official weights or an earlier stage's checkpoint
      # train.py's WORKDIR/lock.json (jf_jax/train/workdir_lock.py): renewed every
      # heartbeat; a lock not renewed for stale_after_s is a crashed run's.
      lock_heartbeat_s=60, lock_stale_after_s=600,
  ))
  config.data = data_defaults()
  config.lora = lora_defaults()
  # Plug-ins train.py loads by name (data/plugins.py; "" = none): `init` provides
  # `initialise(setup, config) -> state`, a fresh run's first state (e.g.
  # "jf_jax.shapes.encoder_pretrain"); `after_training` provides `run(config, workdir, metrics,
  # start_time=..., extra=...)`, called on process 0 when training ends (e.g.
  # "jf_jax.shapes.main_job").
  config.init = ""
  config.after_training = ""
  return config
