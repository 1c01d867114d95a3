r"""Why a LoRA train step compiles slower than the full fine-tune's: stage timings and HLO counts.

For one config, builds the real train step of the full stage-3 fine-tune
(`config.lora.rank` = 0) and of a LoRA run (rank > 0) for a described TPU topology
(`jf_jax/tools/aot.py`, shapes only) and times the stages separately: trace
(`jax.jit(...).trace`: Python, Qwix's interception), lower (to StableHLO) and XLA/libtpu
compile. It counts, in the lowered module (before XLA) and the optimized one (after): all
instructions, while loops, dots, fusions, converts, and the largest temporaries that live
inside a loop body, so that a cause shows as a count: an unrolled scan (more whiles/dots
per layer), base weights cast or dequantized per layer (big converts in the loop), or
simply more instructions.

  python benchmarks/lora_compile.py --config configs/tiny.py --topology v5e:1x1
  python benchmarks/lora_compile.py --config configs/janusflow_1p3b_lora.py \
      --config.model.llm.num_layers=2 --ranks 0,16
"""

import collections
import os
import re
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax.tools import aot  # pylint: disable=wrong-import-position

# --config and --topology are aot.py's flags (defined when it is imported).
_CONFIG, _TOPOLOGY = aot._CONFIG, aot._TOPOLOGY  # pylint: disable=protected-access
_RANKS = flags.DEFINE_string("ranks", "0,8", "Comma-separated LoRA ranks (0 = full).")
_BASE_QUANT = flags.DEFINE_string("base_quant", "", "QLoRA base quantization of the "
                                  "LoRA runs ('' float base).")
_TOP = flags.DEFINE_integer("top", 5, "Largest in-loop temporaries listed.")


# A computation's header starts in column 0 (instructions are indented) and opens a block.
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
# `[ROOT] name = shape opcode(`; tuple shapes hold spaces, so the shape is matched lazily.
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\(")


def _shape_bytes(shape_text: str) -> int:
  """Bytes of an HLO shape like 'f32[24,2048,5632]{...}' (0 for tuples / tokens)."""
  m = re.match(r"(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([0-9,]*)\]",
               shape_text)
  if not m:
    return 0
  size = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}[m.group(1)]
  for d in filter(None, m.group(2).split(",")):
    size *= int(d)
  return size


def hlo_counts(text: str) -> dict:
  """Instruction counts of an HLO module's text (one instruction per `name = shape op(`)."""
  ops = collections.Counter()
  computations = 0
  for line in text.splitlines():
    if _COMPUTATION.match(line):
      computations += 1
    m = _INSTRUCTION.match(line)
    if m:
      ops[m.group(4)] += 1
  return dict(instructions=sum(ops.values()), computations=computations,
              **{k: ops[k] for k in ("while", "dot", "convolution", "fusion", "convert",
                                     "broadcast", "copy", "all-reduce", "custom-call")})


def loop_temporaries(text: str, top: int) -> list[tuple[int, str]]:
  """The largest non-parameter values computed inside while-loop bodies (optimized HLO)."""
  bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
  out, current = [], None
  for line in text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      current = head.group(1)
      continue
    if current not in bodies:
      continue
    m = _INSTRUCTION.match(line)
    if m and m.group(4) not in ("parameter", "get-tuple-element", "tuple", "bitcast"):
      out.append((_shape_bytes(m.group(3)), f"{m.group(4)} {m.group(3).split('{')[0]}"))
  return sorted(out, reverse=True)[:top]


def measure(config, rank: int, devices) -> dict:
  """Stage times and HLO counts of one run's train step."""
  import jax  # pylint: disable=g-import-not-at-top
  from jf_jax.data import layout  # pylint: disable=g-import-not-at-top
  from jf_jax.train import loop  # pylint: disable=g-import-not-at-top
  from jf_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.stage = 3
    config.lora.rank = rank
    config.lora.base_quant = _BASE_QUANT.value if rank else ""
    if rank and not config.train.init_params_from:
      config.train.init_params_from = "/nonexistent/base"  # AOT reads no weights
  s = loop.plan(config, devices)
  batch_sh = step_lib.batch_sharding(s.mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh)
           for k, v in layout.abstract_batch(config.batch, s.cfg, s.space.pixel_size).items()}
  frozen = aot._with_sharding(s.frozen, s.frozen_shardings)  # pylint: disable=protected-access
  state = aot._with_sharding(s.abstract, s.shardings)  # pylint: disable=protected-access
  with jax.set_mesh(s.mesh):
    t0 = time.perf_counter()
    traced = s.jitted.trace(frozen, state, batch)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
  optimized = compiled.as_text()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  return dict(trace_s=t1 - t0, lower_s=t2 - t1, xla_s=t3 - t2,
              jaxpr_eqns=_count_eqns(traced.jaxpr),
              lowered=hlo_counts(lowered.as_text(dialect="hlo")),
              optimized=hlo_counts(optimized),
              loop_temps=loop_temporaries(optimized, _TOP.value),
              flops=float(cost.get("flops", 0.0)),
              temp_gib=getattr(mem, "temp_size_in_bytes", 0) / 2**30 if mem else 0.0)


def _count_eqns(jaxpr) -> int:
  """Equations of a closed jaxpr, sub-jaxprs (scan / remat / pjit bodies) included once."""
  import jax  # pylint: disable=g-import-not-at-top
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  n = 0
  for eqn in jaxpr.eqns:
    n += 1
    for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
      n += _count_eqns(sub)
    for v in eqn.params.values():
      if hasattr(v, "eqns") or hasattr(v, "jaxpr"):
        n += _count_eqns(v)
  return n


def main(argv):
  del argv
  if _TOPOLOGY.value == "cpu":
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.devices()[:1]
  else:
    devices = aot.topology_devices(_TOPOLOGY.value)[:1]
  config = _CONFIG.value
  b = config.batch
  print(f"{_TOPOLOGY.value}; batch und/text/gen {b.und_rows}/{b.text_rows}/{b.gen_rows}; "
        f"LLM layers {config.model.llm.num_layers}; remat {config.model.llm.remat_policy}; "
        f"base_quant {_BASE_QUANT.value or '-'}", flush=True)
  for rank in (int(r) for r in _RANKS.value.split(",")):
    r = measure(config, rank, devices)
    name = "full" if rank == 0 else f"lora r={rank}"
    print(f"{name}: trace {r['trace_s']:.1f} s, lower {r['lower_s']:.1f} s, XLA compile "
          f"{r['xla_s']:.1f} s; jaxpr eqns {r['jaxpr_eqns']:,}; temp {r['temp_gib']:.3f} "
          f"GiB; cost-model FLOPs {r['flops']:.3e}", flush=True)
    print(f"  lowered HLO:   {r['lowered']}", flush=True)
    print(f"  optimized HLO: {r['optimized']}", flush=True)
    print("  largest in-loop temporaries: " +
          "; ".join(f"{t} ({n / 2**20:.1f} MiB)" for n, t in r["loop_temps"]), flush=True)


if __name__ == "__main__":
  app.run(main)
