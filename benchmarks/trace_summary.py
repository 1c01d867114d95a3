r"""Where a profiled step spends its device time: kernels grouped by kind and by name.

Reads the Perfetto trace that `benchmarks/train_step.py --profile_dir DIR` writes
(`DIR/plugins/profile/*/perfetto_trace.json.gz`, Chrome trace-event JSON) and sums the
durations of the device's kernel events. Time is summed over the chosen threads, so
overlapping events count twice: pick the kernel streams (`--thread Stream` on GPU), not
the derived "XLA Ops"/"XLA Modules" lines that repeat the same time.

  python benchmarks/trace_summary.py DIR --steps 3 --thread Stream   # GPU kernels/step
  python benchmarks/trace_summary.py DIR --top 40 --process "/host:CPU"   # CPU traces

Kinds are read off kernel names (cuBLAS/cuDNN/XLA naming), so they are a guide, not an
exact attribution: "matmul" = GEMM kernels (cuBLAS, cuBLASLt nvjet, CUTLASS, XLA Triton
GEMM fusions), "attention" = cuDNN fused attention, "convolution" = cuDNN convolutions,
"reduction" = XLA reduce fusions (norms, softmax, loss sums), "elementwise" = other XLA
loop fusions, "copy/transpose", "other".
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

_KINDS = (  # first match wins; patterns are searched in the lower-cased kernel name
    ("attention", r"cudnn.*(flash|fmha|attn|sdpa)|fmha|flash|cudnn_generated_fort_native_sdpa"),
    ("matmul", r"gemm|nvjet|cutlass|cublas|xmma|matmul|triton_gemm|dot"),
    ("convolution", r"conv(?!ert)|cudnn|implicit_?gemm|winograd|fft"),
    ("reduction", r"reduce|scan|softmax|norm"),
    ("copy/transpose", r"copy|transpose|memcpy|memset|concatenate|dynamic[-_]update|slice"),
    ("elementwise", r"fusion|loop_|elementwise|convert|broadcast"),
)


def kind_of(name: str) -> str:
  lower = name.lower()
  for kind, pattern in _KINDS:
    if re.search(pattern, lower):
      return kind
  return "other"


def find_trace(path: str) -> str:
  """The newest perfetto_trace.json.gz under `path` (or `path` itself if a file)."""
  if os.path.isfile(path):
    return path
  found = sorted(glob.glob(os.path.join(path, "**", "perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not found:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {path!r}: run "
                            "benchmarks/train_step.py with --profile_dir first")
  return found[-1]


def load_events(path: str) -> list[dict]:
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def _metadata_names(events: list[dict], kind: str) -> dict:
  """{pid: name} for kind "process_name", {(pid, tid): name} for "thread_name"."""
  out = {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == kind:
      key = e["pid"] if kind == "process_name" else (e["pid"], e.get("tid"))
      out[key] = e.get("args", {}).get("name", "")
  return out


def kernel_durations(events: list[dict], process: str,
                     thread: str = "") -> tuple[dict[str, float], dict[str, float]]:
  """Summed durations (microseconds) over processes named like `process`: (per event
  name, over threads named like `thread` (substring; "" = all); per thread, all threads)."""
  processes = _metadata_names(events, "process_name")
  threads = _metadata_names(events, "thread_name")
  pids = {pid for pid, name in processes.items() if process.lower() in name.lower()}
  if not pids:
    raise ValueError(f"no process named like {process!r} in the trace; processes: "
                     f"{sorted(set(processes.values()))}")
  totals, per_thread = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") != "X" or e.get("pid") not in pids:
      continue
    thread_name = threads.get((e["pid"], e.get("tid")), str(e.get("tid")))
    per_thread[thread_name] += float(e.get("dur", 0.0))
    if thread.lower() in thread_name.lower():
      totals[e.get("name", "?")] += float(e.get("dur", 0.0))
  return totals, per_thread


def summarise(totals: dict[str, float], steps: int, top: int) -> str:
  """A text table: time per kind, then the `top` kernels, in ms per step."""
  per_kind = collections.Counter()
  for name, us in totals.items():
    per_kind[kind_of(name)] += us
  total = sum(totals.values())
  if not total:
    return "no kernel events found"
  lines = [f"device time {total / 1e3 / steps:.1f} ms per step over {len(totals)} kernel "
           "names", "", "kind              ms/step   share"]
  for kind, us in per_kind.most_common():
    lines.append(f"{kind:<16} {us / 1e3 / steps:8.1f}  {100 * us / total:5.1f}%")
  lines += ["", f"top {top} kernels     ms/step   share  kind"]
  for name, us in totals.most_common(top):
    lines.append(f"{us / 1e3 / steps:8.2f}  {100 * us / total:5.1f}%  {kind_of(name):<13} "
                 f"{name[:110]}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("path", help="--profile_dir of train_step.py, or a trace file")
  parser.add_argument("--steps", type=int, default=1, help="steps in the trace")
  parser.add_argument("--top", type=int, default=30)
  parser.add_argument("--process", default="/device:GPU:0",
                      help="trace process whose events count (substring)")
  parser.add_argument("--thread", default="",
                      help="only threads named like this (substring; e.g. 'Stream' for "
                      "the GPU's kernel streams, leaving out derived op/module lines)")
  parser.add_argument("--show_args", type=int, default=0,
                      help="also print the trace args of this many longest events")
  args = parser.parse_args(argv)
  path = find_trace(args.path)
  print(f"trace {path}")
  events = load_events(path)
  totals, per_thread = kernel_durations(events, args.process, args.thread)
  print("all threads (ms/step): " + "; ".join(
      f"{name} {us / 1e3 / args.steps:.1f}" for name, us in per_thread.most_common(12)))
  print(summarise(totals, args.steps, args.top))
  if args.show_args:
    longest = sorted((e for e in events if e.get("ph") == "X" and e.get("name") in totals),
                     key=lambda e: -float(e.get("dur", 0.0)))[:args.show_args]
    for e in longest:
      print(f"{float(e.get('dur', 0)) / 1e3:.2f} ms {e.get('name')}: {e.get('args', {})}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
