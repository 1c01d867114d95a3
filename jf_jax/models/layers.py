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


def dense(features: int | Sequence[int], kernel_axes: Axes, *, name: str | None = None, dtype: Dtype,
          param_dtype: Dtype, use_bias: bool = True, axis: int | Sequence[int] = -1,
          kernel_init=default_kernel_init) -> nn.DenseGeneral:
  """A `DenseGeneral` whose kernel and bias carry logical axis names.

  `kernel_axes` names every kernel dimension (inputs first, then outputs); the bias is named
  after the output dimensions.
  """
  n_out = 1 if isinstance(features, int) else len(features)
  return nn.DenseGeneral(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init, kernel_axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             kernel_axes[-n_out:]),
      name=name)


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
