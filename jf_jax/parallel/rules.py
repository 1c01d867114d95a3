"""Logical-axis rules: the one table that maps logical names to mesh axes.

Parameters and activations in `jf_jax.models` carry logical axis names; these rules map
them onto the mesh axes ('data', 'fsdp', 'tensor') of `jf_jax.parallel.mesh`. The default
is FSDP over every tower's model width plus tensor parallelism over heads, MLP widths and
the vocabulary; on a mesh with tensor = 1 that degenerates to pure FSDP.

Overriding from a config: put a sequence of (logical_name, mesh_axes) pairs in
`config.logical_axis_rules` (e.g. `(("embed", None), ("vocab", ("fsdp", "tensor")))`) and
call

    rules = merge_rules(default_rules(), config.logical_axis_rules)

An override replaces the default entry of the same name (mesh_axes may be None, one axis
name, or a tuple of names); names the defaults lack are appended. Flax picks the first rule
whose mesh axes are still free for a tensor, so each name appears once here.
"""

from typing import Any, Sequence

MeshAxes = str | tuple[str, ...] | None
Rules = list[tuple[str, MeshAxes]]

MESH_AXES = ("data", "fsdp", "tensor")

_DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # LLM parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    # SigLIP understanding encoder.
    ("vit_embed", "fsdp"),
    ("vit_mlp", "tensor"),
    ("vit_heads", "tensor"),
    ("und_tokens", None),
    # Generation encoder / decoder (ConvNeXt towers) and the REPA projector.
    ("gen_embed", "fsdp"),
    ("gen_mlp", "tensor"),
    ("conv_in", None),
    ("conv_out", None),
    ("conv_spatial", None),  # kernel height / width, under either naming
    ("conv_h", None),
    ("conv_w", None),
    ("repa_hidden", None),
    # Activations.
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)


def default_rules() -> Rules:
  """A fresh copy of the default rules as a list of (logical_name, mesh_axes)."""
  return list(_DEFAULT_RULES)


def _normalize(mesh_axes: Any) -> MeshAxes:
  """Lists (as configs may store them) -> tuples; validates axis names."""
  if mesh_axes is None:
    return None
  axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  unknown = [a for a in axes if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"config.logical_axis_rules names unknown mesh axes {unknown}; "
                     f"mesh axes are {MESH_AXES}")
  return axes[0] if len(axes) == 1 else axes


def merge_rules(base: Sequence[tuple[str, Any]],
                overrides: Sequence[tuple[str, Any]] | None) -> Rules:
  """Replaces entries of `base` by name with `overrides`; appends new names."""
  merged = {name: _normalize(axes) for name, axes in base}
  for name, axes in overrides or ():
    merged[name] = _normalize(axes)
  return list(merged.items())
