r"""Load on `python -m jf_jax.serve`: requests/s and p50/p99 latency at 1, 4 and 16
concurrent clients, for images and for chat, against the engine's own throughput at the
server's largest batch, measured in the same run.

  flock /tmp/jf_cpu.lock python benchmarks/serve_load.py            # tiny model, CPU
  python benchmarks/serve_load.py --checkpoint /ckpt/jf_1p3b --vae /ckpt/sdxl-vae \
      --steps 30 --max_tokens 64 --duration 60                       # a real checkpoint

Without --checkpoint a tiny random pixel-space checkpoint (tests/tiny_checkpoint.py) is
written to a temporary folder. Each client is a thread sending one request
after another (closed loop) for --duration seconds through the official openai client.
The engine figure runs the same rows through `Engine.generate_rows` / `answer_rows` in
this process after the server has stopped (the two never share the CPUs), at each batch
bucket (the target compares with the largest).

The diagnostic printed after the ratios separates the causes of a shortfall: what
batching can give at all (the engine at the largest bucket / at batch 1: the ceiling of
"N clients / one client" once one client keeps the device busy), and the CPU per request
at the top load, split into the device's (the server's batching thread + XLA's pool
threads, from /proc), the server's host work (HTTP, JSON, images, queue: the rest of its
CPU) and the openai clients' (this process), with the cores that 0.9x the engine would
need at that cost: on a CPU backend server, clients and device share the same cores.
Prints one line per measurement and a JSON summary.

--profile FILE runs the server under py-spy (`pip install py-spy`; sampling from outside
the process, on-CPU stacks only) and prints where the server's host CPU goes per request:
the event loop's and the worker threads' stacks, by function, inclusive. Profile a single
load (e.g. `--kinds chat --clients 16`): the samples of the startup and the batcher's
threads are left out, the rest is divided by that load's requests.
"""

import argparse
import base64
import concurrent.futures
import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import openai
from PIL import Image
from prometheus_client import parser as prom_parser

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", default=None, help="default: a tiny random checkpoint")
  p.add_argument("--vae", default=None, help="SDXL-VAE of a latent-space checkpoint")
  p.add_argument("--clients", default="1,4,16")
  p.add_argument("--kinds", default="image,chat", help="which loads, in order")
  p.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
  p.add_argument("--engine_duration", type=float, default=5.0,
                 help="seconds per engine measurement (one per batch bucket)")
  p.add_argument("--steps", type=int, default=10, help="ODE steps per image")
  p.add_argument("--max_tokens", type=int, default=16, help="token limit per answer")
  p.add_argument("--gen_prompt_bucket", type=int, default=64)
  p.add_argument("--und_prompt_bucket", type=int, default=128, help="768 for the release")
  p.add_argument("--batch", type=int, default=16, help="the server's largest batch bucket")
  p.add_argument("--buckets", default="1,4",
                 help="the server's smaller batch buckets (with --batch)")
  p.add_argument("--max_wait_ms", type=float, default=20.0)
  p.add_argument("--rejoin_wait_ms", type=float, default=None,
                 help="default: the server's config.rejoin_wait_ms")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--server_flags", default="", help="more flags for jf_jax.serve")
  p.add_argument("--out", default=None, help="write the JSON summary here")
  p.add_argument("--profile", default=None,
                 help="py-spy the server; its raw stacks go to this file (see the doc)")
  p.add_argument("--profile_rate", type=int, default=200, help="py-spy samples per second")
  return p.parse_args()


def tiny_checkpoint(folder: str) -> str:
  sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny checkpoint writer
  import tiny_checkpoint as tiny  # pylint: disable=g-import-not-at-top
  return tiny.write_params_dir(os.path.join(folder, "ckpt"))


def engine_config(args):
  from jf_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  config = engine_lib.default_config()
  config.batch_buckets = tuple(sorted({*map(int, args.buckets.split(",")), args.batch}))
  # One prompt and one answer bucket: the compile count stays 3 x 2 at startup.
  config.gen_prompt_buckets = (args.gen_prompt_bucket,)
  config.und_prompt_buckets = (args.und_prompt_bucket,)
  config.max_tokens_buckets = (args.max_tokens,)
  return config


