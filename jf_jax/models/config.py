"""Typed, hashable model configs built from the ml_collections files in `configs/`.

Linen module attributes must be hashable, so modules take these frozen dataclasses rather
than a `ConfigDict`. `from_config_dict` is the single place that reads `config.model`.
"""

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

PREDICTIONS = ("velocity", "data")  # GenDecoderConfig.prediction
DEPTHWISE = ("taps", "grouped")  # Gen{En,De}coderConfig.depthwise (models/convnext.py)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def to_dtype(name: Any) -> Any:
  """Maps a dtype name from a config ('bfloat16') to a jnp dtype; passes dtypes through."""
  if not isinstance(name, str):
    return name
  if name not in _DTYPES:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
  return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """DeepSeek-LLM / Llama decoder (`language_model` of the official checkpoint)."""
  vocab_size: int = 102400
  embed_dim: int = 2048
  mlp_dim: int = 5632
  num_layers: int = 24
  num_heads: int = 16
  num_kv_heads: int = 16
  head_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  remat_policy: str = "none"
  # Attention kernel of uncached passes (training, prefill): "xla" (any backend) or
  # "cudnn" (NVIDIA GPUs, bf16/fp16: jax.nn.dot_product_attention's fused cuDNN kernel,
  # told the mask is causal instead of given a dense [seq, seq] mask). Cached decoding
  # steps always use "xla".
  attention_impl: str = "xla"


@dataclasses.dataclass(frozen=True)
class SigLIPConfig:
  """SigLIP ViT understanding encoder (`vision_und_enc_model.vision_tower`)."""
  image_size: int = 384
  patch_size: int = 16
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  layer_norm_eps: float = 1e-6
  # The official model builds (and stores) timm's MAP pooling head but never runs it. We keep
  # its parameters so the checkpoint round-trips exactly and the parameter count matches.
  attn_pool: bool = True
  remat_policy: str = "none"

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class GenEncoderConfig:
  """ShallowUViT encoder (`vision_gen_enc_model`): latents + time -> features + t_emb."""
  in_channels: int = 4
  patch_size: int = 2
  channels: int = 768
  num_blocks: int = 2
  norm_eps: float = 1e-6
  # How the ConvNeXt blocks' 7x7 depthwise convolution runs (the same math): "taps", a
  # fused sum of shifted inputs (fast on XLA:CPU, shards like elementwise ops), or
  # "grouped", XLA's grouped convolution (cuDNN on GPU).
  depthwise: str = "grouped"


@dataclasses.dataclass(frozen=True)
class GenDecoderConfig:
  """ShallowUViT decoder (`vision_gen_dec_model`): LLM features + skip -> velocity."""
  out_channels: int = 4
  patch_size: int = 2
  num_blocks: int = 2
  norm_eps: float = 1e-6
  # How the ConvNeXt blocks' 7x7 depthwise convolution runs (the same math): "taps", a
  # fused sum of shifted inputs (fast on XLA:CPU, shards like elementwise ops), or
  # "grouped", XLA's grouped convolution (cuDNN on GPU).
  depthwise: str = "grouped"
  # What the decoder's output means. "velocity" (the release): it is v. "data": it is the
  # clean latent x (JiT-style x-prediction), turned into v = (x - z_t) / (1 - t) with
  # 1 - t floored at `min_one_minus_t`; the loss, samplers and diagnostics see a velocity
  # either way. Data prediction spares the network copying the noise of z_t into its
  # output, which a narrow pixel-space model does badly (speckle).
  prediction: str = "velocity"
  min_one_minus_t: float = 0.05


@dataclasses.dataclass(frozen=True)
class RepaConfig:
  """REPA projector h_phi (training only; not in the released checkpoint)."""
  layer: int = 6  # HF `hidden_states[layer]`: the output of the first `layer` LLM blocks.
  hidden_dim: int = 2048
  num_layers: int = 3


