"""The server's settings: engine buckets, queue, limits, defaults (an ml_collections
config; `python -m jf_jax.serve --config.limits.max_n=8` overrides any of it)."""

import ml_collections

from jf_jax.inference import engine


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.engine = engine.default_config()
  config.host = "127.0.0.1"  # loopback unless asked: the server has no TLS
  config.port = 8000
  config.model_name = ""  # /v1/models id; default the checkpoint folder's name
  config.api_key = ""  # when set, /v1/* needs `Authorization: Bearer <api_key>`
  config.devices = 0  # the first N local devices; 0: all
  config.max_wait_ms = 20.0  # how long the first request of a batch waits for company
  # After a batch, how long the next one of its kind may wait for that batch's clients to
  # send again (closed-loop clients then share full batches; jf_jax/serve/batcher.py).
  config.rejoin_wait_ms = 150.0
  config.shutdown_timeout_s = 60.0  # SIGTERM: time given to requests in flight
  config.defaults = ml_collections.ConfigDict(dict(
      steps=30, guidance=2.0, max_tokens=64, temperature=0.0, top_p=1.0))
  config.limits = ml_collections.ConfigDict(dict(
      max_body_bytes=16 * 1024 * 1024,  # 413 past this
      max_image_pixels=4096 * 4096,  # 413 for a larger uploaded image
      max_n=8,  # images per request
      max_steps=200,
      max_queue=256,  # rows waiting; 429 past this
  ))
  return config
