"""Requests -> engine rows -> responses, around one engine and one batching queue.

Everything that can fail for one request (its JSON fields, its image, its prompt length)
is checked while building its rows, before it is queued, so a bad request never reaches
a batch it would share. A request without a seed gets a fresh one, returned in the
response (`seed`), so any result can be reproduced.
"""

import secrets
import threading
import time
from typing import Any, Callable, Hashable, Sequence

import ml_collections
import numpy as np

from jf_jax.inference import engine as engine_lib
from jf_jax.serve import batcher as batcher_lib
from jf_jax.serve import errors
from jf_jax.serve import media
from jf_jax.serve import metrics as metrics_lib
from jf_jax.serve import schemas

IMAGE, CHAT = "image", "chat"


def fresh_seed() -> int:
  return secrets.randbits(31)


class Service:
  """The server's state: engine, queue, metrics, readiness."""

  def __init__(self, engine: engine_lib.Engine, config: ml_collections.ConfigDict,
               model_name: str):
    self.engine, self.config, self.model_name = engine, config, model_name
    self.metrics = metrics_lib.Metrics()
    self.can_generate = engine.loaded.decode_fn is not None
    self.image_size = engine.image_size if self.can_generate else None
    self.ready = threading.Event()
    self.batcher = batcher_lib.Batcher(
        self._run, max_rows=max(engine.batch_buckets), max_wait_s=config.max_wait_ms / 1e3,
        rejoin_wait_s=config.rejoin_wait_ms / 1e3, max_queue=config.limits.max_queue,
        on_batch=self._record)
    self.metrics.worker_cpu.set_function(self.batcher.cpu_seconds)
    self.metrics.queue_rows.set_function(lambda: self.batcher.queued_rows)
    self.metrics.device_busy.set_function(lambda: self.engine.device_busy_seconds)

  # ------------------------------------------------------------------- startup
  def warmup(self) -> int:
    """Compiles every bucket (before /health says ready); returns the shapes compiled."""
    count = self.engine.warmup(images=self.can_generate)
    self.ready.set()
    return count

  # ------------------------------------------------------------- image requests
  def image_work(self, req: schemas.ImageRequest) -> tuple[Hashable, list, int]:
    """(group, rows, seed) of an image request; ApiError for a bad one."""
    limits, defaults = self.config.limits, self.config.defaults
    if not self.can_generate:
      raise errors.ApiError(400, "this server was started without an image decoder",
                            "prompt")
    if not req.prompt.strip():
      raise errors.ApiError(400, "prompt: must not be empty", "prompt")
    if req.n > limits.max_n:
      raise errors.ApiError(400, f"n: {req.n} is over the limit of {limits.max_n} images "
                            "per request", "n")
    supported = f"{self.image_size}x{self.image_size}"
    if req.size not in (None, supported):
      raise errors.ApiError(400, f"size: {req.size!r} is not supported; this model makes "
                            f"{supported} images", "size")
    steps = defaults.steps if req.steps is None else req.steps
    if steps > limits.max_steps:
      raise errors.ApiError(400, f"steps: {steps} is over the limit of {limits.max_steps}",
                            "steps")
    guidance = defaults.guidance if req.guidance is None else req.guidance
    (ids, mask), = self.engine.generation_rows([req.prompt])
    longest = max(self.engine.config.gen_prompt_buckets)
    if len(ids) > longest:
      raise errors.ApiError(400, f"prompt: {int(mask.sum())} tokens is over the limit of "
                            f"{longest}", "prompt")
    seed = fresh_seed() if req.seed is None else req.seed
    rows = [(ids, mask, seed, i) for i in range(req.n)]  # image i: fold_in(key(seed), i)
    return (IMAGE, len(ids), steps, float(guidance)), rows, seed

  def image_response(self, images: Sequence[np.ndarray], seed: int, steps: int,
                     guidance: float) -> dict[str, Any]:
    return {"created": int(time.time()), "seed": seed, "steps": steps, "guidance": guidance,
            "size": f"{self.image_size}x{self.image_size}",
            "data": [{"b64_json": media.png_base64(im), "revised_prompt": None}
                     for im in images]}

  # -------------------------------------------------------------- chat requests
  def chat_inputs(self, req: schemas.ChatRequest) -> tuple[np.ndarray, str]:
    """(image, question): the one image of the conversation and the last user text."""
    if not req.messages:
      raise errors.ApiError(400, "messages: must hold at least one message", "messages")
    images, question = [], None
    for i, message in enumerate(req.messages):
      if message.role != "user":
        continue
      parts = ([schemas.ContentPart(type="text", text=message.content)]
               if isinstance(message.content, str) else message.content or [])
      texts = []
      for j, part in enumerate(parts):
        field = f"messages[{i}].content[{j}]"
        if part.type == "text":
          if part.text is None:
            raise errors.ApiError(400, f"{field}.text: missing", f"{field}.text")
          texts.append(part.text)
        else:
          if part.image_url is None:
            raise errors.ApiError(400, f"{field}.image_url: missing", f"{field}.image_url")
          images.append(media.decode_data_url(part.image_url.url, f"{field}.image_url",
                                              self.config.limits.max_image_pixels))
      question = " ".join(t.strip() for t in texts if t.strip()) or None
    if question is None:
      raise errors.ApiError(400, "messages: the last user message has no text", "messages")
    if len(images) != 1:
      raise errors.ApiError(400, f"messages: this model answers about exactly one image per "
                            f"conversation; got {len(images)} image_url parts", "messages")
    return images[0], question

  def chat_work(self, req: schemas.ChatRequest) -> tuple[Hashable, list, int]:
    """(group, rows, seed) of a chat request; ApiError for a bad one."""
    defaults = self.config.defaults
    image, question = self.chat_inputs(req)
    limit = max(self.engine.config.max_tokens_buckets)
    max_tokens = (req.max_completion_tokens or req.max_tokens
                  or min(defaults.max_tokens, limit))
    if max_tokens > limit:
      raise errors.ApiError(400, f"max_tokens: {max_tokens} is over the limit of {limit}",
                            "max_tokens")
    row, = self.engine.understanding_rows([image], [question])
    longest = max(self.engine.config.und_prompt_buckets)
    if len(row["ids"]) > longest:
      raise errors.ApiError(400, f"messages: the prompt is {int(row['valid'].sum())} tokens, "
                            f"over the limit of {longest}", "messages")
    seed = fresh_seed() if req.seed is None else req.seed
    temperature = defaults.temperature if req.temperature is None else req.temperature
    top_p = defaults.top_p if req.top_p is None else req.top_p
    budget = engine_lib.bucket(max_tokens, self.engine.config.max_tokens_buckets)
    return (CHAT, len(row["ids"]), budget), [(row, seed, max_tokens, temperature, top_p)], seed

  def answer(self, req: schemas.ChatRequest, result: tuple[np.ndarray, int]) -> dict:
    """{'text', 'pieces' (streamed deltas), 'finish_reason', 'completion_tokens'}."""
    tok = self.engine.loaded.tok
    tokens, length = result
    ids = tokens[:length].tolist()
    finish = "stop" if ids and ids[-1] == tok.eos_id else "length"
    text = tok.decode(ids).strip()
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    if cuts:
      text, finish = text[:min(cuts)], "stop"
    pieces, sent = [], ""
    for i in range(1, len(ids) + 1):  # deltas: the growing decoded prefix, up to `text`
      prefix = tok.decode(ids[:i]).strip()[:len(text)]
      if len(prefix) > len(sent) and text.startswith(prefix):
        pieces.append(prefix[len(sent):])
        sent = prefix
    if sent != text:
      pieces.append(text[len(sent):])
    return {"text": text, "pieces": pieces, "finish_reason": finish,
            "completion_tokens": len(ids)}

  # -------------------------------------------------------------- device calls
  def _run(self, group: Hashable, rows: list) -> batcher_lib.FetchFn:
    """Dispatches one batch of rows of one group (the batcher's dispatching thread);
    returns the function that waits for its results (its finishing thread)."""
    if group[0] == IMAGE:
      _, _, steps, guidance = group
      pending = self.engine.start_generate_rows(
          np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
          engine_lib.row_keys([r[2] for r in rows], [r[3] for r in rows]), steps=steps,
          guidance=guidance)
      return lambda: self._fetched(IMAGE, pending, list)
    _, _, budget = group
    stacked = {k: np.stack([r[0][k] for r in rows]) for k in rows[0][0]}
    pending = self.engine.start_answer_rows(
        stacked, engine_lib.row_keys([r[1] for r in rows], [0] * len(rows)),
        max_new_tokens=budget,
        limits=np.array([r[2] for r in rows]), temperature=np.array([r[3] for r in rows]),
        top_p=np.array([r[4] for r in rows]))
    return lambda: self._fetched(CHAT, pending, lambda out: list(zip(*out)))

  def _fetched(self, kind: str, pending: engine_lib.Pending, rows: Callable) -> list:
    """The batch's results as rows (the finishing thread), its device calls counted."""
    out = rows(pending.result())
    self.metrics.device_calls.labels(kind).inc(pending.calls)
    self.metrics.device_seconds.labels(kind).inc(pending.seconds)
    return out

  def _record(self, group: Hashable, batch: list, started: float) -> None:
    """A batch's sizes and queue waits (the batcher's finishing thread)."""
    kind = group[0]
    m = self.metrics
    m.batch_rows.labels(kind).observe(sum(len(w.rows) for w in batch))
    m.batch_requests.labels(kind).observe(len(batch))
    for work in batch:
      m.queue_wait.labels(kind).observe(started - work.enqueued)
