r"""`python -m jf_jax.serve`: serve a checkpoint over an OpenAI-compatible HTTP API.

  python -m jf_jax.serve --checkpoint /ckpt/jf_1p3b --vae /ckpt/sdxl-vae \
      [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--quantize int8] \
      [--config.limits.max_n=8]

--checkpoint is a params directory or a training workdir, a LoRA run's included (its
adapters are merged into the base its config names, once at load). --quantize int8
quantizes the LLM's kernels once at load (weight-only, Qwix PTQ: jf_jax/lora/quantize.py).

Binds 127.0.0.1 unless --host says otherwise. Every bucket compiles at startup; GET
/health answers 503 until then. SIGTERM (or Ctrl-C) stops intake and finishes the
requests in flight. Endpoints, limits and examples: docs/serving.md.
"""

import os
import signal
import threading
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import uvicorn

from jf_jax.inference import engine as engine_lib
from jf_jax.inference import loader
from jf_jax.serve import app as app_lib
from jf_jax.serve import config as config_lib
from jf_jax.serve import service as service_lib

_CONFIG = config_flags.DEFINE_config_dict("config", config_lib.default_config(),
                                          "Server settings (jf_jax/serve/config.py).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params dir or training workdir "
                                  "(a LoRA run's too).", required=True)
_STEP = flags.DEFINE_integer("step", None, "Training step of a workdir --checkpoint to serve "
                             "(default its latest checkpoint).", lower_bound=0)
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"],
                              "Weight-only quantization of the LLM's kernels (Qwix PTQ, "
                              "done once at load).")
_VAE = flags.DEFINE_string("vae", None, "SDXL-VAE (diffusers dir or file) of a latent-space "
                           "model (default: the run's config.vae.path or DIR/vae).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Directory with tokenizer.json.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype.")
_NO_IMAGES = flags.DEFINE_bool("no_images", False, "Serve chat only (no image decoder).")
_HOST = flags.DEFINE_string("host", None, "Bind address (default config.host, 127.0.0.1).")
_PORT = flags.DEFINE_integer("port", None, "Port (default config.port, 8000).")
_API_KEY = flags.DEFINE_string("api_key", None, "Require 'Authorization: Bearer KEY'.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  for key, flag in (("host", _HOST), ("port", _PORT), ("api_key", _API_KEY)):
    if flag.value is not None:
      config[key] = flag.value
  t0 = time.time()
  loaded = loader.load(_CHECKPOINT.value, tokenizer=_TOKENIZER.value, vae=_VAE.value,
                       image_decoder=not _NO_IMAGES.value, dtype=_DTYPE.value,
                       step=_STEP.value, quantize=_QUANTIZE.value)
  engine = engine_lib.Engine(loaded, config.engine,
                             engine_lib.local_mesh(config.devices or None))
  name = config.model_name or os.path.basename(os.path.normpath(_CHECKPOINT.value))
  service = service_lib.Service(engine, config, name)
  at = f" (step {loaded.step})" if loaded.step is not None else ""
  int8 = " int8" if loaded.quantize else ""
  print(f"loaded{int8} {os.path.abspath(_CHECKPOINT.value)}{at} in {time.time() - t0:.1f}s on "
        f"{engine.mesh.size} device(s); compiling the buckets...", flush=True)

  def warm():
    t0 = time.time()
    count = service.warmup()
    print(f"ready: {count} shapes compiled in {time.time() - t0:.1f}s; serving "
          f"http://{config.host}:{config.port}/", flush=True)

  threading.Thread(target=warm, name="jf-warmup", daemon=True).start()
  server = uvicorn.Server(uvicorn.Config(
      app_lib.create_app(service), host=config.host, port=config.port, log_level="warning",
      timeout_graceful_shutdown=int(config.shutdown_timeout_s)))
  # uvicorn answers the requests in flight on SIGTERM / SIGINT, then raises the signal
  # again for the handler it found: this one, so the process can still close the queue
  # and exit 0.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: None)
  server.run()
  service.batcher.close(timeout=config.shutdown_timeout_s)
  print("stopped", flush=True)


if __name__ == "__main__":
  app.run(main)