def server_flags(args, checkpoint: str, port: int) -> list[str]:
  config = engine_config(args)
  flags = [f"--checkpoint={checkpoint}", f"--port={port}", f"--config.devices={args.devices}",
           f"--config.max_wait_ms={args.max_wait_ms}",
           *([] if args.rejoin_wait_ms is None
             else [f"--config.rejoin_wait_ms={args.rejoin_wait_ms}"]),
           f"--config.engine.batch_buckets={tuple(config.batch_buckets)}",
           f"--config.engine.gen_prompt_buckets={tuple(config.gen_prompt_buckets)}",
           f"--config.engine.und_prompt_buckets={tuple(config.und_prompt_buckets)}",
           f"--config.engine.max_tokens_buckets={tuple(config.max_tokens_buckets)}",
           f"--config.limits.max_queue={4 * args.batch * 16}"]
  if args.vae:
    flags.append(f"--vae={args.vae}")
  return flags + args.server_flags.split()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def png_data_url(size: int, seed: int) -> str:
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)
                  ).save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def percentile(values, q) -> float:
  return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load(clients: int, duration: float, request) -> dict:
  """Closed-loop load: `clients` threads call request(i) until `duration` has passed."""
  latencies, lock, stop_at = [], threading.Lock(), time.perf_counter() + duration
  start = time.perf_counter()

  def client(c):
    i = 0
    while time.perf_counter() < stop_at:
      t0 = time.perf_counter()
      request(c * 100_000 + i)
      with lock:
        latencies.append(time.perf_counter() - t0)
      i += 1

  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    list(pool.map(client, range(clients)))
  elapsed = time.perf_counter() - start
  return {"clients": clients, "requests": len(latencies), "elapsed_s": elapsed,
          "requests_per_s": len(latencies) / elapsed,
          "p50_ms": 1e3 * percentile(latencies, 50), "p99_ms": 1e3 * percentile(latencies, 99)}


def _cpu_s(stat: str) -> float:
  fields = stat.rsplit(")", 1)[1].split()  # utime, stime: fields 14 and 15 of proc(5)
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> tuple[float, float]:
  """(all threads, XLA's CPU pool threads) CPU seconds of process `pid` so far (Linux)."""
  total, pool = _cpu_s(pathlib.Path(f"/proc/{pid}/stat").read_text()), 0.0
  for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
    try:
      stat = (task / "stat").read_text()
    except OSError:  # the thread ended
      continue
    if "XLAEigen" in stat[stat.index("(") + 1:stat.rindex(")")]:
      pool += _cpu_s(stat)
  return total, pool


def server_counters(base: str, kind: str) -> dict[str, float]:
  """The server's batch-row sum/count and device seconds for `kind`, its device busy time
and its batcher threads' CPU seconds (from /metrics)."""
  wanted = {"jf_batch_rows_sum": "rows", "jf_batch_rows_count": "batches",
            "jf_device_seconds_total": "device_s", "jf_device_busy_seconds": "device_busy_s",
            "jf_worker_cpu_seconds": "worker_cpu_s"}
  out = dict.fromkeys(wanted.values(), 0.0)
  for family in prom_parser.text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
    for s in family.samples:
      if s.name in wanted and s.labels.get("kind", kind) == kind:
        out[wanted[s.name]] += s.value
  return out


