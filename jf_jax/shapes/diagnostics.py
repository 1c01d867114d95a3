"""Where along the flow does generation fail? Per-time diagnostics of a pixel-space run.

Real images of a shapes-world split are noised to z_t = t * x + (1 - t) * noise (t = 0
noise, t = 1 data; `losses/flow.py`) at fixed times, and the model is asked, with its own
caption, for the velocity there:

  * `flow_mse`: the training loss at that t (mean squared velocity error per pixel value);
  * `one_step`: the detector's score of the one-step clean estimate
    x_hat = z_t + (1 - t) * v (exact when v is exact), so at late t: does the model's
    denoised image show the captioned objects, or speckle? Its error is (1 - t) times the
    velocity error, so `clean_mse` = (1 - t)^2 * flow_mse;
  * `resumed`: the score of the sampler's Euler ODE started from the TRUE z_t and run to
    t = 1 (about `steps * (1 - t)` steps): from which t on the model finishes an image
    it is handed, i.e. whether the layout (early t) or the drawing (late t) fails.

Image i's noise is the inference engine's for image i of a request with `seed`
(`engine.request_keys`), whatever the batch size.

`mass`: the share of training times in each t bucket (between the midpoints of `times`)
under the logit-normal and uniform t distributions. `jf_jax/shapes/lab/flow_by_time.py` is the
command line.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jf_jax.data import preprocess
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import inputs
from jf_jax.inference import loader
from jf_jax.losses import flow
from jf_jax.models import janusflow
from jf_jax.sampling import image as image_sampling
from jf_jax.shapes import scores

TIMES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.98)


def _velocity_fn(loaded: loader.Loaded):
  """jitted (ids [2B, Lp], mask, z [B, ...], t [] , guidance) -> guided v [B, ...] float32."""
  def fn(params, ids, mask, z, t, guidance):
    z2 = jnp.concatenate([z, z], axis=0)
    v = loaded.model.apply({"params": params}, ids, z2, jnp.full((z2.shape[0],), t),
                           mask, method=janusflow.JanusFlow.generate_velocity)
    return image_sampling.guide(v, guidance)
  return jax.jit(fn)


def _resume(velocity, params, ids, mask, z_t, t, steps, guidance):
  """Euler from the true z_t at time t to t = 1: the sampler's `integrate` on s in [0, 1]
  with t(s) = t + (1 - t) s, dz/ds = (1 - t) v."""
  def fn(z, s, carry):
    return (1.0 - t) * velocity(params, ids, mask, z, t + (1.0 - t) * s, guidance), carry
  return image_sampling.integrate(fn, z_t, steps)[0]


def bucket_mass(times: Sequence[float], loc: float = 0.0, scale: float = 1.0) -> dict:
  """{"logit_normal", "uniform": [len(times)]} share of training t in each time's bucket
  (edges at the midpoints between `times`, then 0 and 1)."""
  t = np.asarray(times, np.float64)
  edges = np.concatenate([[0.0], (t[1:] + t[:-1]) / 2, [1.0]])
  inner = np.clip(edges[1:-1], 1e-12, 1 - 1e-12)
  cdf = jax.scipy.stats.norm.cdf((np.log(inner / (1 - inner)) - loc) / scale)
  cdf = np.concatenate([[0.0], np.asarray(cdf, np.float64), [1.0]])
  return {"logit_normal": np.diff(cdf).tolist(), "uniform": np.diff(edges).tolist()}


def by_time(loaded: loader.Loaded, captions: Sequence[str], images: np.ndarray, *,
            times: Sequence[float] = TIMES, guidance: float = 1.0, steps: int = 20,
            resume: bool = True, seed: int = 0, batch_size: int = 50,
            keep: int = 0, velocity_fn=None) -> dict:
  """Per-time errors and scores of a pixel-space model on (caption, image) pairs.

  Args:
    loaded: a pixel-space checkpoint (`config.data.gen_space = "pixel"`).
    captions: n captions; images: uint8 [n, H, W, 3] (their images, e.g. one split).
    times: t values in [0, 1) to probe.
    guidance: CFG weight (1: the conditional velocity the flow loss trains).
    steps: sampler steps for a whole ODE (`resumed` uses round(steps * (1 - t)), >= 1).
    resume: also compute `resumed` (the costly part: ~steps/2 evaluations per image).
    keep: return the first `keep` one-step estimates and resumed images per time
      (uint8 [len(times), keep, H, W, 3]) under "images".
    velocity_fn: (params, ids [2B, Lp], mask, z [B, ...], t, guidance) -> v [B, ...]
      instead of the loaded model's guided velocity (e.g. an exact one, to check this).
  Returns:
    {"times", "flow_mse", "clean_mse", "one_step": [generation_scores per t],
     "resumed": [...], "mass": bucket_mass, "images": {...}}.
  """
  if (loaded.config.get("data") or {}).get("gen_space") != "pixel":
    raise ValueError("shapes diagnostics need a pixel-space run (config.data.gen_space="
                     f"'pixel'), got {(loaded.config.get('data') or {}).get('gen_space')!r}")
  if len(captions) != len(images):
    raise ValueError(f"{len(captions)} captions but {len(images)} images")
  ids, mask = inputs.generation_prompts(loaded.tok, captions)
  velocity = velocity_fn or _velocity_fn(loaded)
  resume_fn = jax.jit(_resume, static_argnums=(0,))
  data = preprocess.to_pixel_latent(np.asarray(images))
  keys = engine_lib.request_keys(seed, len(captions))  # image i: the engine's noise key
  sq_err = np.zeros(len(times))
  one_step = [[] for _ in times]
  resumed = [[] for _ in times]
  for lo in range(0, len(captions), batch_size):
    hi = min(lo + batch_size, len(captions))
    x = jnp.asarray(data[lo:hi])
    noise = image_sampling.initial_noise(keys[lo:hi], hi - lo, x.shape[1:])
    ids2, mask2 = image_sampling.cfg_prompt_rows(jnp.asarray(ids[lo:hi]),
                                                 jnp.asarray(mask[lo:hi]), loaded.tok.pad_id)
    for k, t in enumerate(times):
      z = flow.interpolate(noise, x, jnp.full((hi - lo,), t))
      v = velocity(loaded.params, ids2, mask2, z, jnp.float32(t), guidance)
      sq_err[k] += float(jnp.sum(jnp.square(v - flow.velocity_target(noise, x))))
      one_step[k].append(np.asarray(image_sampling.to_uint8(z + (1.0 - t) * v)))
      if resume:
        n = max(1, round(steps * (1.0 - t)))
        out = resume_fn(velocity, loaded.params, ids2, mask2, z, jnp.float32(t), n, guidance)
        resumed[k].append(np.asarray(image_sampling.to_uint8(out)))
  flow_mse = sq_err / data.size
  t = np.asarray(times)
  result = {
      "times": list(times), "guidance": guidance, "steps": steps, "num_images": len(captions),
      "flow_mse": flow_mse.tolist(), "clean_mse": ((1 - t) ** 2 * flow_mse).tolist(),
      "one_step": [scores.generation_scores(np.concatenate(o), captions) for o in one_step],
      "mass": bucket_mass(times),
  }
  if resume:
    result["resumed"] = [scores.generation_scores(np.concatenate(r), captions)
                         for r in resumed]
  if keep:
    result["images"] = {
        "one_step": np.stack([np.concatenate(o)[:keep] for o in one_step]),
        **({"resumed": np.stack([np.concatenate(r)[:keep] for r in resumed])}
           if resume else {})}
  return result
