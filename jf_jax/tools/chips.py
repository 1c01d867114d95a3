"""Accelerator figures used for MFU and memory-fit reports: one table for every tool.

Keys are prefixes of `jax.Device.device_kind` (the longest matching prefix wins, so
"TPU v5 lite" (v5e) is not taken for "TPU v5" (v5p)). Peaks are dense bf16 FLOP/s per chip
from the vendors' data sheets; HBM sizes are per chip.
"""

import dataclasses

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int
  peak_bf16_flops: float
  hbm_bytes_per_s: float


CHIPS = {
    "TPU v4": Chip("v4", 32 * GiB, 275e12, 1228e9),
    "TPU v5 lite": Chip("v5e", 16 * GiB, 197e12, 819e9),
    "TPU v5e": Chip("v5e", 16 * GiB, 197e12, 819e9),
    "TPU v5": Chip("v5p", 95 * GiB, 459e12, 2765e9),
    "TPU v5p": Chip("v5p", 95 * GiB, 459e12, 2765e9),
    "TPU v6 lite": Chip("v6e", 32 * GiB, 918e12, 1640e9),
    "TPU v6e": Chip("v6e", 32 * GiB, 918e12, 1640e9),
    "NVIDIA A100": Chip("a100", 40 * GiB, 312e12, 1555e9),
    "NVIDIA A100-SXM4-80GB": Chip("a100-80g", 80 * GiB, 312e12, 2039e9),
    "NVIDIA H100": Chip("h100", 80 * GiB, 989e12, 3350e9),
    "NVIDIA H200": Chip("h200", 141 * 10 ** 9, 989e12, 4800e9),
}


def lookup(device_kind: str) -> Chip | None:
  """The chip whose key is the longest prefix of `device_kind`; None if none matches."""
  matches = [key for key in CHIPS if device_kind.startswith(key)]
  return CHIPS[max(matches, key=len)] if matches else None


def require(device_kind: str) -> Chip:
  """Like `lookup`, but an unknown device kind is an error naming the known ones."""
  chip = lookup(device_kind)
  if chip is None:
    raise ValueError(f"unknown device kind {device_kind!r}; known: {sorted(CHIPS)}")
  return chip
