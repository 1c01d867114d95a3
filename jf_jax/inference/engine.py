"""The inference engine: one per checkpoint, jitted once per bucketed shape, on a mesh.

  engine = Engine(loader.load(ckpt, vae=...))          # all local devices
  pixels = engine.generate(["a red circle"] * 4, keys=engine.request_keys(seed=0, n=4),
                           steps=30, guidance=2.0)       # uint8 [4, H, W, 3]
  answer, = engine.answer([image], ["What is this?"], keys=engine.request_keys(0, 1))

Everything static about a device call is bucketed from the row's own values: the batch
size to `batch_buckets`, a generation prompt's left padding to the smallest of
`gen_prompt_buckets` that holds it (positions count from the padded start, so the pad
length is part of a row's input), an understanding prompt to `und_prompt_buckets`, the
answer length to `max_tokens_buckets` (each row then stops at its own limit). Randomness
is a key per row (`request_keys`: fold_in(key(seed), index in the request)), so a row's
result never depends on which rows share its batch or device, and the same request with
the same seed gives the same pixels. Rows with different buckets never share a call.
(Bit for bit within one batch bucket; in another batch shape the compiler may round a
row differently, e.g. one pixel off by one on XLA:CPU.)

The engine is built once; its two jitted functions (sampler + image decoder, and the
answer decoder per answer-length bucket) keep one executable per shape, which `warmup`
compiles ahead (the server does, before /health says ready). Params are placed on the
mesh by the logical axis rules; batch rows split over ('data', 'fsdp').

`start_generate_rows` / `start_answer_rows` return once their calls are dispatched (JAX
runs them asynchronously) with a `Pending` whose `result()` waits for them: the server
forms and dispatches its next batch while the last one runs. `generate_rows` /
`answer_rows` are the same, waited for.
"""

import dataclasses
import threading
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.inference import loader
from jf_jax.models import janusflow
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import partition
from jf_jax.parallel import rules as rules_lib
from jf_jax.sampling import edit as edit_sampling
from jf_jax.sampling import image as image_sampling
from jf_jax.sampling import text as text_sampling

ROW_AXES = ("data", "fsdp")  # the mesh axes batch rows split over (`act_batch`)


def default_config() -> ml_collections.ConfigDict:
  """The engine's buckets and solver (`python -m jf_jax.serve` exposes them as flags)."""
  return ml_collections.ConfigDict(dict(
      # Few buckets: the server compiles every combination at startup.
      batch_buckets=(1, 4, 16),
      gen_prompt_buckets=(64, 128),
      und_prompt_buckets=(128, 256, 768),  # the release: 576 image tokens + the template
      max_tokens_buckets=(64, 512),
      solver="euler",
  ))


@dataclasses.dataclass(frozen=True)
class Answer:
  """One decoded answer: text (special tokens removed, stripped), its token counts and
  why it ended ('stop': EOS, 'length': the row's token limit)."""
  text: str
  prompt_tokens: int
  completion_tokens: int
  finish_reason: str


@jax.jit
def _fold_keys(seeds: jax.Array, indices: jax.Array) -> jax.Array:
  return jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seeds, indices)


def row_keys(seeds: Sequence[int], indices: Sequence[int]) -> jax.Array:
  """[n] keys fold_in(key(seeds[r]), indices[r]): row r is image (or answer) indices[r] of
  a request with seed seeds[r] (seeds below 2**31). One jitted dispatch for all rows."""
  return _fold_keys(np.asarray(seeds, np.uint32), np.asarray(indices, np.uint32))


def request_keys(seed: int, n: int, start: int = 0) -> jax.Array:
  """[n] keys fold_in(key(seed), i) for i in start..start+n-1 (row i of a request)."""
  return row_keys(np.full(n, seed), np.arange(start, start + n))


