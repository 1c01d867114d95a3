r"""Where a CPU step's time goes, by model part and direction: a profile read against its HLO.

  python benchmarks/train_step.py --config configs/default.py --profile_dir /tmp/prof
  python benchmarks/trace_parts.py /tmp/prof            # reads /tmp/prof/step.hlo.txt too

XLA:CPU traces name each thunk after its HLO instruction (`args.hlo_op`); the optimized
HLO text (`train_step.py --profile_dir` writes it as `step.hlo.txt`) gives each
instruction its `op_name` metadata, the Flax module path and JAX transform it came from.
Each event's *exclusive* time (its duration less the events nested in it on the same
thread: a while loop's body ops are not counted twice) is summed per

  * part: the top-level module in the op_name (`language_model` -> llm,
    `vision_gen_enc_model` -> gen_enc, ...; "rest" for the optimizer, losses and glue),
  * direction: `transpose(jvp(...))` in the op_name = backward, `jvp(...)` = forward,
    neither = outside differentiation (optimizer update, gradient clipping, metrics),
  * category: the instruction's opcode (`fusion:kLoop` elementwise, `fusion:ynn` the
    YNNPACK library fusions of dots and convolutions, `convolution`, `dot`, `copy`, ...).

Times are thread time (both cores counted), in ms per step. FLOPs are the dots' of each
part (2 x output elements x contracted size, per executed instruction, read off the HLO
shapes); convolutions are left out of the FLOP count (reported as time only).
"""

import argparse
import collections
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trace_summary  # pylint: disable=g-import-not-at-top,wrong-import-position

