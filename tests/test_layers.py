"""No module of jf_jax imports one from a higher layer.

Layers, lowest first: models / parallel / losses < data / checkpoint < train / eval /
sampling < entry points (jf_jax/tools, jf_jax/bench, jf_jax/serve, jf_jax/shapes, jf_jax/prepare,
jf_jax/convert.py, jf_jax/entry_point.py, jf_jax/config_keys.py; jf_jax/testing.py:
helpers for tests and benchmarks).
Imports inside one layer are allowed. A new package must be given a layer here.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jf_jax"

LAYER = {
    "config_defaults": 0, "models": 0, "parallel": 0, "losses": 0,
    "data": 1, "checkpoint": 1,
    "train": 2, "inference": 2, "sampling": 2,
    "tools": 3, "bench": 3, "serve": 3, "shapes": 3, "convert": 3, "testing": 3,
    "entry_point": 3, "config_keys": 3, "prepare": 3,  # command-line pieces, `prepare` CLI
    "lora": 1,  # adapters over the model and its checkpoints (issue 25)
}


def _unit(parts: tuple[str, ...]) -> str:
  """'jf_jax.train.optim' -> 'train' (the package or top-level module under jf_jax)."""
  return parts[1].removesuffix(".py")


def _imported_units(tree: ast.Module) -> set[str]:
  """Units of jf_jax named by the module's imports (any nesting level)."""
  units = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      parts = tuple(name.split("."))
      if parts[0] == "jf_jax" and len(parts) > 1:
        units.add(_unit(parts))
  return units - {"__init__"}


def _modules():
  return sorted(p for p in ROOT.rglob("*.py"))


def test_every_unit_has_a_layer():
  units = {_unit(p.relative_to(ROOT.parent).parts) for p in _modules()} - {"__init__"}
  missing = sorted(units - set(LAYER))
  assert not missing, f"give {missing} a layer in tests/test_layers.py"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_upward_import(path):
  unit = _unit(path.relative_to(ROOT.parent).parts)
  if unit == "__init__":
    return
  imported = _imported_units(ast.parse(path.read_text()))
  upward = sorted(u for u in imported if LAYER.get(u, -1) > LAYER[unit])
  assert not upward, f"{path.relative_to(ROOT.parent)} (layer {LAYER[unit]}) imports " + (
      ", ".join(f"jf_jax.{u} (layer {LAYER[u]})" for u in upward))
