"""Strided microbatches: split a batch's rows without moving them between devices.

Rows are sharded over ('data', 'fsdp') in contiguous blocks. A contiguous split would put
each microbatch on 1/num of the devices, and a step would move rows between devices; the
strided split (microbatch i takes rows i, i + num, i + 2*num, ...) leaves every device its
own share of every microbatch (when the rows per device divide by `num`), and the
constraint tells XLA to keep it there.
"""

import flax.linen as nn
import jax


def split(x: jax.Array, num: int) -> jax.Array:
  """[rows, ...] -> [num, rows/num, ...], strided, rows kept on their devices."""
  if x.shape[0] % num:
    raise ValueError(f"a sub-batch of {x.shape[0]} rows is not divisible by "
                     f"config.train.microbatches={num}")
  strided = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
  return nn.with_logical_constraint(strided, (None, "act_batch"))


def keep_rows_sharded(tree):
  """Every array [rows, ...] of `tree` with its rows sharded like the whole batch's."""
  return jax.tree.map(lambda x: nn.with_logical_constraint(x, ("act_batch",)), tree)


def merge(x: jax.Array) -> jax.Array:
  """The inverse of `split`: [num, rows/num, ...] -> [rows, ...] in the original order."""
  rows = x.shape[0] * x.shape[1]
  return keep_rows_sharded(x.swapaxes(0, 1).reshape((rows,) + x.shape[2:]))
