"""Loss functions against hand-computed numpy values, and flow conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
  total, weight = jax.jit(losses.next_token_loss)(jnp.asarray(logits), jnp.asarray(targets),
                                                  jnp.asarray(weights))
  logp = _np_log_softmax(logits.astype(np.float64))
  expected = sum(-logp[b, i, targets[b, i]] for b in range(2) for i in range(5)
                 if weights[b, i])
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert weight == 5.0
  assert total.dtype == jnp.float32


def test_next_token_loss_bf16_logits_float32_result():
  logits = jnp.zeros((1, 3, 4), jnp.bfloat16)
  total, weight = jax.jit(losses.next_token_loss)(logits, jnp.array([[1, 2, 3]]),
                                                  jnp.array([[1.0, 1.0, 0.0]]))
  assert total.dtype == jnp.float32
  np.testing.assert_allclose(total, 2 * np.log(4.0), rtol=1e-6)
  assert weight == 2.0


def test_next_token_loss_no_gradient_from_masked_positions():
  logits = jnp.ones((1, 2, 3))
  loss = lambda l: losses.next_token_loss(l, jnp.array([[0, -100]]), jnp.array([[1, 0]]))[0]
  grad = jax.jit(jax.grad(loss))(logits)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[0, 1], 0.0)


def test_sample_t_logit_normal():
  sample = jax.jit(losses.sample_t, static_argnums=(1, 2))
  t = sample(jax.random.key(0), 20_000, "logit_normal", 0.0, 1.0)
  assert t.shape == (20_000,) and t.dtype == jnp.float32
  t = np.asarray(t)
  assert np.all((t > 0) & (t < 1))
  assert abs(np.median(t) - 0.5) < 0.02
  # sigmoid(N(0, 1)): P(t < sigmoid(1)) = Phi(1) ~ 0.841.
  sigmoid_1 = 1 / (1 + np.exp(-1.0))
  assert abs(np.mean(t < sigmoid_1) - 0.841) < 0.02
  shifted = np.asarray(sample(jax.random.key(0), 20_000, "logit_normal", 1.0, 1.0))
  assert abs(np.median(shifted) - sigmoid_1) < 0.02


def test_sample_t_uniform_and_bad_kind():
  t = np.asarray(losses.sample_t(jax.random.key(1), 10_000, kind="uniform"))
  assert np.all((t >= 0) & (t < 1))
  assert abs(np.mean(t) - 0.5) < 0.02
  with pytest.raises(ValueError, match="beta"):
    losses.sample_t(jax.random.key(1), 4, kind="beta")


def test_interpolate_endpoints_and_broadcast():
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  data = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  np.testing.assert_array_equal(losses.interpolate(noise, data, jnp.zeros(3)), noise)
  np.testing.assert_array_equal(losses.interpolate(noise, data, jnp.ones(3)), data)
  t = jnp.array([0.0, 0.25, 1.0])
  z = losses.interpolate(noise, data, t)
  np.testing.assert_allclose(z[1], 0.25 * data[1] + 0.75 * noise[1], rtol=1e-6)
  np.testing.assert_array_equal(z[0], noise[0])


def test_euler_with_target_velocity_goes_noise_to_data():
  rng = np.random.default_rng(3)
  noise = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  data = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  z, steps = noise, 10
  for i in range(steps):
    # Euler step from t = i / steps; it must stay on the interpolation path.
    z = z + losses.velocity_target(noise, data) / steps
    on_path = losses.interpolate(noise, data, jnp.full((2,), (i + 1) / steps))
    np.testing.assert_allclose(z, on_path, atol=1e-5)
  np.testing.assert_allclose(z, data, atol=1e-5)


def test_velocity_is_path_derivative():
  rng = np.random.default_rng(4)
  noise = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  data = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  t = jnp.array([0.3, 0.7])
  dz = jax.jvp(lambda s: losses.interpolate(noise, data, s), (t,), (jnp.ones(2),))[1]
  np.testing.assert_allclose(dz, losses.velocity_target(noise, data), rtol=1e-6)


def test_flow_loss_matches_numpy():
  rng = np.random.default_rng(1)
  v_pred = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  v_target = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  weights = np.array([1.0, 0.0, 1.0])
  v_pred[1] = np.nan  # dropped rows must not contribute even when non-finite
  total, weight = jax.jit(losses.flow_loss)(jnp.asarray(v_pred), jnp.asarray(v_target),
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
  total, weight = jax.jit(losses.repa_loss)(jnp.asarray(proj), jnp.asarray(target),
                                            jnp.asarray(weights))
  np.testing.assert_allclose(total, -_np_cos(proj[:2], target[:2]).sum(), rtol=1e-5)
  assert weight == 8
  same, _ = losses.repa_loss(jnp.asarray(target), jnp.asarray(3.0 * target), jnp.ones(3))
  np.testing.assert_allclose(same / 12, -1.0, rtol=1e-6)


def test_repa_loss_stops_target_gradient_and_is_eps_safe():
  proj = jnp.zeros((1, 2, 3)).at[0, 0].set(1.0)  # token 1 is all zeros
  target = jnp.ones((1, 2, 3))
  loss = lambda p, t: losses.repa_loss(p, t, jnp.ones(1))[0]
  gp, gt = jax.jit(jax.grad(loss, (0, 1)))(proj, target)
  np.testing.assert_array_equal(gt, 0.0)
  assert np.all(np.isfinite(gp))


def test_loss_denominators_allow_a_task_with_zero_rows():
  """A stage mixture may leave out a task (e.g. gen_rows=0): weights stay >= 1, exact."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jf_jax.train import step  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(dict(num_gen_tokens=16))
  batch = {"gen_latents": jnp.zeros((0, 8, 8, 4)), "gen_weights": jnp.zeros((0,)),
           "und_weights": jnp.ones((2, 5)), "text_weights": jnp.ones((1, 3))}
  denom = step.loss_denominators(batch, cfg)
  assert float(denom["ar"]) == 13.0 and float(denom["rf"]) == float(denom["repa"]) == 1.0
  batch.update(gen_latents=jnp.zeros((3, 8, 8, 4)), gen_weights=jnp.array([1., 1., 0.]))
  denom = step.loss_denominators(batch, cfg)
  assert float(denom["rf"]) == 2 * 256 and float(denom["repa"]) == 2 * 16
