"""Reading a compiled program's HLO text: the collectives that move data between devices.

`jitted.lower(...).compile().as_text()` lists every instruction of the partitioned
program with the JAX op it came from (`metadata={op_name="jit(f)/while/body/..."}`).
All-to-all and collective-permute move array shards from one device to another; a train
step whose batch stays on its devices needs neither outside the model (inside it, tensor
parallelism may reshard activations).
"""

import re

_MOVE = re.compile(r"\b(all-to-all|collective-permute)(?:-start)?\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def collective_moves(hlo_text: str) -> list[tuple[str, str]]:
  """(kind, JAX op name) of every all-to-all and collective-permute in `hlo_text`.

  Asynchronous pairs (`-start` / `-done`) count once; the op name is '' when the
  instruction carries no metadata.
  """
  moves = []
  for line in hlo_text.splitlines():
    kind = _MOVE.search(line)
    if kind:
      name = _OP_NAME.search(line)
      moves.append((kind.group(1), name.group(1) if name else ""))
  return moves


def outside_model(moves: list[tuple[str, str]]) -> list[tuple[str, str]]:
  """The moves not made by the differentiated model (its op names hold `jvp(`): the
  batch split, the per-microbatch slice of the accumulation loop and the update."""
  return [m for m in moves if "jvp(" not in m[1]]