def measure_server(args, checkpoint: str) -> tuple[dict, dict]:
  port = free_port()
  env = dict(os.environ, PYTHONPATH=str(REPO))
  command = [sys.executable, "-m", "jf_jax.serve", *server_flags(args, checkpoint, port)]
  if args.profile:
    command = ["py-spy", "record", "--format", "raw", "--function", "--nonblocking",
               f"--rate={args.profile_rate}", f"--output={args.profile}", "--", *command]
  proc = subprocess.Popen(command, cwd=REPO, env=env)
  base = f"http://127.0.0.1:{port}"
  server_pid = proc.pid
  try:
    t0 = time.time()
    while True:
      if proc.poll() is not None:
        raise SystemExit("the server exited during startup")
      try:
        health = httpx.get(f"{base}/health", timeout=5)
        if health.status_code == 200:
          break
      except httpx.TransportError:
        pass
      time.sleep(1)
    print(f"server ready in {time.time() - t0:.0f}s: {health.json()}", flush=True)
    if args.profile:  # py-spy's child is the server
      server_pid = int(pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                       .read_text().split()[0])
    size = health.json()["image_size"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0,
                           timeout=600, http_client=httpx.Client(
                               limits=httpx.Limits(max_connections=64)))
    image_url = png_data_url(64, 0)

    def image(i):
      client.images.generate(prompt="a red circle to the left of a blue square", n=1,
                             response_format="b64_json",
                             extra_body={"steps": args.steps, "seed": i})

    def chat(i):
      client.chat.completions.create(model="m", max_tokens=args.max_tokens, messages=[
          {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                       {"type": "text", "text": "how many shapes are there?"}]}])

    out = {"image": [], "chat": []}
    for kind, fn in [(k, {"image": image, "chat": chat}[k]) for k in args.kinds.split(",")]:
      fn(0)  # first request outside the timing
      for clients in [int(c) for c in args.clients.split(",")]:
        before = server_counters(base, kind)
        (cpu0, pool0), client_cpu0 = process_cpu_s(server_pid), time.process_time()
        row = load(clients, args.duration, fn)
        (cpu1, pool1), client_cpu1 = process_cpu_s(server_pid), time.process_time()
        after = server_counters(base, kind)
        batches = max(after["batches"] - before["batches"], 1)
        row["mean_batch_rows"] = (after["rows"] - before["rows"]) / batches
        row["device_s"] = after["device_busy_s"] - before["device_busy_s"]
        row["device_share"] = row["device_s"] / row["elapsed_s"]
        row["server_cpu_s"] = cpu1 - cpu0
        # The device's CPU: the batching thread (it runs each call and waits on it) plus
        # XLA's pool threads; the rest is host work (HTTP, JSON, PNG, queue).
        row["device_cpu_s"] = (pool1 - pool0) + (after["worker_cpu_s"]
                                                 - before["worker_cpu_s"])
        row["client_cpu_s"] = client_cpu1 - client_cpu0
        out[kind].append(row)
        print(f"server {kind}: {clients:2d} clients: {row['requests_per_s']:.2f} req/s, "
              f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, mean batch "
              f"{row['mean_batch_rows']:.1f} rows, device busy "
              f"{100 * row['device_share']:.0f}% of the time", flush=True)
    metrics = httpx.get(f"{base}/metrics").text
    return out, {"image_size": size, "metrics_lines": len(metrics.splitlines())}
  finally:
    os.kill(server_pid, signal.SIGTERM)
    proc.wait(timeout=300)


def measure_engine(args, checkpoint: str) -> dict:
  """The engine alone at each batch bucket, same rows as the requests: rows/s and the
  CPU cores its calls keep busy (process CPU seconds per wall second)."""
  from jf_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from jf_jax.inference import loader  # pylint: disable=g-import-not-at-top
  from jf_jax.serve import media  # pylint: disable=g-import-not-at-top
  loaded = loader.load(checkpoint, vae=args.vae)
  engine = engine_lib.Engine(loaded, engine_config(args), engine_lib.local_mesh(args.devices))
  (gen_ids, gen_mask), = engine.generation_rows(["a red circle to the left of a blue square"])
  image = media.decode_data_url(png_data_url(64, 0), "image", 1 << 30)
  row, = engine.understanding_rows([image], ["how many shapes are there?"])
  budget = engine_lib.bucket(args.max_tokens, engine.config.max_tokens_buckets)

  def images(i, b):
    engine.generate_rows(np.stack([gen_ids] * b), np.stack([gen_mask] * b),
                         engine_lib.request_keys(i, b), steps=args.steps, guidance=2.0)

  def answers(i, b):
    engine.answer_rows({k: np.stack([v] * b) for k, v in row.items()},
                       engine_lib.request_keys(i, b), max_new_tokens=budget,
                       limits=np.full(b, args.max_tokens), temperature=np.zeros(b),
                       top_p=np.ones(b))

  out = {"image": {}, "chat": {}}
  for kind, fn in [(k, {"image": images, "chat": answers}[k]) for k in args.kinds.split(",")]:
    for b in engine.batch_buckets:
      fn(0, b)  # compile
      calls, t0, cpu0 = 0, time.perf_counter(), time.process_time()
      while time.perf_counter() - t0 < args.engine_duration:
        fn(calls, b)
        calls += 1
      elapsed = time.perf_counter() - t0
      out[kind][b] = {"calls": calls, "requests_per_s": calls * b / elapsed,
                      "cores": (time.process_time() - cpu0) / elapsed}
      print(f"engine {kind}: batch {b:2d}: {out[kind][b]['requests_per_s']:.2f} rows/s, "
            f"{1e3 * elapsed / calls:.0f} ms per call, {out[kind][b]['cores']:.2f} cores "
            "busy", flush=True)
  return out


# Where a py-spy stack comes from, by a frame it holds (the first match wins).
_THREADS = (("batcher", ("_dispatch_loop", "_finish_loop")),
            ("startup", ("warm (", "warmup (")),
            ("worker threads", ("anyio/_backends", "concurrent/futures/thread.py")),
            ("event loop", ("uvicorn/server.py",)))


