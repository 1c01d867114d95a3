"""REPA representation alignment (paper Eq. 8).

The LLM hidden states at the image positions (after the 6th block), passed through the
projector h_phi (in `jf_jax.models`), are pulled towards the frozen understanding
encoder's features of the same image by maximising per-token cosine similarity. The loss is
the negative similarity, so its minimum is -1 per token.
"""

import jax
import jax.numpy as jnp

_EPS = 1e-8


def _normalize(x: jax.Array, eps: float) -> jax.Array:
  """x / max(||x||, eps) along the last axis; finite gradient at x = 0."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def repa_loss(projected: jax.Array, target_features: jax.Array, weights: jax.Array,
              eps: float = _EPS) -> tuple[jax.Array, jax.Array]:
  """Summed negative cosine similarity between projected states and encoder features.

  Args:
    projected: [batch, tokens, dim] h_phi(q_theta(z_t)).
    target_features: [batch, tokens, dim] f_enc(image); gradients are stopped here.
    weights: [batch] bool or float; 0 drops a row (samples without a target image).
    eps: norm floor (torch `cosine_similarity` style).

  Returns:
    (sum, weight) float32 scalars; `sum` = -sum of weighted per-token cosines and
    `weight` = sum(weights) * tokens (the number of weighted tokens).
  """
  target = jax.lax.stop_gradient(target_features).astype(jnp.float32)
  cos = jnp.sum(_normalize(projected.astype(jnp.float32), eps) * _normalize(target, eps),
                axis=-1)
  weights = weights.astype(jnp.float32)
  per_row = jnp.sum(cos, axis=-1)
  per_row = jnp.where(weights > 0, per_row * weights, 0.0)
  return -jnp.sum(per_row), jnp.sum(weights) * projected.shape[1]
