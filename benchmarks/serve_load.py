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
this process after the server has stopped (the two never share the CPUs), at the largest
batch bucket. Prints one line per measurement and a JSON summary.
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
  p.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
  p.add_argument("--steps", type=int, default=10, help="ODE steps per image")
  p.add_argument("--max_tokens", type=int, default=16, help="token limit per answer")
  p.add_argument("--gen_prompt_bucket", type=int, default=64)
  p.add_argument("--und_prompt_bucket", type=int, default=128, help="768 for the release")
  p.add_argument("--batch", type=int, default=16, help="the server's largest batch bucket")
  p.add_argument("--max_wait_ms", type=float, default=20.0)
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--server_flags", default="", help="more flags for jf_jax.serve")
  p.add_argument("--out", default=None, help="write the JSON summary here")
  return p.parse_args()


def tiny_checkpoint(folder: str) -> str:
  sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny checkpoint writer
  import tiny_checkpoint as tiny  # pylint: disable=g-import-not-at-top
  return tiny.write_params_dir(os.path.join(folder, "ckpt"))


def engine_config(args):
  from jf_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  config = engine_lib.default_config()
  config.batch_buckets = tuple(sorted({1, 4, args.batch}))
  # One prompt and one answer bucket: the compile count stays 3 x 2 at startup.
  config.gen_prompt_buckets = (args.gen_prompt_bucket,)
  config.und_prompt_buckets = (args.und_prompt_bucket,)
  config.max_tokens_buckets = (args.max_tokens,)
  return config


def server_flags(args, checkpoint: str, port: int) -> list[str]:
  config = engine_config(args)
  flags = [f"--checkpoint={checkpoint}", f"--port={port}", f"--config.devices={args.devices}",
           f"--config.max_wait_ms={args.max_wait_ms}",
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


def server_counters(base: str, kind: str) -> dict[str, float]:
  """The server's batch-row sum/count and device seconds for `kind` (from /metrics)."""
  wanted = {"jf_batch_rows_sum": "rows", "jf_batch_rows_count": "batches",
            "jf_device_seconds_total": "device_s"}
  out = dict.fromkeys(wanted.values(), 0.0)
  for family in prom_parser.text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
    for s in family.samples:
      if s.name in wanted and s.labels.get("kind") == kind:
        out[wanted[s.name]] += s.value
  return out


def measure_server(args, checkpoint: str) -> tuple[dict, dict]:
  port = free_port()
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen([sys.executable, "-m", "jf_jax.serve",
                           *server_flags(args, checkpoint, port)], cwd=REPO, env=env)
  base = f"http://127.0.0.1:{port}"
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
    for kind, fn in (("image", image), ("chat", chat)):
      fn(0)  # first request outside the timing
      for clients in [int(c) for c in args.clients.split(",")]:
        before = server_counters(base, kind)
        row = load(clients, args.duration, fn)
        after = server_counters(base, kind)
        batches = max(after["batches"] - before["batches"], 1)
        row["mean_batch_rows"] = (after["rows"] - before["rows"]) / batches
        row["device_share"] = (after["device_s"] - before["device_s"]) / row["elapsed_s"]
        out[kind].append(row)
        print(f"server {kind}: {clients:2d} clients: {row['requests_per_s']:.2f} req/s, "
              f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, mean batch "
              f"{row['mean_batch_rows']:.1f} rows, device busy "
              f"{100 * row['device_share']:.0f}% of the time", flush=True)
    metrics = httpx.get(f"{base}/metrics").text
    return out, {"image_size": size, "metrics_lines": len(metrics.splitlines())}
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)


def measure_engine(args, checkpoint: str) -> dict:
  """The engine alone at the server's largest batch, same rows as the requests."""
  from jf_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from jf_jax.inference import loader  # pylint: disable=g-import-not-at-top
  from jf_jax.serve import media  # pylint: disable=g-import-not-at-top
  loaded = loader.load(checkpoint, vae=args.vae)
  engine = engine_lib.Engine(loaded, engine_config(args), engine_lib.local_mesh(args.devices))
  b = args.batch
  (ids, mask), = engine.generation_rows(["a red circle to the left of a blue square"])
  ids, mask = np.stack([ids] * b), np.stack([mask] * b)
  image = media.decode_data_url(png_data_url(64, 0), "image", 1 << 30)
  row, = engine.understanding_rows([image], ["how many shapes are there?"])
  rows = {k: np.stack([v] * b) for k, v in row.items()}
  budget = engine_lib.bucket(args.max_tokens, engine.config.max_tokens_buckets)

  def images(i):
    engine.generate_rows(ids, mask, engine_lib.request_keys(i, b), steps=args.steps,
                         guidance=2.0)

  def answers(i):
    engine.answer_rows(rows, engine_lib.request_keys(i, b), max_new_tokens=budget,
                       limits=np.full(b, args.max_tokens), temperature=np.zeros(b),
                       top_p=np.ones(b))

  out = {}
  for kind, fn in (("image", images), ("chat", answers)):
    fn(0)  # compile
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.duration:
      fn(calls)
      calls += 1
    elapsed = time.perf_counter() - t0
    out[kind] = {"batch": b, "calls": calls, "requests_per_s": calls * b / elapsed}
    print(f"engine {kind}: batch {b}: {out[kind]['requests_per_s']:.2f} rows/s", flush=True)
  return out


def main():
  args = parse()
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = args.checkpoint or tiny_checkpoint(tmp)
    server, info = measure_server(args, checkpoint)
    engine = measure_engine(args, checkpoint)
  summary = {"server": server, "engine": engine, **info}
  for kind in ("image", "chat"):
    by_clients = {r["clients"]: r["requests_per_s"] for r in server[kind]}
    top = max(by_clients)
    summary[f"{kind}_server_vs_engine"] = by_clients[top] / engine[kind]["requests_per_s"]
    summary[f"{kind}_top_vs_one_client"] = by_clients[top] / by_clients[min(by_clients)]
    print(f"{kind}: {top} clients = {summary[f'{kind}_server_vs_engine']:.2f}x the engine at "
          f"batch {args.batch}, {summary[f'{kind}_top_vs_one_client']:.2f}x one client",
          flush=True)
  print(json.dumps(summary))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
