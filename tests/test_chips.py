"""The accelerator table shared by the benchmark and the AOT tool."""

import pytest

from jf_jax.tools import chips


@pytest.mark.parametrize("kind,name", [
    ("TPU v5 lite", "v5e"),  # must not be taken for "TPU v5" (v5p)
    ("TPU v5", "v5p"),
    ("TPU v6 lite", "v6e"),
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA A100-SXM4-80GB", "a100-80g"),
    ("NVIDIA A100-SXM4-40GB", "a100"),
])
def test_longest_prefix_wins(kind, name):
  assert chips.lookup(kind).name == name


def test_unknown_kind():
  assert chips.lookup("cpu") is None
  with pytest.raises(ValueError, match="'cpu'"):
    chips.require("cpu")