def profile_table(path: str, rate: int, requests: int, top: int = 25) -> dict:
  """Host CPU ms per request by function (inclusive) from py-spy's raw stacks: the event
  loop's and the worker threads' samples; the batcher's and the startup's left out."""
  by_thread, by_function = {}, {}
  for line in pathlib.Path(path).read_text().splitlines():
    stack, _, count = line.rpartition(" ")
    if not stack:
      continue
    frames, count = stack.split(";"), int(count)
    where = next((name for name, marks in _THREADS
                  if any(m in f for f in frames for m in marks)), "other (imports, load)")
    by_thread[where] = by_thread.get(where, 0) + count
    if where in ("worker threads", "event loop"):
      for f in set(frames):
        by_function[f] = by_function.get(f, 0) + count
  ms = lambda samples: 1e3 * samples / rate / max(requests, 1)
  print(f"profile ({path}, {rate} Hz): on-CPU ms per request by thread: "
        + ", ".join(f"{k} {ms(v):.2f}" for k, v in sorted(by_thread.items())), flush=True)
  rows = sorted(by_function.items(), key=lambda kv: -kv[1])[:top]
  for f, samples in rows:
    print(f"  {ms(samples):6.3f} ms  {f}", flush=True)
  return {"threads_ms": {k: ms(v) for k, v in by_thread.items()},
          "functions_ms": {f: ms(v) for f, v in rows}}


def main():
  args = parse()
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = args.checkpoint or tiny_checkpoint(tmp)
    server, info = measure_server(args, checkpoint)
    engine = measure_engine(args, checkpoint)
  summary = {"server": server, "engine": engine, **info}
  for kind in args.kinds.split(","):
    by_clients = {r["clients"]: r for r in server[kind]}
    top, one = max(by_clients), min(by_clients)
    rate = {c: r["requests_per_s"] for c, r in by_clients.items()}
    eng = engine[kind]
    big, small = max(eng), min(eng)
    summary[f"{kind}_server_vs_engine"] = rate[top] / eng[big]["requests_per_s"]
    summary[f"{kind}_top_vs_one_client"] = rate[top] / rate[one]
    summary[f"{kind}_engine_batch_gain"] = (eng[big]["requests_per_s"]
                                            / eng[small]["requests_per_s"])
    print(f"{kind}: {top} clients = {summary[f'{kind}_server_vs_engine']:.2f}x the engine at "
          f"batch {big}, {summary[f'{kind}_top_vs_one_client']:.2f}x one client",
          flush=True)
    # The diagnostic: what batching can give (engine batch big vs small) and the CPU each
    # request costs outside the device call, in the server and in its openai client (the
    # clients share the cores with the server).
    print(f"{kind} diagnostic: engine batch {big} / batch {small} = "
          f"{summary[f'{kind}_engine_batch_gain']:.2f}x", flush=True)
    for c, r in sorted(by_clients.items()):
      n = max(r["requests"], 1)
      r["device_ms"] = 1e3 * r["device_s"] / n
      r["device_cpu_ms"] = 1e3 * r["device_cpu_s"] / n
      r["host_cpu_ms"] = 1e3 * (r["server_cpu_s"] - r["device_cpu_s"]) / n
      r["client_cpu_ms"] = 1e3 * r["client_cpu_s"] / n
      print(f"  {c:2d} clients, per request: device {r['device_ms']:.1f} ms wall / "
            f"{r['device_cpu_ms']:.1f} ms CPU, server host CPU {r['host_cpu_ms']:.1f} ms, "
            f"client CPU {r['client_cpu_ms']:.1f} ms; busy cores: server "
            f"{r['server_cpu_s'] / r['elapsed_s']:.2f}, clients "
            f"{r['client_cpu_s'] / r['elapsed_s']:.2f} of {os.cpu_count()}", flush=True)
    # Whether 0.9x the engine fits in the cores at all: the CPU one request costs at the
    # top load (device + server host + client) times 0.9x the engine's rate.
    r = by_clients[top]
    cpu_ms = r["device_cpu_ms"] + r["host_cpu_ms"] + r["client_cpu_ms"]
    summary[f"{kind}_cores_for_0.9x"] = 0.9 * eng[big]["requests_per_s"] * cpu_ms / 1e3
    print(f"  0.9x the engine ({0.9 * eng[big]['requests_per_s']:.1f} req/s) at "
          f"{cpu_ms:.1f} ms CPU per request needs "
          f"{summary[f'{kind}_cores_for_0.9x']:.2f} cores; the machine has "
          f"{os.cpu_count()}", flush=True)
  if args.profile:
    r = server[args.kinds.split(",")[-1]][-1]  # the last load: the one to profile
    summary["profile"] = profile_table(args.profile, args.profile_rate, r["requests"])
  print(json.dumps(summary))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