# First match wins, searched in the op_name.
PARTS = (
    ("und_tower", r"vision_und_enc|und_aligner|vision_model"),
    ("llm", r"language_model"),
    ("gen_enc", r"vision_gen_enc"),
    ("gen_dec", r"vision_gen_dec"),
    ("repa", r"repa"),
)
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|[\w]+\[[^\]]*\](?:\{[^}]*\})?) ([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def part_of(op_name: str) -> tuple[str, str]:
  """(part, direction) of an instruction's op_name metadata."""
  direction = ("bwd" if "transpose(jvp" in op_name else
               "fwd" if "jvp(" in op_name else "outside")
  for part, pattern in PARTS:
    if re.search(pattern, op_name):
      return part, direction
  return "rest", direction


def _dims(shape: str) -> list[int]:
  found = _SHAPE.match(shape)
  return [int(d) for d in found.group(2).split(",") if d] if found else []


def parse_hlo(text: str) -> dict[str, dict]:
  """{instruction name: {op_name, opcode, flops}} of an optimized HLO module's text.

  A fusion's FLOPs are those of the dots inside its fused computation."""
  shapes, info, calls, comp_flops = {}, {}, {}, collections.Counter()
  comp_dot = {}  # computation -> (flops, (m, k, n)) of its largest dot
  computation = None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if head and "=" not in line.split("{")[0]:
      computation = head.group(1)
      continue
    found = _INSTRUCTION.match(line)
    if not found:
      continue
    name, shape, opcode, rest = found.groups()
    shapes[name] = shape
    op_name = re.search(r'op_name="([^"]*)"', rest)
    flops = 0.0
    if opcode == "dot":
      operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
      contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
      lhs = _dims(shapes.get(operands[0], "")) if operands else []
      if lhs and contracting:
        size = math.prod(lhs[int(d)] for d in contracting.group(1).split(",") if d)
        out = _dims(shape)
        flops = 2.0 * math.prod(out) * size
        n = out[-1] if out else 1
        mkn = (math.prod(out) // n, size, n)
        if flops > comp_dot.get(computation, (0.0, None))[0]:
          comp_dot[computation] = (flops, mkn)
      comp_flops[computation] += flops
    called = re.search(r"calls=%([\w.\-]+)", rest)
    if called:
      calls[name] = called.group(1)
    info[name] = dict(op_name=op_name.group(1) if op_name else "", opcode=opcode,
                      flops=flops, kind=re.search(r"kind=(\w+)", rest),
                      dot=comp_dot[computation][1] if opcode == "dot" else None)
  for name, entry in info.items():
    if entry["opcode"] == "fusion":
      kind = entry["kind"].group(1) if entry["kind"] else "?"
      entry["opcode"] = "fusion:" + ("ynn" if name.startswith("ynn") else kind)
      entry["flops"] = comp_flops.get(calls.get(name), 0.0)
      entry["dot"] = comp_dot.get(calls.get(name), (0.0, None))[1]
  return info


def module_name(hlo_text: str) -> str:
  """`HloModule NAME, ...` -> NAME (the `hlo_module` of that executable's trace events)."""
  return hlo_text.split(None, 2)[1].rstrip(",")


def of_module(events: list[dict], module: str) -> list[dict]:
  """The thunk events of one executable: instruction names are unique only within a
  module, so another executable's `copy.10` must not be read against this HLO."""
  return [e for e in events if e.get("args", {}).get("hlo_module") == module]


def exclusive_times(events: list[dict]) -> tuple[collections.Counter, collections.Counter]:
  """({hlo_op: exclusive microseconds}, {hlo_op: runs}) over the XLA:CPU thunk events."""
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "hlo_op" in e.get("args", {}):
      by_thread[e.get("tid")].append(e)
  out, count = collections.Counter(), collections.Counter()
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack, own = [], {}
    for e in thread_events:
      while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
        stack.pop()
      own[id(e)] = float(e["dur"])
      if stack:
        own[id(stack[-1])] -= float(e["dur"])
      stack.append(e)
    for e in thread_events:
      out[e["args"]["hlo_op"]] += own[id(e)]
      count[e["args"]["hlo_op"]] += 1
  return out, count


def summarise(events: list[dict], hlo: dict[str, dict], steps: int, top: int,
              matmul_rate=None) -> str:
  """The tables. `matmul_rate(m, k, n)` -> GFLOP/s per core of a plain [m, k] x [k, n]
  matmul on this machine: each part's largest dot shape is timed alone beside it."""
  times, counts = exclusive_times(events)
  parts, kinds, flops = collections.Counter(), collections.Counter(), collections.Counter()
  biggest = {}
  for name, us in times.items():
    entry = hlo.get(name, dict(op_name="", opcode="?", flops=0.0))
    key = part_of(entry["op_name"])
    parts[key] += us
    kinds[entry["opcode"]] += us
    flops[key] += entry["flops"] * counts[name]
    if entry.get("dot") and entry["flops"] * counts[name] > biggest.get(key, (0, None))[0]:
      biggest[key] = (entry["flops"] * counts[name], entry["dot"])
  total = sum(times.values())
  lines = [f"thread time {total / 1e3 / steps:.1f} ms per step (both cores summed)", "",
           "part       direction  ms/step  share  GFLOP/step (dots)  GFLOP/s per core"
           + ("  largest dot [m,k]x[k,n]: alone GFLOP/s per core" if matmul_rate else "")]
  for (part, direction), us in parts.most_common():
    gflop = flops[(part, direction)] / 1e9 / steps
    rate = gflop / (us / 1e6 / steps) if us else 0.0
    line = (f"{part:<10} {direction:<9} {us / 1e3 / steps:8.1f} {100 * us / total:5.1f}%"
            f"  {gflop:17.3f}  {rate:16.1f}")
    if matmul_rate and (part, direction) in biggest:
      m, k, n = biggest[(part, direction)][1]
      line += f"  [{m},{k}]x[{k},{n}]: {matmul_rate(m, k, n):.1f}"
    lines.append(line)
  lines += ["", "category        ms/step  share"]
  for kind, us in kinds.most_common(10):
    lines.append(f"{kind:<15} {us / 1e3 / steps:8.1f} {100 * us / total:5.1f}%")
  lines += ["", f"top {top} instructions (exclusive ms/step, runs/step, op_name tail)"]
  for name, us in times.most_common(top):
    op_name = hlo.get(name, {}).get("op_name", "")
    lines.append(f"{us / 1e3 / steps:7.2f} x{counts[name] // steps:<3d} {name:<28} "
                 f"{op_name[-90:]}")
  return "\n".join(lines)


def matmul_rate(m: int, k: int, n: int, repeats: int = 20) -> float:
  """GFLOP/s per core of a jitted float32 [m, k] x [k, n] matmul alone (median)."""
  import jax  # pylint: disable=g-import-not-at-top  (reading a trace needs no JAX)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
  matmul = jax.jit(jnp.dot)
  matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * m * k * n / float(np.median(times)) / 1e9 / (os.cpu_count() or 1)


def summarise_trace(trace_dir: str, hlo_text: str, units: int, top: int = 15,
                    rate=None) -> str:
  """The tables of the trace under `trace_dir`, read against the compiled HLO text of
  the executable it profiled (only that module's events), per `units` over the trace."""
  events = of_module(trace_summary.load_events(trace_summary.find_trace(trace_dir)),
                     module_name(hlo_text))
  return summarise(events, parse_hlo(hlo_text), units, top, rate)


def write_hlo(trace_dir: str, hlo_text: str) -> None:
  """The compiled HLO beside the trace, as step.hlo.txt (what `main` reads back)."""
  with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
    f.write(hlo_text)


def profile_cpu(call, compiled_text: str, trace_dir: str, calls: int, units: int,
                top: int = 15) -> str:
  """Traces `calls` runs of `call()` under jax.profiler into `trace_dir` (with the
  compiled HLO text written beside it as step.hlo.txt) and returns the tables, per
  `units` (steps, or ODE evaluations) over all calls. One untraced call first: the trace
  holds neither the compilation nor work still queued (e.g. drawing random params)."""
  import jax  # pylint: disable=g-import-not-at-top
  write_hlo(trace_dir, compiled_text)
  call()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(calls):
      call()
  return summarise_trace(trace_dir, compiled_text, units, top, matmul_rate)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("path", help="--profile_dir of train_step.py / sampling.py")
  p.add_argument("--hlo", default=None, help="optimized HLO text (default PATH/step.hlo.txt)")
  p.add_argument("--steps", type=int, default=3, help="steps (calls) in the trace")
  p.add_argument("--top", type=int, default=25)
  args = p.parse_args(argv)
  hlo_path = args.hlo or os.path.join(args.path, "step.hlo.txt")
  if not os.path.exists(hlo_path):
    sys.exit(f"trace_parts: error: no HLO text at {hlo_path}: profile with "
             "benchmarks/train_step.py --profile_dir (it writes step.hlo.txt), or give --hlo")
  with open(hlo_path) as f:
    print(summarise_trace(args.path, f.read(), args.steps, args.top))
  return 0


if __name__ == "__main__":
  sys.exit(main())
