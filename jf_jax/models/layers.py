"""Building blocks shared by all towers: dense layers and norms with logical axis names.

Nothing here knows about JanusFlow. Every parameter carries logical axis names
(`nn.with_logical_partitioning`); `configs/` maps them to mesh axes.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Axes = tuple[str | None, ...]

default_kernel_init = nn.initializers.lecun_normal()


class DenseGeneral(nn.Module):
  """Linear map over the last `len(axis)` input dims to `features` (one or more dims).

  Unlike `nn.DenseGeneral`, the kernel is created directly in its final shape, so its
  logical-axis box never sees an intermediate flat shape (which would break sharding
  constraints under active axis rules). Parameters: `kernel` [*in, *out], `bias` [*out].
  """
  features: tuple[int, ...]
  kernel_axes: Axes
  axis: tuple[int, ...] = (-1,)
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in, n_out = len(self.axis), len(self.features)
    axis = tuple(a % x.ndim for a in self.axis)
    in_shape = tuple(x.shape[a] for a in axis)
    init = self.kernel_init or nn.initializers.lecun_normal(
        in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, n_in + n_out)))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                        in_shape + tuple(self.features), self.param_dtype)
    y = jax.lax.dot_general(x.astype(self.dtype), jnp.asarray(kernel, self.dtype),
                            ((axis, tuple(range(n_in))), ((), ())))
    # A no-op, except under a Qwix LoRA (jf_jax/lora/): its float32 adapters' delta would
    # promote a bf16 layer's output (and break nn.scan's carry dtype).
    y = y.astype(self.dtype)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.zeros_init(), self.kernel_axes[n_in:]), tuple(self.features),
                        self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return y


def dense(features: int | Sequence[int], kernel_axes: Axes, *, name: str | None = None,
          dtype: Dtype, param_dtype: Dtype, use_bias: bool = True,
          axis: int | Sequence[int] = -1, kernel_init=None) -> DenseGeneral:
  """A `DenseGeneral` whose kernel and bias carry logical axis names.

  `kernel_axes` names every kernel dimension (inputs first, then outputs); the bias is named
  after the output dimensions. Contracted input dims must be the trailing dims of `x`.
  """
  features = (features,) if isinstance(features, int) else tuple(features)
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  return DenseGeneral(features, tuple(kernel_axes), axis, use_bias, dtype, param_dtype,
                      kernel_init, name=name)


class RMSNorm(nn.Module):
  """LlamaRMSNorm: statistics in float32, weight applied after casting back.

  Matches transformers: `weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(input_dtype)`.
  The parameter is named `scale` (official `weight`).
  """
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             (self.axis_name,)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    normed = normed.astype(x.dtype)
    return (jnp.asarray(scale, self.dtype) * normed).astype(self.dtype)


def layer_norm(*, eps: float, name: str | None = None, dtype: Dtype, param_dtype: Dtype,
               axis_name: str = "norm") -> nn.LayerNorm:
  """torch `nn.LayerNorm` equivalent (float32 statistics) with named parameters."""
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)))


def group_norm(num_groups: int, *, eps: float, name: str | None = None, dtype: Dtype,
               param_dtype: Dtype, axis_name: str = "norm") -> nn.GroupNorm:
  """torch `nn.GroupNorm` over the channels-last axis (float32, two-pass statistics)."""
  return nn.GroupNorm(
      num_groups=num_groups, epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
      use_fast_variance=False,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)))


def conv(features: int, kernel_size: int, *, name: str | None = None, dtype: Dtype,
         param_dtype: Dtype, strides: int = 1, padding: Any = None,
         kernel_axes: Axes = ("conv_h", "conv_w", "conv_in", "conv_out")) -> nn.Conv:
  """torch `nn.Conv2d` on NHWC with named HWIO kernel and bias.

  `padding` defaults to torch's `padding=kernel_size // 2` on every side; pass Flax-style
  `((top, bottom), (left, right))` for anything else.
  """
  if padding is None:
    padding = ((kernel_size // 2, kernel_size // 2),) * 2
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides), padding=padding,
      dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(default_kernel_init, tuple(kernel_axes)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             (kernel_axes[-1],)))


def gelu_exact(x: jax.Array) -> jax.Array:
  """torch `nn.GELU()` (erf form), used by SigLIP and ConvNeXt."""
  return jax.nn.gelu(x, approximate=False)


_REMAT_POLICIES = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_dots": jax.checkpoint_policies.dots_saveable,
}


def maybe_remat(module_cls, policy_name: str, static_argnums: tuple[int, ...] = ()):
  """Wraps a layer class in `nn.remat` with a named policy ('none' leaves it alone)."""
  if policy_name not in _REMAT_POLICIES:
    raise ValueError(f"unknown remat_policy {policy_name!r}; expected one of "
                     f"{sorted(_REMAT_POLICIES)}")
  if policy_name == "none":
    return module_cls
  return nn.remat(module_cls, policy=_REMAT_POLICIES[policy_name], prevent_cse=False,
                  static_argnums=static_argnums)
