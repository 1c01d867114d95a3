"""SigLIP-L/16 understanding encoder, as the official JanusFlow model runs it.

The official tower (a trimmed timm `VisionTransformer`) has no class token and no pre-norm;
its output is the post-final-LayerNorm tokens of the last block, [batch, 576, 1024]. The MAP
pooling head (`attn_pool`) is built and stored in the checkpoint but never run
(`ignore_head=True`); we create its parameters so checkpoints round-trip, and run it only
when asked (`pool=True`). Images are NHWC, already normalised by the processor.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import attention
from jf_jax.models import layers
from jf_jax.models.config import SigLIPConfig

Dtype = Any
ACT = ("act_batch", "act_len", "act_embed")


class SigLIPMlp(nn.Module):
  """fc1 -> exact GELU -> fc2 (timm `Mlp`)."""
  hidden_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.dense(self.hidden_dim, ("vit_embed", "vit_mlp"), name="fc1", **kw)(x)
    h = nn.with_logical_constraint(layers.gelu_exact(h), ("act_batch", "act_len", "act_mlp"))
    return layers.dense(x.shape[-1], ("vit_mlp", "vit_embed"), name="fc2", **kw)(h)


class SigLIPAttention(nn.Module):
  """Bidirectional MHA with a fused qkv projection, kept as [embed, 3, heads, head_dim].

  The official fused weight [3*width, width] splits its outputs as (q|k|v, heads, head_dim),
  so the conversion is a transpose and a reshape.
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    head_dim = x.shape[-1] // self.num_heads
    qkv = layers.dense((3, self.num_heads, head_dim), ("vit_embed", None, "vit_heads",
                                                        "head_dim"), name="qkv", **kw)(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = attention.attend(q, k, v, mask=None)
    return layers.dense(x.shape[-1], ("vit_heads", "head_dim", "vit_embed"), axis=(-2, -1),
                        name="proj", **kw)(out)


class SigLIPBlock(nn.Module):
  """x += attn(norm1(x)); x += mlp(norm2(x)); written as a scan body."""
  cfg: SigLIPConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, _):
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layers.layer_norm(eps=cfg.layer_norm_eps, name=name,
                                          axis_name="vit_embed", **kw)
    x = x + SigLIPAttention(cfg.num_heads, name="attn", **kw)(norm("norm1")(x))
    x = x + SigLIPMlp(cfg.mlp_dim, name="mlp", **kw)(norm("norm2")(x))
    return nn.with_logical_constraint(x, ACT), None


class AttentionPoolLatent(nn.Module):
  """timm's MAP head (one learned latent query). Stored by the checkpoint, unused by it."""
  cfg: SigLIPConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[batch, tokens, width] -> [batch, width]."""
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width, heads = cfg.width, cfg.num_heads
    latent = self.param("latent", nn.with_logical_partitioning(
        nn.initializers.normal(width ** -0.5), (None, None, "vit_embed")),
                        (1, 1, width), self.param_dtype)
    latent = jnp.broadcast_to(jnp.asarray(latent, self.dtype), (x.shape[0], 1, width))
    q = layers.dense((heads, width // heads), ("vit_embed", "vit_heads", "head_dim"),
                     name="q", **kw)(latent)
    kv = layers.dense((2, heads, width // heads), ("vit_embed", None, "vit_heads",
                                                   "head_dim"), name="kv", **kw)(x)
    out = attention.attend(q, kv[:, :, 0], kv[:, :, 1], mask=None)
    out = layers.dense(width, ("vit_heads", "head_dim", "vit_embed"), axis=(-2, -1),
                       name="proj", **kw)(out)
    normed = layers.layer_norm(eps=cfg.layer_norm_eps, name="norm", axis_name="vit_embed",
                               **kw)(out)
    out = out + SigLIPMlp(cfg.mlp_dim, name="mlp", **kw)(normed)
    return out[:, 0]


class PatchEmbed(nn.Module):
  """`patch_embed.proj`: a stride-`patch` convolution, tokens flattened in raster order."""
  cfg: SigLIPConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    """[batch, H, W, 3] -> [batch, (H/patch)*(W/patch), width]."""
    patch, width = self.cfg.patch_size, self.cfg.width
    x = nn.Conv(width, (patch, patch), strides=(patch, patch), padding="VALID",
                kernel_init=nn.with_logical_partitioning(
                    layers.default_kernel_init,
                    ("conv_h", "conv_w", "conv_in", "vit_embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                       ("vit_embed",)),
                dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(images)
    return x.reshape(x.shape[0], -1, width)


class VisionTransformer(nn.Module):
  """`vision_tower`: patch embedding + position embedding + scanned blocks + final norm."""
  cfg: SigLIPConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, pool: bool = False):
    """Encodes images.

    Args:
      images: [batch, height, width, 3], normalised.
      pool: also run the (officially unused) MAP head.
    Returns:
      features [batch, num_patches, width]; with `pool`, (features, pooled [batch, width]).
    """
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if images.shape[1:3] != (cfg.image_size, cfg.image_size):
      raise ValueError(f"understanding images must be {cfg.image_size}x{cfg.image_size} "
                       f"(model.und_encoder.image_size), got shape {images.shape}")
    x = PatchEmbed(cfg, name="patch_embed", **kw)(images.astype(self.dtype))
    pos = self.param("pos_embed", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "und_tokens", "vit_embed")),
                     (1, cfg.num_patches, cfg.width), self.param_dtype)
    x = nn.with_logical_constraint(x + jnp.asarray(pos, self.dtype), ACT)
    block = layers.maybe_remat(SigLIPBlock, cfg.remat_policy)
    x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=cfg.depth, metadata_params={nn.PARTITION_NAME: "layers"},
                   )(cfg, name="blocks", **kw)(x, None)
    x = layers.layer_norm(eps=cfg.layer_norm_eps, name="norm", axis_name="vit_embed", **kw)(x)
    if cfg.attn_pool and (pool or self.is_initializing()):
      pooled = AttentionPoolLatent(cfg, name="attn_pool", **kw)(x)
      if pool:
        return x, pooled
    return x


class UnderstandingEncoder(nn.Module):
  """`vision_und_enc_model` (the official `CLIPVisionTower` wrapper around the ViT)."""
  cfg: SigLIPConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, pool: bool = False):
    """[batch, H, W, 3] -> [batch, num_patches, width] (with `pool`, also [batch, width])."""
    return VisionTransformer(self.cfg, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="vision_tower")(images, pool=pool)
