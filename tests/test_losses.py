"""Loss functions against hand-computed numpy values, and flow conventions."""

import jax
import jax.numpy as jnp
import numpy as np

from jf_jax import losses


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_next_token_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5))
  weights = np.array([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
  targets = np.where(weights, targets, -100)  # ignore ids must not leak NaN
  total, weight = losses.next_token_loss(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32),
                                         jnp.asarray(targets), jnp.asarray(weights))
  logp = _np_log_softmax(jnp.asarray(logits, jnp.bfloat16).astype(np.float32).__array__())
  expected = sum(-logp[b, i, targets[b, i]] for b in range(2) for i in range(5)
                 if weights[b, i])
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert weight == 5.0
  assert total.dtype == jnp.float32


def test_next_token_loss_bf16_logits_float32_result():
  logits = jnp.zeros((1, 3, 4), jnp.bfloat16)
  total, weight = losses.next_token_loss(logits, jnp.array([[1, 2, 3]]),
                                         jnp.array([[1.0, 1.0, 0.0]]))
  assert total.dtype == jnp.float32
  np.testing.assert_allclose(total, 2 * np.log(4.0), rtol=1e-6)
  assert weight == 2.0


def test_next_token_loss_no_gradient_from_masked_positions():
  logits = jnp.ones((1, 2, 3))
  grad = jax.grad(lambda l: losses.next_token_loss(l, jnp.array([[0, -100]]),
                                                   jnp.array([[1, 0]]))[0])(logits)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[0, 1], 0.0)


def test_sample_t_logit_normal():
  t = losses.sample_t(jax.random.key(0), 20_000)
  assert t.shape == (20_000,) and t.dtype == jnp.float32
  assert np.all((t > 0) & (t < 1))
  assert abs(float(jnp.median(t)) - 0.5) < 0.02
  # sigmoid(N(0, 1)): P(t < sigmoid(1)) = Phi(1) ~ 0.841.
  assert abs(float(jnp.mean(t < jax.nn.sigmoid(1.0))) - 0.841) < 0.02
  shifted = losses.sample_t(jax.random.key(0), 20_000, loc=1.0)
  assert abs(float(jnp.median(shifted)) - float(jax.nn.sigmoid(1.0))) < 0.02


def test_sample_t_uniform_and_bad_kind():
  t = losses.sample_t(jax.random.key(1), 10_000, kind="uniform")
  assert np.all((t >= 0) & (t < 1))
  assert abs(float(jnp.mean(t)) - 0.5) < 0.02
  try:
    losses.sample_t(jax.random.key(1), 4, kind="beta")
  except ValueError as e:
    assert "beta" in str(e)
  else:
    raise AssertionError("expected ValueError")


def test_interpolate_endpoints_and_broadcast():
  k1, k2 = jax.random.split(jax.random.key(0))
  noise = jax.random.normal(k1, (3, 4, 4, 2))
  data = jax.random.normal(k2, (3, 4, 4, 2))
  np.testing.assert_array_equal(losses.interpolate(noise, data, jnp.zeros(3)), noise)
  np.testing.assert_array_equal(losses.interpolate(noise, data, jnp.ones(3)), data)
  t = jnp.array([0.0, 0.25, 1.0])
  z = losses.interpolate(noise, data, t)
  np.testing.assert_allclose(z[1], 0.25 * data[1] + 0.75 * noise[1], rtol=1e-6)
  np.testing.assert_array_equal(z[0], noise[0])


def test_euler_with_target_velocity_goes_noise_to_data():
  k1, k2 = jax.random.split(jax.random.key(3))
  noise = jax.random.normal(k1, (2, 8))
  data = jax.random.normal(k2, (2, 8))
  z, steps = noise, 30
  for i in range(steps):
    t = jnp.full((2,), i / steps)
    # The path's velocity at every point is the constant target.
    z = z + velocity_at(noise, data, z, t) / steps
  np.testing.assert_allclose(z, data, atol=1e-5)


def velocity_at(noise, data, z, t):
  del z, t
  return losses.velocity_target(noise, data)


def test_velocity_is_path_derivative():
  k1, k2 = jax.random.split(jax.random.key(4))
  noise = jax.random.normal(k1, (2, 5))
  data = jax.random.normal(k2, (2, 5))
  t = jnp.array([0.3, 0.7])
  dz = jax.jvp(lambda s: losses.interpolate(noise, data, s), (t,), (jnp.ones(2),))[1]
  np.testing.assert_allclose(dz, losses.velocity_target(noise, data), rtol=1e-6)


def test_time_for_model():
  np.testing.assert_allclose(losses.time_for_model(jnp.array([0.0, 0.5, 1.0])),
                             [0.0, 500.0, 1000.0])


def test_flow_loss_matches_numpy():
  rng = np.random.default_rng(1)
  v_pred = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  v_target = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  weights = np.array([1.0, 0.0, 1.0])
  v_pred[1] = np.nan  # dropped rows must not contribute even when non-finite
  total, weight = losses.flow_loss(jnp.asarray(v_pred), jnp.asarray(v_target),
                                   jnp.asarray(weights))
  expected = ((v_pred[[0, 2]] - v_target[[0, 2]]) ** 2).sum()
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert weight == 2 * 16
  np.testing.assert_allclose(total / weight, ((v_pred[[0, 2]] - v_target[[0, 2]]) ** 2).mean(),
                             rtol=1e-5)


def _np_cos(a, b):
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_repa_loss_matches_numpy():
  rng = np.random.default_rng(2)
  proj = rng.normal(size=(3, 4, 6)).astype(np.float32)
  target = rng.normal(size=(3, 4, 6)).astype(np.float32)
  weights = np.array([True, True, False])
  total, weight = losses.repa_loss(jnp.asarray(proj), jnp.asarray(target),
                                   jnp.asarray(weights))
  np.testing.assert_allclose(total, -_np_cos(proj[:2], target[:2]).sum(), rtol=1e-5)
  assert weight == 8
  same, _ = losses.repa_loss(jnp.asarray(target), jnp.asarray(3.0 * target), jnp.ones(3))
  np.testing.assert_allclose(same / 12, -1.0, rtol=1e-6)


def test_repa_loss_stops_target_gradient_and_is_eps_safe():
  proj = jnp.zeros((1, 2, 3)).at[0, 0].set(1.0)  # token 1 is all zeros
  target = jnp.ones((1, 2, 3))
  gp, gt = jax.grad(lambda p, t: losses.repa_loss(p, t, jnp.ones(1))[0], (0, 1))(proj, target)
  np.testing.assert_array_equal(gt, 0.0)
  assert np.all(np.isfinite(gp))
