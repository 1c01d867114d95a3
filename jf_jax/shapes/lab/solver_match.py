r"""Heun vs Euler: the fewest Heun velocity evaluations whose samples are as close to the
exact ODE solution as Euler's at --euler_steps.

  python -m jf_jax.shapes.lab.solver_match                        # tiny config, random weights
  python -m jf_jax.shapes.lab.solver_match --checkpoint /tmp/shapes   # a trained run

The reference is Heun at --ref_steps (a second-order solver at many steps: the ODE's
solution to well below the differences measured). Every solver starts from the same noise
for the same prompts (`--batch` random token prompts, or --captions with a checkpoint);
the error is the mean |latent - reference latent| (pixels in [-1, 1] for a pixel-space
model). Reported: Euler's error at --euler_steps, Heun's at 1..--max_heun_steps steps, and
the smallest Heun evaluation count (2 per step) whose error is at most Euler's, and the
count from which every larger one up to --max_heun_steps is too.
"""

import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags


from jf_jax import testing
from jf_jax.inference import inputs
from jf_jax.inference import loader
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.sampling import common
from jf_jax.sampling import image

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "configs",
                           "tiny.py"), "Config file (shapes; random weights).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A trained run instead of random "
                                  "weights (params dir or workdir).")
_CAPTIONS = flags.DEFINE_list("captions", ["a red circle", "a blue square",
                                           "a green triangle left of a red square"],
                              "Prompts with --checkpoint.")
_BATCH = flags.DEFINE_integer("batch", 8, "Random prompts (random weights).")
_STD = flags.DEFINE_float("std", 0.1, "Std of the random weights (larger: a more "
                          "curved velocity field).")
_GUIDANCE = flags.DEFINE_float("guidance", 2.0, "CFG weight.")
_EULER_STEPS = flags.DEFINE_integer("euler_steps", 30, "Euler steps to match.")
_MAX_HEUN = flags.DEFINE_integer("max_heun_steps", 30, "Heun steps tried: 1..this.")
_REF_STEPS = flags.DEFINE_integer("ref_steps", 200, "Heun steps of the reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")


def _model_and_prompts():
  """(model, params, ids, mask, pad_id) for a checkpoint or random weights."""
  if _CHECKPOINT.value:
    loaded = loader.load(_CHECKPOINT.value, image_decoder=False)
    ids, mask = inputs.generation_prompts(loaded.tok, _CAPTIONS.value)
    return loaded.model, loaded.params, ids, mask, loaded.tok.pad_id
  cfg = model_config.from_config_dict(_CONFIG.value.model)
  params = common.cast_floating(testing.random_params(cfg, std=_STD.value), cfg.dtype)
  ids = np.random.default_rng(0).integers(8, cfg.llm.vocab_size, (_BATCH.value, 12))
  return janusflow.JanusFlow(cfg), params, ids, np.ones_like(ids, bool), 0


def main(argv):
  del argv
  model, params, ids, mask, pad_id = _model_and_prompts()
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  key = jax.random.key(_SEED.value)
  samplers = {s: image.make_sampler(model, pad_id=pad_id, solver=s) for s in image.SOLVERS}

  def latents(solver, steps):
    return np.asarray(samplers[solver](params, ids, mask, key, steps, _GUIDANCE.value)
                      ["latents"], np.float64)

  t0 = time.time()
  ref = latents("heun", _REF_STEPS.value)
  noise = np.asarray(image.initial_noise(key, ids.shape[0], ref.shape[1:]), np.float64)
  print(f"device {jax.devices()[0].device_kind}; {ids.shape[0]} prompts, latents "
        f"{ref.shape[1:]}, guidance {_GUIDANCE.value}; reference: heun x {_REF_STEPS.value} "
        f"({time.time() - t0:.1f}s); mean |ref - noise| {np.abs(ref - noise).mean():.4f}",
        flush=True)
  euler = float(np.abs(latents("euler", _EULER_STEPS.value) - ref).mean())
  print(f"euler {_EULER_STEPS.value:3d} steps = {_EULER_STEPS.value:3d} evaluations: "
        f"mean abs error {euler:.3e}", flush=True)
  errors = {}
  for steps in range(1, _MAX_HEUN.value + 1):
    errors[steps] = float(np.abs(latents("heun", steps) - ref).mean())
    print(f"heun  {steps:3d} steps = {2 * steps:3d} evaluations: mean abs error "
          f"{errors[steps]:.3e}", flush=True)
  matching = [s for s, err in errors.items() if err <= euler]
  # The error need not fall monotonically (a step grid can happen to suit the field), so
  # also give the count from which every larger one matches too.
  stays = next((s for s in errors if all(errors[k] <= euler for k in errors if k >= s)),
               None)
  if not matching:
    print(f"no Heun run up to {_MAX_HEUN.value} steps matched Euler at "
          f"{_EULER_STEPS.value} steps")
    return
  print(f"smallest matching Heun: {matching[0]} steps = {2 * matching[0]} evaluations; "
        f"every run from {stays} steps = {2 * stays} evaluations on matches (Euler: "
        f"{_EULER_STEPS.value})" if stays else "")

if __name__ == "__main__":
  app.run(main)