def bucket(value: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= value; past the largest, the next multiple of it (scripts
  may go there; the server refuses such requests before they reach the engine)."""
  for b in sorted(buckets):
    if value <= b:
      return b
  return -(-value // max(buckets)) * max(buckets)


def batch_sizes(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
  """(start, stop, bucket) chunks covering n rows: full largest buckets, then the
  smallest bucket holding what is left."""
  largest, out, start = max(buckets), [], 0
  while start < n:
    size = bucket(min(n - start, largest), buckets)
    out.append((start, min(start + size, n), size))
    start += size
  return out


def pad_rows(x, rows: int):
  """Repeats the last row up to `rows` rows (a fixed batch shape compiles once)."""
  if len(x) >= rows:
    return x
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def pad_keys(keys: jax.Array, rows: int) -> jax.Array:
  return keys if len(keys) >= rows else jnp.concatenate(
      [keys, jnp.repeat(keys[-1:], rows - len(keys), axis=0)])


def left_pad(ids: np.ndarray, mask: np.ndarray, length: int, pad_id: int,
             extra: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
  """Left-pads [n, S] ids (pad_id), mask and `extra` [n, S] bool arrays to `length`."""
  width = ((0, 0), (length - ids.shape[1], 0))
  return [np.pad(ids, width, constant_values=pad_id), np.pad(mask, width),
          *[np.pad(x, width) for x in extra]]


def local_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """('data', 'fsdp', 'tensor') = (local devices, 1, 1): replicated params, rows split
  over the devices (the inference default; pass another mesh to shard params).
  `num_devices`: the first N local devices (default all)."""
  devices = jax.local_devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"--devices={num_devices}: this process has {len(devices)} devices")
    devices = devices[:num_devices]
  return mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)


def image_decoder(loaded: loader.Loaded) -> tuple[image_sampling.DecodeFn, Any]:
  """(decode_fn, params) turning latents into images in [-1, 1]: the engine's one use of
  the checkpoint's generation space."""
  if loaded.decode_fn is None:
    raise ValueError("this engine has no image decoder: load the checkpoint with "
                     "image_decoder=True")
  return loaded.decode_fn, loaded.decode_params or {}


class Engine:
  """Batched text-to-image and answers for one loaded checkpoint (see the module doc)."""

  def __init__(self, loaded: loader.Loaded, config: ml_collections.ConfigDict | None = None,
               mesh: jax.sharding.Mesh | None = None):
    self.loaded = loaded
    self.config = config or default_config()
    self.mesh = mesh or local_mesh()
    self.rules = rules_lib.merge_rules(rules_lib.default_rules(),
                                       loaded.config.get("logical_axis_rules"))
    self.row_shards = int(np.prod([self.mesh.shape[a] for a in ROW_AXES]))
    # Every batch splits evenly over the row shards: buckets round up to multiples.
    self.batch_buckets = tuple(sorted({-(-b // self.row_shards) * self.row_shards
                                       for b in self.config.batch_buckets}))
    self._rows = NamedSharding(self.mesh, P(ROW_AXES))
    boxed = janusflow.abstract_params(loaded.model)["params"]
    self.params = jax.device_put(loaded.params,
                                 partition.mesh_shardings(boxed, self.mesh, self.rules))
    self._images_fn = None  # built on first use: an understanding-only engine has no decoder
    self._decode_params = None
    self._decoders: dict[int, Callable] = {}
    self._lock = threading.Lock()  # counters; device calls may come from several threads
    # device_seconds: each call's dispatch -> results on host, summed (calls may overlap);
    # device_busy_seconds: the time at least one call was in flight.
    self.device_calls, self.device_seconds, self.device_busy_seconds = 0, 0.0, 0.0
    self._in_flight, self._busy_since = 0, 0.0

  # ---------------------------------------------------------------------- helpers
  def _with_rules(self, fn: Callable) -> Callable:
    def wrapped(*args):
      with nn.logical_axis_rules(self.rules):
        return fn(*args)
    return wrapped

  def _shard(self, x):
    return jax.device_put(x, self._rows)

  def _start(self, fn: Callable, rows: int, *args) -> "_Call":
    """Dispatches one device call under the mesh and returns at once (JAX runs it
    asynchronously); its `fetch()` waits and gives its outputs' first `rows` on the host."""
    started = time.perf_counter()
    with self._lock:
      self.device_calls += 1
      if self._in_flight == 0:
        self._busy_since = started
      self._in_flight += 1
    try:
      with jax.set_mesh(self.mesh):
        out = fn(*args)
    except BaseException:
      self._finished(time.perf_counter() - started)
      raise
    return _Call(self, out, rows, started)

  def _finished(self, seconds: float) -> None:
    """A call's results reached the host: its time and the busy time (union of calls)."""
    with self._lock:
      self.device_seconds += seconds
      self._in_flight -= 1
      if self._in_flight == 0:
        self.device_busy_seconds += time.perf_counter() - self._busy_since

  def _call(self, fn: Callable, rows: int, *args):
    """One device call, waited for: its outputs' first `rows` on the host."""
    return self._start(fn, rows, *args).fetch()

  @property
  def image_size(self) -> int:
    """Side of the decoded images."""
    cfg = self.loaded.cfg
    decode_fn, decode_params = image_decoder(self.loaded)
    latents = jax.ShapeDtypeStruct((1, cfg.latent_size, cfg.latent_size,
                                    cfg.gen_encoder.in_channels), jnp.float32)
    return jax.eval_shape(decode_fn, decode_params, latents).shape[1]

  # ------------------------------------------------------------------ generation
  def _image_fn(self) -> Callable:
    if self._images_fn is None:
      decode_fn, decode_params = image_decoder(self.loaded)
      self._decode_params = jax.device_put(decode_params, NamedSharding(self.mesh, P()))
      sample = image_sampling.make_sample_fn(
          self.loaded.model, pad_id=self.loaded.tok.pad_id, solver=self.config.solver,
          decode_fn=decode_fn)

      def images(params, ids, mask, keys, steps, guidance, decode_params):
        return sample(params, ids, mask, keys, steps, guidance, decode_params)["images"]

      self._images_fn = jax.jit(self._with_rules(images), out_shardings=self._rows)
    return self._images_fn

  def generation_rows(self, captions: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each caption's (ids [Lp], mask [Lp]) left-padded to its own prompt bucket."""
    tok = self.loaded.tok
    rows = []
    for caption in captions:
      caption = tok.user_text(caption)  # lower-cased for a case-free vocabulary
      length = len(packing.gen_prompt_ids(tok, caption))
      row = packing.pack_gen(tok, caption, bucket(length, self.config.gen_prompt_buckets))
      rows.append((row["prompt_ids"], row["prompt_mask"]))
    return rows

  def start_generate_rows(self, ids: np.ndarray, mask: np.ndarray, keys: jax.Array, *,
                          steps: int, guidance: float) -> "Pending":
    """`generate_rows` dispatched: returns once its calls are on the device; the Pending's
    `result()` waits for the images."""
    fn, calls = self._image_fn(), []
    for lo, hi, size in batch_sizes(len(ids), self.batch_buckets):
      calls.append(self._start(
          fn, hi - lo, self.params, self._shard(pad_rows(ids[lo:hi], size)),
          self._shard(pad_rows(mask[lo:hi], size)), self._shard(pad_keys(keys[lo:hi], size)),
          jnp.int32(steps), jnp.float32(guidance), self._decode_params))
    return Pending(calls)

  def generate_rows(self, ids: np.ndarray, mask: np.ndarray, keys: jax.Array, *,
                    steps: int, guidance: float) -> np.ndarray:
    """uint8 [n, H, W, 3] from prompt rows of one length (ids, mask [n, Lp]) and their
    noise keys [n], in batches of `batch_buckets`."""
    return self.start_generate_rows(ids, mask, keys, steps=steps, guidance=guidance).result()

  def generate(self, captions: Sequence[str], *, keys: jax.Array, steps: int = 30,
               guidance: float = 2.0) -> np.ndarray:
    """uint8 [n, H, W, 3], one image per caption; keys: [n] (e.g. `request_keys`)."""
    if len(keys) != len(captions):
      raise ValueError(f"{len(captions)} captions but {len(keys)} keys")
    rows = self.generation_rows(captions)
    out: list[Any] = [None] * len(captions)
    for length, idx in _group([len(ids) for ids, _ in rows]).items():
      images = self.generate_rows(np.stack([rows[i][0] for i in idx]),
                                  np.stack([rows[i][1] for i in idx]),
                                  keys[np.asarray(idx)], steps=steps, guidance=guidance)
      for i, image in zip(idx, images):
        out[i] = image
    return np.stack(out)

  # --------------------------------------------------------------- understanding
  def _decoder(self, max_new_tokens: int) -> Callable:
    if max_new_tokens not in self._decoders:
      decode = text_sampling.make_decode_fn(self.loaded.model, max_new_tokens=max_new_tokens)
      tok = self.loaded.tok

      def answer(params, ids, valid, images, image_mask, keys, temperature, top_p, limits):
        return decode(params, ids, valid, keys, tok.eos_id, tok.pad_id, temperature, top_p,
                      images, image_mask, limits)

      self._decoders[max_new_tokens] = jax.jit(self._with_rules(answer),
                                               out_shardings=self._rows)
    return self._decoders[max_new_tokens]

  def understanding_rows(self, images: Sequence[Any], questions: Sequence[str]
                         ) -> list[dict[str, np.ndarray]]:
    """Each (image, question) as a row dict left-padded to its own prompt bucket:
    ids/valid/image_mask [S], images [1, s, s, 3] (SigLIP inputs)."""
    if len(questions) != len(images):
      raise ValueError(f"{len(questions)} questions but {len(images)} images")
    loaded, rows = self.loaded, []
    cfg, tok = loaded.cfg, loaded.tok
    for image, question in zip(images, questions):
      ids, flags = packing.und_prompt_ids(tok, tok.user_text(question),
                                          cfg.und_encoder.num_patches, loaded.system_prompt)
      ids, valid, flags, pixels = self._image_prompt(ids, flags, image)
      rows.append({"ids": ids, "valid": valid, "image_mask": flags, "images": pixels})
    return rows

  def _image_prompt(self, ids: list[int], flags: list[bool], image: Any):
    """A prompt holding an image's tokens, left-padded to its `und_prompt_buckets` bucket:
    (ids [S], mask [S], image_mask [S], SigLIP pixels [1, s, s, 3])."""
    seq = bucket(len(ids), self.config.und_prompt_buckets)
    ids, mask, flags = left_pad(np.asarray([ids], np.int32), np.ones((1, len(ids)), bool),
                                seq, self.loaded.tok.pad_id, [np.asarray([flags], bool)])
    size = self.loaded.cfg.und_encoder.image_size
    pixels = preprocess.und_image(preprocess.load_image(image), size)
    return ids[0], mask[0], flags[0], pixels[None]

  def start_answer_rows(self, rows: dict[str, np.ndarray], keys: jax.Array, *,
                        max_new_tokens: int, limits: np.ndarray, temperature: np.ndarray,
                        top_p: np.ndarray) -> "Pending":
    """`answer_rows` dispatched: returns once its calls are on the device; the Pending's
    `result()` waits for (tokens, lengths)."""
    fn, calls = self._decoder(max_new_tokens), []
    per_row = {"keys": keys, "limits": np.asarray(limits, np.int32),
               "temperature": np.asarray(temperature, np.float32),
               "top_p": np.asarray(top_p, np.float32)}
    for lo, hi, size in batch_sizes(len(rows["ids"]), self.batch_buckets):
      b = {k: self._shard(pad_rows(v[lo:hi], size)) for k, v in rows.items()}
      r = {k: self._shard(pad_keys(v[lo:hi], size) if k == "keys" else pad_rows(v[lo:hi], size))
           for k, v in per_row.items()}
      calls.append(self._start(fn, hi - lo, self.params, b["ids"], b["valid"], b["images"],
                               b["image_mask"], r["keys"], r["temperature"], r["top_p"],
                               r["limits"]))
    return Pending(calls)

  def answer_rows(self, rows: dict[str, np.ndarray], keys: jax.Array, *,
                  max_new_tokens: int, limits: np.ndarray, temperature: np.ndarray,
                  top_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n, max_new_tokens], lengths [n]) for rows of one shape (ids/valid/
    image_mask [n, S], images [n, 1, s, s, 3]) with per-row keys, limits, temperature and
    top_p [n]; `max_new_tokens` must be one of `max_tokens_buckets` (or any, outside the
    server: each value compiles once)."""
    return self.start_answer_rows(rows, keys, max_new_tokens=max_new_tokens, limits=limits,
                                  temperature=temperature, top_p=top_p).result()

  def answer(self, images: Sequence[Any], questions: Sequence[str], *, keys: jax.Array,
             max_new_tokens: int | Sequence[int] = 64, temperature: float | Sequence[float] = 0.0,
             top_p: float | Sequence[float] = 1.0) -> list[Answer]:
    """Answers to questions about images (uint8 [H, W, 3] arrays, encoded bytes or
    paths); settings are one value or one per row; temperature 0 is greedy."""
    n = len(questions)
    limits = np.broadcast_to(np.asarray(max_new_tokens, np.int32), (n,))
    temperature = np.broadcast_to(np.asarray(temperature, np.float32), (n,))
    top_p = np.broadcast_to(np.asarray(top_p, np.float32), (n,))
    if (limits < 1).any():
      raise ValueError(f"max_new_tokens must be >= 1, got {limits.min()}")
    rows = self.understanding_rows(images, questions)
    budget = [bucket(int(x), self.config.max_tokens_buckets) for x in limits]
    tok, out = self.loaded.tok, [None] * n
    groups = _group([(len(r["ids"]), m) for r, m in zip(rows, budget)])
    for (_, max_new), idx in groups.items():
      sel = np.asarray(idx)
      stacked = {k: np.stack([rows[i][k] for i in idx]) for k in rows[0]}
      tokens, lengths = self.answer_rows(stacked, keys[sel], max_new_tokens=max_new,
                                         limits=limits[sel], temperature=temperature[sel],
                                         top_p=top_p[sel])
      for j, i in enumerate(idx):
        ids = tokens[j, :lengths[j]].tolist()
        stopped = bool(ids) and ids[-1] == tok.eos_id
        out[i] = Answer(tok.decode(ids).strip(), int(rows[i]["valid"].sum()), len(ids),
                        "stop" if stopped else "length")
    return out

  # -------------------------------------------------------------------- warmup
  def warmup(self, *, images: bool = True, answers: bool = True,
             gen_prompt_buckets: Sequence[int] | None = None,
             und_prompt_buckets: Sequence[int] | None = None) -> int:
    """Compiles every bucketed shape by running it once (1 step, 1 token); returns the
    number of shapes. The device counters are reset afterwards."""
    cfg, tok, count = self.loaded.cfg, self.loaded.tok, 0
    for size in self.batch_buckets:
      keys = request_keys(0, size)
      if images:
        for length in gen_prompt_buckets or self.config.gen_prompt_buckets:
          ids = np.full((size, length), tok.pad_id, np.int32)
          ids[:, -1] = tok.bos_id
          self.generate_rows(ids, ids != tok.pad_id, keys, steps=1, guidance=1.0)
          count += 1
      if answers:
        s = cfg.und_encoder.image_size
        for length in und_prompt_buckets or self.config.und_prompt_buckets:
          ids, flags = packing.und_prompt_ids(tok, "", cfg.und_encoder.num_patches,
                                              self.loaded.system_prompt)
          if len(ids) > length:
            continue
          ids, valid, flags = left_pad(np.asarray([ids] * size, np.int32),
                                       np.ones((size, len(ids)), bool), length, tok.pad_id,
                                       [np.asarray([flags] * size, bool)])
          rows = {"ids": ids, "valid": valid, "image_mask": flags,
                  "images": np.zeros((size, 1, s, s, 3), np.float32)}
          for max_new in self.config.max_tokens_buckets:
            self.answer_rows(rows, keys, max_new_tokens=max_new, limits=np.ones(size),
                             temperature=np.zeros(size), top_p=np.ones(size))
            count += 1
    with self._lock:
      self.device_calls, self.device_seconds, self.device_busy_seconds = 0, 0.0, 0.0
    return count


  # --------------------------------------------------------------------- editing
  def _edit_fn(self) -> Callable:
    """The jitted edit sampler + image decoder (built on first use)."""
    fn = getattr(self, "_edit_images_fn", None)
    if fn is None:
      decode_fn, decode_params = image_decoder(self.loaded)
      self._decode_params = jax.device_put(decode_params, NamedSharding(self.mesh, P()))
      tok = self.loaded.tok
      sample = edit_sampling.make_edit_sample_fn(
          self.loaded.model, pad_id=tok.pad_id, eoi_id=tok.eoi_id, solver=self.config.solver,
          decode_fn=decode_fn)

      def images(params, ids, mask, image_mask, sources, keys, steps, g_text, g_image,
                 decode_params):
        return sample(params, ids, mask, image_mask, sources, keys, steps, g_text, g_image,
                      decode_params)["images"]

      fn = self._edit_images_fn = jax.jit(self._with_rules(images), out_shardings=self._rows)
    return fn

  def edit_rows(self, images: Sequence[Any], instructions: Sequence[str]
                ) -> list[dict[str, np.ndarray]]:
    """Each (source image, instruction) as a row dict left-padded to its own prompt bucket
    (`und_prompt_buckets`: the prompt holds the image's tokens): ids/mask/image_mask [S],
    images [1, s, s, 3] (SigLIP inputs), exactly the train step's edit rows."""
    if len(instructions) != len(images):
      raise ValueError(f"{len(instructions)} instructions but {len(images)} images")
    cfg, tok, rows = self.loaded.cfg, self.loaded.tok, []
    for image, instruction in zip(images, instructions):
      ids, flags = packing.edit_prompt_ids(tok, tok.user_text(instruction),
                                           cfg.und_encoder.num_patches)
      ids, mask, flags, pixels = self._image_prompt(ids, flags, image)
      rows.append({"ids": ids, "mask": mask, "image_mask": flags, "images": pixels})
    return rows

  def edit(self, images: Sequence[Any], instructions: Sequence[str], *, keys: jax.Array,
           steps: int = 30, guidance_text: float = 2.0, guidance_image: float = 1.5
           ) -> np.ndarray:
    """uint8 [n, H, W, 3]: each source image (uint8 [H, W, 3] array, encoded bytes or a
    path) edited by its instruction; keys [n] (e.g. `request_keys`). The two guidance
    weights combine as InstructPix2Pix's (`sampling/edit.py`)."""
    if len(keys) != len(instructions):
      raise ValueError(f"{len(instructions)} instructions but {len(keys)} keys")
    rows = self.edit_rows(images, instructions)
    fn, out = self._edit_fn(), [None] * len(rows)
    for _, idx in _group([len(r["ids"]) for r in rows]).items():
      stacked = {k: np.stack([rows[i][k] for i in idx]) for k in rows[0]}
      group_keys, pieces = keys[np.asarray(idx)], []
      for lo, hi, size in batch_sizes(len(idx), self.batch_buckets):
        b = {k: self._shard(pad_rows(v[lo:hi], size)) for k, v in stacked.items()}
        pieces.append(self._call(
            fn, hi - lo, self.params, b["ids"], b["mask"], b["image_mask"], b["images"],
            self._shard(pad_keys(group_keys[lo:hi], size)), jnp.int32(steps),
            jnp.float32(guidance_text), jnp.float32(guidance_image),
            self._decode_params))
      for i, image in zip(idx, np.concatenate(pieces)):
        out[i] = image
    return np.stack(out)


class _Call:
  """One dispatched device call: `fetch()` waits for it and gives its outputs (an array or
  a tuple of arrays) on the host, the padding rows past `rows` cut off."""

  def __init__(self, engine: "Engine", out: Any, rows: int, started: float):
    self._engine, self._out, self._rows, self._started = engine, out, rows, started
    self.seconds = 0.0  # set by fetch()

  def fetch(self):
    try:
      host = jax.device_get(self._out)
    finally:  # a call's time: from its dispatch to its results on the host
      self._out = None  # the device buffers go
      self.seconds = time.perf_counter() - self._started
      self._engine._finished(self.seconds)  # pylint: disable=protected-access
    return jax.tree.map(lambda x: x[:self._rows], host)


class Pending:
  """Device calls in flight (JAX dispatches asynchronously): `result()` waits for them and
  returns their outputs on the host, concatenated along rows; the first call of
  `result()` fetches, later ones return (or raise) the same. After it, `calls` and
  `seconds` (their summed dispatch -> host times) are these calls' own, whatever else
  was in flight."""

  def __init__(self, calls: Sequence[_Call]):
    self._calls, self._result, self._error = list(calls), None, None
    self.calls, self.seconds = len(self._calls), 0.0

  def result(self):
    if self._calls:
      calls, self._calls = self._calls, []
      parts = []
      for c in calls:  # every call is fetched, even after one fails: each must be
        try:           # counted finished, or the engine's busy time stops adding up
          parts.append(c.fetch())
        except Exception as e:  # the first error is kept: later result()s raise it again
          self._error = self._error or e
        self.seconds += c.seconds
      if self._error is None:
        self._result = (parts[0] if len(parts) == 1
                        else jax.tree.map(lambda *x: np.concatenate(x), *parts))
    if self._error is not None:
      raise self._error
    return self._result


def _group(keys: Sequence[Any]) -> dict[Any, list[int]]:
  """{key: indices with that key}, in first-seen order (rows that may share a call)."""
  groups: dict[Any, list[int]] = {}
  for i, k in enumerate(keys):
    groups.setdefault(k, []).append(i)
  return groups
