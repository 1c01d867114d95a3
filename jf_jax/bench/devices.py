"""This process's share of a benchmark's work.

The engine (`jf_jax.inference.engine`) splits each batch over this process's devices;
processes do not talk to each other: each takes every `process_count`-th item and writes
its own outputs.
"""

from typing import Sequence, TypeVar

import jax

T = TypeVar("T")


def process_share(items: Sequence[T]) -> list[T]:
  """This process's items: every `process_count`-th one, from its index on."""
  return list(items[jax.process_index()::jax.process_count()])


def batches(n: int, size: int):
  """(start, stop) of consecutive batches of `size` over n items."""
  for start in range(0, n, size):
    yield start, min(start + size, n)
