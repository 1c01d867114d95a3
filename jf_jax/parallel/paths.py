"""Parameter paths: a tree leaf addressed as 'a/b/c' by its keys.

Paths are how a user names parameters (freeze regexes in `config.optim.freeze`) and how
reports name them (the unsharded-parameter check), e.g.
'language_model/model/layers/self_attn/q_proj/kernel' (scanned layers share one path).
Boxed trees (Flax `nn.LogicallyPartitioned`) give the same paths as unboxed ones.
"""

from typing import Any, Sequence

import jax


def _key_str(key: Any) -> str:
  """One path entry (DictKey, SequenceKey, GetAttrKey, ...) as a string."""
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _is_box_value(key: Any) -> bool:
  """The `.value` field of a Flax metadata box (nn.LogicallyPartitioned)."""
  return isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value"


def path_str(path: Sequence[Any]) -> str:
  """A `jax.tree_util` key path as 'a/b/c' (Flax box `.value` entries are skipped)."""
  return "/".join(_key_str(k) for k in path if not _is_box_value(k))


def param_paths(params: Any) -> Any:
  """Tree of the same structure as (unboxed) `params` whose leaves are path strings."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path_str(path), params)
