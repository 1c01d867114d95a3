"""Generation encoder (official `ShallowUViTEncoder`): noisy latents + time -> features.

z_t [batch, h, w, 4] --2x2 patchify conv--> [batch, h/2, w/2, C] (+ an optional learned
position embedding [h/2, w/2, C], not in the release) --ConvNeXt x N (FiLM on
t_emb)--> features. Also returns t_emb [batch, llm_embed], which becomes an LLM input token
and the FiLM condition of every ConvNeXt block. The features double as the decoder's skip.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import convnext
from jf_jax.models import layers
from jf_jax.models import timestep
from jf_jax.models.config import GenEncoderConfig

Dtype = Any


class ShallowUViTEncoder(nn.Module):
  """`vision_gen_enc_model`."""
  cfg: GenEncoderConfig
  cond_dim: int  # LLM width: t_emb is fed to the LLM as a token
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, timesteps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes latents.

    Args:
      z: [batch, h, w, in_channels] noisy latents.
      timesteps: [batch] model time (1000 * t).
    Returns:
      (features [batch, h/p, w/p, channels], t_emb [batch, cond_dim]).
    """
    cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    t_feat = timestep.timestep_features(timesteps, cfg.channels).astype(self.dtype)
    t_emb = timestep.TimestepEmbedding(self.cond_dim, name="time_embed", **kw)(t_feat)
    p = cfg.patch_size
    x = nn.Conv(cfg.channels, (p, p), strides=(p, p), padding="VALID",
                kernel_init=nn.with_logical_partitioning(
                    layers.default_kernel_init,
                    ("conv_h", "conv_w", "conv_in", "gen_embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                       ("gen_embed",)),
                name="in_conv", **kw)(z.astype(self.dtype))
    x = convnext.UVitBlock(cfg.num_blocks, cfg.norm_eps, cfg.depthwise, name="mid_block",
                          **kw)(x, t_emb)
    return x, t_emb
