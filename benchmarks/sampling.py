r"""Sampler speed: text-to-image latency and understanding decoding tokens/s.

Random weights of the config's shapes (no checkpoint needed), compute dtype from the config.

  python benchmarks/sampling.py                                   # tiny config, CPU
  python benchmarks/sampling.py --config configs/janusflow_1p3b.py --batch 5 --steps 30 \
      --vae_decode                                                 # the 1.3B shape, GPU

Text to image: one jitted call = prompt prefill for the doubled CFG batch + `steps` ODE
steps (+ the VAE decode with --vae_decode: the SDXL-VAE with random weights, or the
identity decoder of a pixel-space config). Reported: compile time, then the best and mean
wall time over --repeats calls, per ODE evaluation, and images/s.
Decoding: a --decode_batch x --prompt_len text prompt, prefill + --max_new_tokens greedy
tokens (EOS never hit); tokens/s counts generated tokens only, prefill time included.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax import testing  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.models import janusflow  # pylint: disable=wrong-import-position
from jf_jax.models import latent_space  # pylint: disable=wrong-import-position
from jf_jax.sampling import common  # pylint: disable=wrong-import-position
from jf_jax.sampling import image  # pylint: disable=wrong-import-position
from jf_jax.sampling import text  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                           "tiny.py"), "Config file (model shapes and dtype).")
_BATCH = flags.DEFINE_integer("batch", 2, "Images per text-to-image call (x2 with CFG).")
_STEPS = flags.DEFINE_integer("steps", 30, "ODE steps.")
_SOLVER = flags.DEFINE_enum("solver", "euler", image.SOLVERS, "ODE solver.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 16, "Prompt tokens (both samplers).")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 1, "Rows decoded together.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Tokens generated per row.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls after the compiling one.")
_VAE_DECODE = flags.DEFINE_bool("vae_decode", False, "Include the VAE decode.")
_SKIP_T2I = flags.DEFINE_bool("skip_t2i", False, "Only the decoding benchmark.")
_SKIP_DECODE = flags.DEFINE_bool("skip_decode", False, "Only the text-to-image benchmark.")


def _time_calls(fn, repeats: int) -> tuple[float, list[float]]:
  """(first call incl. compile, [wall time of each further call]), all synchronised."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, times


def _vae_decoder(config, cfg):
  """(decode_fn, params) of the config's generation space (the SDXL-VAE's decoder with
  random weights; the identity in pixel space), or (None, None) without --vae_decode."""
  if not _VAE_DECODE.value:
    return None, None
  space = latent_space.from_config(config, cfg)
  abstract = space.abstract_params(parts=("decoder", "post_quant_conv"))
  leaves, treedef = jax.tree.flatten(abstract)
  keys = jax.random.split(jax.random.key(1), max(len(leaves), 1))
  params = jax.tree.unflatten(treedef, [
      (0.02 * jax.random.normal(k, x.shape)).astype(cfg.dtype) for k, x in zip(keys, leaves)])
  print(f"generation space: {space.kind}, {sum(x.size for x in leaves):,} decoder params",
        flush=True)
  return space.decode, params


def bench_text_to_image(config, cfg, params) -> None:
  model = janusflow.JanusFlow(cfg)
  decode_fn, decode_params = _vae_decoder(config, cfg)
  sampler = image.make_sampler(model, pad_id=0, solver=_SOLVER.value, decode_fn=decode_fn)
  b, lp, steps = _BATCH.value, _PROMPT_LEN.value, _STEPS.value
  ids = jnp.asarray(np.random.default_rng(0).integers(8, cfg.llm.vocab_size, (b, lp)),
                    jnp.int32)
  mask = jnp.ones((b, lp), bool)
  seeds = iter(range(10_000))
  first, times = _time_calls(
      lambda: sampler(params, ids, mask, jax.random.key(next(seeds)), steps, 2.0,
                      decode_params), _REPEATS.value)
  evals = steps * image.evaluations_per_step(_SOLVER.value)
  best, mean = min(times), float(np.mean(times))
  print(f"text-to-image: batch {b} (x2 CFG rows), prompt {lp}, {steps} {_SOLVER.value} steps "
        f"({evals} evaluations), {cfg.latent_size}x{cfg.latent_size} latents, "
        f"vae_decode={_VAE_DECODE.value}", flush=True)
  print(f"  first call (compile + run) {first:.2f}s | latency best {best * 1e3:.1f} ms, "
        f"mean {mean * 1e3:.1f} ms | {best / evals * 1e3:.2f} ms per ODE evaluation | "
        f"{b / best:.2f} images/s", flush=True)


def bench_decoding(cfg, params) -> None:
  model = janusflow.JanusFlow(cfg)
  b, lp, n = _DECODE_BATCH.value, _PROMPT_LEN.value, _MAX_NEW.value
  decoder = text.make_decoder(model, max_new_tokens=n)
  ids = jnp.asarray(np.random.default_rng(1).integers(8, cfg.llm.vocab_size, (b, lp)),
                    jnp.int32)
  mask = jnp.ones((b, lp), bool)
  never = cfg.llm.vocab_size  # an EOS id no row can produce: always n tokens
  first, times = _time_calls(
      lambda: decoder(params, ids, mask, jax.random.key(0), never, 0, 0.0, 1.0),
      _REPEATS.value)
  best, mean = min(times), float(np.mean(times))
  print(f"decoding: batch {b}, prompt {lp}, {n} new tokens per row (greedy)", flush=True)
  print(f"  first call (compile + run) {first:.2f}s | best {best * 1e3:.1f} ms, mean "
        f"{mean * 1e3:.1f} ms | {b * n / best:,.1f} tokens/s ({best / n * 1e3:.2f} ms per "
        "step, prefill included)", flush=True)


def main(argv):
  del argv
  config = _CONFIG.value
  cfg = model_config.from_config_dict(config.model)
  print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}) x "
        f"{jax.device_count()}; compute dtype {jnp.dtype(cfg.dtype).name}", flush=True)
  params = common.cast_floating(testing.random_params(cfg), cfg.dtype)
  if not _SKIP_T2I.value:
    bench_text_to_image(config, cfg, params)
  if not _SKIP_DECODE.value:
    bench_decoding(cfg, params)


if __name__ == "__main__":
  app.run(main)
