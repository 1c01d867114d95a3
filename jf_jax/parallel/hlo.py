"""Reading a compiled program's HLO text: the collectives that move data between devices.

`jitted.lower(...).compile().as_text()` lists every instruction of the partitioned
program with the JAX op it came from (`metadata={op_name="jit(f)/while/body/..."}`).
All-to-all and collective-permute move array shards from one device to another; a train
step whose batch stays on its devices needs neither outside the model (inside it, tensor
parallelism may reshard activations).
"""

import re
from typing import NamedTuple

_MOVE = re.compile(r"=\s*(.*?)\s+(all-to-all|collective-permute)(?:-start)?\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=")
_FIRST_OPERAND = re.compile(r"[\w\-]+\(\s*%([\w.\-]+)")


class Move(NamedTuple):
  kind: str         # 'all-to-all' or 'collective-permute'
  op_name: str      # the JAX op it came from, '' if unknown
  shape: str        # the result type, e.g. 'bf16[1,640,2048]{2,1,0}'
  computation: str  # the HLO computation holding it (e.g. a while body)


def _op_name(line: str) -> str:
  name = _OP_NAME.search(line)
  return name.group(1) if name else ""


def collective_moves(hlo_text: str, max_hops: int = 8) -> list[Move]:
  """Every all-to-all and collective-permute in `hlo_text` (async pairs counted once).

  Instructions that XLA creates late (e.g. a reduce-scatter decomposed into a ring of
  collective-permutes) carry no op name; they get that of the nearest instruction up
  their first-operand chain (at most `max_hops` steps) that has one.
  """
  operand, op_name, found, computation = {}, {}, [], ""
  for line in hlo_text.splitlines():
    if line and not line[0].isspace():
      match = _COMPUTATION.match(line)
      computation = match.group(1) if match else computation
      continue
    instruction = _INSTRUCTION.match(line)
    if not instruction:
      continue
    name, rhs = instruction.group(1), line[instruction.end():]
    first = _FIRST_OPERAND.search(rhs)
    operand[name], op_name[name] = (first.group(1) if first else None), _op_name(line)
    move = _MOVE.search(line)
    if move:
      found.append((name, move.group(2), move.group(1), computation))
  moves = []
  for name, kind, shape, comp in found:
    source = name
    for _ in range(max_hops):
      if op_name.get(source) or operand.get(source) is None:
        break
      source = operand[source]
    moves.append(Move(kind, op_name.get(source, ""), shape, comp))
  return moves


def outside_model(moves: list[Move]) -> list[Move]:
  """The moves not made by the differentiated model (its op names hold `jvp(`): the
  batch split, the per-microbatch slice of the accumulation loop and the update (and any
  move whose op name stayed unknown)."""
  return [m for m in moves if "jvp(" not in m.op_name]
