"""Masked next-token cross-entropy (L_AR, paper Eq. 6).

Understanding samples supervise only response tokens (the processor's `mask_prompt`);
text-only samples supervise every real token. Which positions count is entirely the
caller's `weights`; this function never looks at token ids to decide.
"""

import jax
import jax.numpy as jnp
import optax


def next_token_loss(logits: jax.Array, targets: jax.Array,
                    weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed cross-entropy over supervised positions.

  Args:
    logits: [batch, seq, vocab] any float dtype; upcast to float32 here.
    targets: [batch, seq] int, already shifted: `targets[:, i]` is the token to predict at
      position `i`. Unsupervised positions may hold anything (e.g. the ignore id -100).
    weights: [batch, seq] bool or float; 0 marks an unsupervised position.

  Returns:
    (sum, weight): float32 scalars; `sum` = sum over positions of weight * CE and `weight`
    = sum of weights (the number of supervised tokens for 0/1 weights).
  """
  weights = weights.astype(jnp.float32)
  supervised = weights > 0
  # Out-of-range ids (-100) would gather NaN; replace them before the gather and zero the
  # result with `where`, so NaN/inf never reaches the sum (0 * NaN is NaN).
  safe_targets = jnp.where(supervised, targets, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                       safe_targets)
  ce = jnp.where(supervised, ce * weights, 0.0)
  return jnp.sum(ce), jnp.sum(weights)