@dataclasses.dataclass(frozen=True)
class JanusFlowConfig:
  """All components of the composite model plus compute/storage dtypes."""
  llm: LlamaConfig = LlamaConfig()
  und_encoder: SigLIPConfig = SigLIPConfig()
  gen_encoder: GenEncoderConfig = GenEncoderConfig()
  gen_decoder: GenDecoderConfig = GenDecoderConfig()
  repa: RepaConfig = RepaConfig()
  latent_size: int = 48  # spatial size of the generation latents (48 for 384px SDXL-VAE)
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32

  @property
  def num_gen_tokens(self) -> int:
    return (self.latent_size // self.gen_encoder.patch_size) ** 2

  @property
  def num_und_tokens(self) -> int:
    """Embeddings per understanding image: `beg_of_und_embed` + one per SigLIP patch."""
    return self.und_encoder.num_patches + 1


# Options removed on 2026-12-03 (docs/architecture.md). Checkpoints written before then
# store them switched off; those load, a model that had one switched on does not.
_REMOVED = {"SigLIPConfig": "llm_position_embedding", "GenEncoderConfig": "position_embedding"}


def _sub(cls, values: Mapping[str, Any]):
  removed = _REMOVED.get(cls.__name__)
  if removed in values:
    if values.pop(removed):
      raise ValueError(f"{cls.__name__}.{removed}=True: this option was removed "
                       "(docs/architecture.md); such a model cannot be loaded")
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown keys for {cls.__name__}: {unknown}; known: {sorted(known)}")
  return cls(**values)


def from_config_dict(model_cfg: Mapping[str, Any]) -> JanusFlowConfig:
  """Builds a `JanusFlowConfig` from `config.model` (a ConfigDict or plain dict)."""
  d = dict(model_cfg)
  parts = {
      "llm": LlamaConfig, "und_encoder": SigLIPConfig, "gen_encoder": GenEncoderConfig,
      "gen_decoder": GenDecoderConfig, "repa": RepaConfig,
  }
  kwargs = {}
  for name, cls in parts.items():
    if name in d:
      kwargs[name] = _sub(cls, dict(d.pop(name)))
  for name in ("dtype", "param_dtype"):
    if name in d:
      kwargs[name] = to_dtype(d.pop(name))
  if "latent_size" in d:
    kwargs["latent_size"] = int(d.pop("latent_size"))
  if d:
    raise ValueError(f"unknown keys in config.model: {sorted(d)}")
  cfg = JanusFlowConfig(**kwargs)
  validate(cfg)
  return cfg


def validate(cfg: JanusFlowConfig) -> None:
  """Fails early, naming the config key, on sizes that cannot work."""
  llm = cfg.llm
  if llm.attention_impl not in ("xla", "cudnn"):
    raise ValueError(f"model.llm.attention_impl={llm.attention_impl!r}; expected 'xla' or "
                     "'cudnn'")
  if llm.num_heads % llm.num_kv_heads:
    raise ValueError(f"model.llm.num_heads={llm.num_heads} must be a multiple of "
                     f"model.llm.num_kv_heads={llm.num_kv_heads}")
  if llm.head_dim % 2:
    raise ValueError(f"model.llm.head_dim={llm.head_dim} must be even for RoPE")
  und = cfg.und_encoder
  if und.image_size % und.patch_size:
    raise ValueError(f"model.und_encoder.image_size={und.image_size} is not divisible by "
                     f"model.und_encoder.patch_size={und.patch_size}")
  if und.width % und.num_heads:
    raise ValueError(f"model.und_encoder.width={und.width} is not divisible by "
                     f"model.und_encoder.num_heads={und.num_heads}")
  if cfg.latent_size % cfg.gen_encoder.patch_size:
    raise ValueError(f"model.latent_size={cfg.latent_size} is not divisible by "
                     f"model.gen_encoder.patch_size={cfg.gen_encoder.patch_size}")
  if cfg.gen_decoder.patch_size != cfg.gen_encoder.patch_size:
    raise ValueError("model.gen_decoder.patch_size must equal model.gen_encoder.patch_size")
  if cfg.gen_decoder.prediction not in PREDICTIONS:
    raise ValueError(f"model.gen_decoder.prediction={cfg.gen_decoder.prediction!r}; "
                     f"expected one of {PREDICTIONS}")
  for tower in ("gen_encoder", "gen_decoder"):
    if getattr(cfg, tower).depthwise not in DEPTHWISE:
      raise ValueError(f"model.{tower}.depthwise={getattr(cfg, tower).depthwise!r}; "
                       f"expected one of {DEPTHWISE}")
  if not 0 < cfg.gen_decoder.min_one_minus_t <= 1:
    raise ValueError(f"model.gen_decoder.min_one_minus_t={cfg.gen_decoder.min_one_minus_t} "
                     "must be in (0, 1]")
  if not 0 <= cfg.repa.layer <= llm.num_layers:
    raise ValueError(f"model.repa.layer={cfg.repa.layer} must be in [0, "
                     f"model.llm.num_layers={llm.num_layers}]")
