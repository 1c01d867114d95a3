"""ConvNeXt's depthwise convolution: both implementations (`convnext.DEPTHWISE_IMPLS`: the
sum of shifted taps, and the grouped convolution with its custom VJP) equal XLA's grouped
convolution under plain autodiff, and stay right sharded.

Sharding the batch over the (data, fsdp) axes of the 8-device mesh must not change the
kernel gradient: XLA's SPMD partitioner gets the grouped-convolution kernel gradient wrong
there (off by hundreds in this very setting), which both implementations avoid.
"""

import pytest

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jf_jax.models import convnext


def _inputs(batch=8, size=6, channels=16):
  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (batch, size, size, channels), jnp.float32)
  kernel = jax.random.normal(kk, (7, 7, 1, channels), jnp.float32) / 7
  return x, kernel


def _loss_grads(impl):
  def loss(x, kernel):
    return jnp.sum(jnp.sin(impl(x, kernel)) * jnp.arange(x.shape[-1]))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


@pytest.mark.parametrize("impl", sorted(convnext.DEPTHWISE_IMPLS))
def test_depthwise_conv_gradients_match_autodiff_sharded_or_not(impl):
  fn = convnext.DEPTHWISE_IMPLS[impl]
  x, kernel = _inputs()
  ref_value, (ref_dx, ref_dk) = _loss_grads(convnext._grouped_conv)(x, kernel)  # pylint: disable=protected-access
  value, (dx, dk) = _loss_grads(fn)(x, kernel)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, ref_dk, rtol=1e-5, atol=1e-3)
  # The training layout: batch over (data, fsdp), channels replicated or sharded. With
  # the kernel replicated, XLA's own grouped-conv gradient is off by hundreds here.
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  for x_spec, k_spec in [(P(("data", "fsdp")), P()),
                         (P(("data", "fsdp"), None, None, "tensor"),
                          P(None, None, None, "tensor")),
                         (P(("data", "fsdp")), P(None, None, None, ("fsdp", "tensor")))]:
    value, (dx, dk) = _loss_grads(fn)(jax.device_put(x, NamedSharding(mesh, x_spec)),
                                      jax.device_put(kernel, NamedSharding(mesh, k_spec)))
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, ref_dk, rtol=1e-5, atol=1e-3)
