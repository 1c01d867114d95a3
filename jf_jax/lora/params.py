"""Splitting a LoRA model's params into what trains and the frozen base.

What trains: every Qwix adapter (`<weight>_lora_a`, `<weight>_lora_b`) and the leaves whose
path fully matches a `config.lora.train_in_full` regex (paths as in `config.optim.freeze`,
e.g. 'vision_gen_enc_aligner/kernel'). Everything else is the base: it is passed to the
train step beside the state, never differentiated, never in the optimizer or in the
run's checkpoints (it is re-read from `config.train.init_params_from`).

Trees are nested dicts; a leaf is anything that is not a dict (an array, a
`ShapeDtypeStruct`, a Flax box, a Qwix `WithAux` of a quantized kernel), so the same
functions split boxed, abstract, real and quantized trees alike.
"""

import re
from typing import Any, Callable, Sequence

import flax

ADAPTER_SUFFIXES = ("_lora_a", "_lora_b")


def path_str(path: tuple) -> str:
  return "/".join(str(k) for k in path)


def is_adapter(path: str) -> bool:
  """Whether a param path names a Qwix LoRA factor."""
  return path.endswith(ADAPTER_SUFFIXES)


def trainable_predicate(tree: Any, train_in_full: Sequence[str]) -> Callable[[str], bool]:
  """`path -> trains?` for the params of `tree`.

  Raises:
    ValueError: a `train_in_full` regex matches no parameter (a typo would silently
      freeze a module the user meant to train).
  """
  patterns = [re.compile(r) for r in train_in_full]
  paths = [path_str(p) for p in flax.traverse_util.flatten_dict(tree)]
  for p in patterns:
    if not any(p.fullmatch(path) for path in paths):
      raise ValueError(f"config.lora.train_in_full regex {p.pattern!r} matches no parameter "
                       f"path; paths look like {paths[:3]}")
  return lambda path: is_adapter(path) or any(p.fullmatch(path) for p in patterns)


def split(tree: Any, trains: Callable[[str], bool]) -> tuple[dict, dict]:
  """(trainable subtree, base subtree) of a nested-dict tree."""
  flat = flax.traverse_util.flatten_dict(tree)
  trainable = {k: v for k, v in flat.items() if trains(path_str(k))}
  base = {k: v for k, v in flat.items() if not trains(path_str(k))}
  return (flax.traverse_util.unflatten_dict(trainable),
          flax.traverse_util.unflatten_dict(base))


def combine(trainable: Any, base: Any | None) -> Any:
  """The model's whole params tree from its two parts (`base` None: `trainable` is whole)."""
  if base is None:
    return trainable
  flat = flax.traverse_util.flatten_dict(base)
  overlap = flat.keys() & flax.traverse_util.flatten_dict(trainable).keys()
  if overlap:
    raise ValueError(f"params {sorted(map(path_str, overlap))[:3]} are both trained and base")
  flat.update(flax.traverse_util.flatten_dict(trainable))
  return flax.traverse_util.unflatten_dict(flat)


def select_like(tree: Any, like: Any) -> Any:
  """The leaves of `tree` at the paths `like` has (e.g. a full tree's logical axes
  restricted to the trainable params)."""
  flat = flax.traverse_util.flatten_dict(tree)
  return flax.traverse_util.unflatten_dict(
      {k: flat[k] for k in flax.traverse_util.flatten_dict(like)})


def without_adapters(tree: Any) -> Any:
  """`tree` minus the adapter leaves (the plain model's params)."""
  return split(tree, lambda path: not is_adapter(path))[0]
