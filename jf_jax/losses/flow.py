"""Rectified flow (L_RF, paper Eq. 7): time sampling, path, target and loss.

Conventions (pinned by tests/test_losses.py): t = 0 is noise, t = 1 is data,
z_t = t * data + (1 - t) * noise, velocity target = data - noise, and the model's time
embedding is fed 1000 * t (`models/janusflow.TIME_SCALE`, as in the official demo).
Integrating dz/dt = v from t = 0 to 1 therefore goes from noise to data, the same direction
as the sampler.
"""

import jax
import jax.numpy as jnp

T_KINDS = ("logit_normal", "uniform")

def sample_t(rng: jax.Array, batch: int, kind: str = "logit_normal", loc: float = 0.0,
             scale: float = 1.0) -> jax.Array:
  """Samples training times.

  Args:
    rng: PRNG key.
    batch: number of samples.
    kind: 'logit_normal' (sigmoid of N(loc, scale^2), SD3 default loc=0, scale=1) or
      'uniform' (U[0, 1); `loc`/`scale` ignored).
    loc: location of the logit-normal.
    scale: scale of the logit-normal.

  Returns:
    [batch] float32 in [0, 1].
  """
  if kind == "logit_normal":
    return jax.nn.sigmoid(loc + scale * jax.random.normal(rng, (batch,), jnp.float32))
  if kind == "uniform":
    return jax.random.uniform(rng, (batch,), jnp.float32)
  raise ValueError(f"unknown t sampling kind {kind!r} (config.loss.t_distribution); expected "
                   f"one of {T_KINDS}")


def _expand(t: jax.Array, ndim: int) -> jax.Array:
  """[batch] -> [batch, 1, ..., 1] with `ndim` dims in total."""
  return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def interpolate(noise: jax.Array, data: jax.Array, t: jax.Array) -> jax.Array:
  """Point on the straight path: z_t = t * data + (1 - t) * noise.

  Args:
    noise: [batch, ...] z_0 ~ N(0, I).
    data: [batch, ...] clean (scaled VAE) latents, same shape as `noise`.
    t: [batch] times in [0, 1]; broadcast over the trailing dims.

  Returns:
    [batch, ...] z_t in the dtype of `data`.
  """
  t = _expand(t.astype(jnp.float32), data.ndim)
  z = t * data.astype(jnp.float32) + (1.0 - t) * noise.astype(jnp.float32)
  return z.astype(data.dtype)


def velocity_target(noise: jax.Array, data: jax.Array) -> jax.Array:
  """d z_t / dt = data - noise, [batch, ...] (independent of t for straight paths)."""
  return data - noise


def flow_loss(v_pred: jax.Array, v_target: jax.Array,
              weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed squared velocity error over the latent elements of weighted rows.

  Args:
    v_pred: [batch, ...] predicted velocity (e.g. [batch, h, w, c] latents).
    v_target: [batch, ...] target velocity, same shape.
    weights: [batch] bool or float; 0 drops a row (e.g. an understanding sample).

  Returns:
    (sum, weight) float32 scalars; `weight` = sum(weights) * elements per row, so
    sum / weight is the mean squared error per latent element.
  """
  weights = weights.astype(jnp.float32)
  err = jnp.square(v_pred.astype(jnp.float32) - v_target.astype(jnp.float32))
  per_row = jnp.sum(err.reshape(err.shape[0], -1), axis=-1)
  per_row = jnp.where(weights > 0, per_row * weights, 0.0)
  elements = v_pred.size // v_pred.shape[0]
  return jnp.sum(per_row), jnp.sum(weights) * elements
