"""REPA projector h_phi: LLM hidden states -> understanding-encoder feature space.

New in training (absent from the released checkpoint). The paper gives no widths; following
the REPA paper we use an MLP with SiLU: embed -> hidden -> hidden -> und_width.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import layers

Dtype = Any


class RepaProjector(nn.Module):
  """[batch, tokens, embed] -> [batch, tokens, out_dim]."""
  hidden_dim: int
  out_dim: int
  num_layers: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers - 1):
      in_axis = "embed" if i == 0 else "repa_hidden_in"
      x = nn.silu(layers.dense(self.hidden_dim, (in_axis, "repa_hidden"), name=f"dense_{i}",
                               **kw)(x))
    last_in = "embed" if self.num_layers == 1 else "repa_hidden_in"
    return layers.dense(self.out_dim, (last_in, "vit_embed"),
                        name=f"dense_{self.num_layers - 1}", **kw)(x)
