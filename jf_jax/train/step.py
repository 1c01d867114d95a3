"""The train step: next-token + rectified-flow + REPA losses in one jitted, sharded update.

Loss functions return (sum, weight). The step first reads the three denominators off the
whole batch (supervised tokens, latent elements, REPA tokens), then differentiates
`sum / denominator` microbatch by microbatch inside a `lax.scan`, so accumulating
microbatches is exactly one step on the whole batch.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jf_jax.data import device_inputs
from jf_jax.losses import flow
from jf_jax.losses import next_token
from jf_jax.losses import repa as repa_loss
from jf_jax.models import janusflow
from jf_jax.models import sequence
from jf_jax.parallel import microbatches
from jf_jax.train import latents
from jf_jax.train import optim
from jf_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The facts the train step reads, resolved once (`step_config`): no ConfigDict inside."""
  ar_weight: float
  flow_weight: float
  repa_weight: float
  t_distribution: str
  t_loc: float
  t_scale: float
  cfg_drop_prob: float
  pad_id: int        # the tokenizer's (CFG-dropped prompts keep only BOS, then pad)
  microbatches: int
  ema_decay: float


def step_config(config: Any, pad_id: int) -> StepConfig:
  """`config.loss` / `config.train` as the step reads them; `pad_id` from the tokenizer."""
  loss, train = config.loss, config.train
  return StepConfig(
      ar_weight=float(loss.ar_weight), flow_weight=float(loss.flow_weight),
      repa_weight=float(loss.repa_weight), t_distribution=loss.t_distribution,
      t_loc=float(loss.t_loc), t_scale=float(loss.t_scale),
      cfg_drop_prob=float(loss.cfg_drop_prob), pad_id=int(pad_id),
      microbatches=int(train.microbatches), ema_decay=float(train.ema_decay))


def drop_prompts(rng, prompt_ids, prompt_mask, drop_prob: float, pad_id: int):
  """Classifier-free-guidance dropout: a dropped row becomes `sequence.keep_only_bos` of
  itself, the same unconditional row the sampler guides with.

  Args:
    prompt_ids, prompt_mask: [batch, prompt_len].
  Returns:
    (ids, mask) of the same shapes.
  """
  drop = jax.random.bernoulli(rng, drop_prob, (prompt_ids.shape[0],))[:, None]
  bos_ids, bos_mask = sequence.keep_only_bos(prompt_ids, prompt_mask, pad_id)
  return (jnp.where(drop, bos_ids, prompt_ids),
          jnp.where(drop, bos_mask, prompt_mask.astype(bool)))


def loss_denominators(batch, cfg) -> dict[str, jax.Array]:
  """Whole-batch weights of the three losses (never zero)."""
  gen_rows = jnp.sum(batch["gen_weights"])
  latent_elems = math.prod(batch["gen_latents"].shape[1:])  # per row; 0 rows allowed
  und, text = jnp.sum(batch["und_weights"]), jnp.sum(batch["text_weights"])
  return {
      "ar": jnp.maximum(und + text, 1.0),
      # Only for the logged per-task split of the next-token loss.
      "und": jnp.maximum(und, 1.0), "text": jnp.maximum(text, 1.0),
      "rf": jnp.maximum(gen_rows * latent_elems, 1.0),
      "repa": jnp.maximum(gen_rows * cfg.num_gen_tokens, 1.0),
  }


def _ar_sums(model, params, mb) -> tuple[jax.Array, jax.Array]:
  """Next-token loss sums (understanding rows, text rows) of a microbatch."""
  und = text = jnp.zeros((), jnp.float32)
  if mb["und_ids"].shape[0]:
    logits, _, _ = model.apply(
        {"params": params}, mb["und_ids"], mb["und_images"], mb["und_image_mask"],
        attention_mask=mb["und_valid"], method=janusflow.JanusFlow.understand)
    und = next_token.next_token_loss(logits, mb["und_targets"], mb["und_weights"])[0]
  if mb["text_ids"].shape[0]:
    logits = model.apply({"params": params}, mb["text_ids"], attention_mask=mb["text_valid"],
                         method=janusflow.JanusFlow.text_logits)
    text = next_token.next_token_loss(logits, mb["text_targets"], mb["text_weights"])[0]
  return und, text


def draw_generation_noise(rng, batch, step_cfg: StepConfig):
  """Per-row randomness of the generation rows, drawn once for the whole batch.

  Drawing before the microbatch split makes accumulation exact: a row gets the same t,
  noise and prompt dropout however the batch is split. Adds `gen_t` [rows], `gen_noise`
  (like gen_latents) and replaces the prompt ids/mask by their CFG-dropped version.
  """
  rows = batch["gen_latents"].shape[0]
  t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
  ids, mask = drop_prompts(drop_rng, batch["gen_prompt_ids"], batch["gen_prompt_mask"],
                           step_cfg.cfg_drop_prob, step_cfg.pad_id)
  return dict(batch, gen_prompt_ids=ids, gen_prompt_mask=mask,
              gen_t=flow.sample_t(t_rng, rows, step_cfg.t_distribution, step_cfg.t_loc,
                                  step_cfg.t_scale),
              gen_noise=jax.random.normal(noise_rng, batch["gen_latents"].shape,
                                          batch["gen_latents"].dtype))


def _generation_sums(model, params, mb, repa_on: bool):
  """(flow sum, REPA sum) of the generation rows of a microbatch."""
  zero = jnp.zeros((), jnp.float32)
  if not mb["gen_latents"].shape[0]:
    return zero, zero
  data, noise, t = mb["gen_latents"], mb["gen_noise"], mb["gen_t"]
  capture = model.cfg.repa.layer if repa_on else None
  out = model.apply({"params": params}, mb["gen_prompt_ids"], flow.interpolate(noise, data, t),
                    t, mb["gen_prompt_mask"], capture_layer=capture,
                    method=janusflow.JanusFlow.generate_velocity)
  velocity = out if capture is None else out[0]
  rf_sum = flow.flow_loss(velocity, flow.velocity_target(noise, data), mb["gen_weights"])[0]
  if capture is None:
    return rf_sum, zero
  projected = model.apply({"params": params}, out[1],
                          method=janusflow.JanusFlow.project_repa)
  target = jax.lax.stop_gradient(model.apply({"params": params}, mb["gen_images"],
                                             method=janusflow.JanusFlow.und_features))
  return rf_sum, repa_loss.repa_loss(projected, target, mb["gen_weights"])[0]


def _split_microbatches(batch, num: int):
  """[rows, ...] -> [num, rows/num, ...] for every key, strided (`parallel/microbatches.py`;
  each task's rows split separately). Which microbatch a row falls in does not change the
  step: the losses are sums over all rows, and each row's noise and prompt dropout are
  drawn before the split."""
  return jax.tree.map(lambda x: microbatches.split(x, num), batch)


def make_train_step(model, tx, trainable_mask, step_cfg: StepConfig, space, schedule,
                    param_axes):
  """Builds the pure step `(frozen, state, batch) -> (state, metrics)`; jit it with
  shardings (`jit_train_step`).

  Args:
    model, tx, trainable_mask: the module, its optimizer and which leaves train.
    step_cfg: `step_config(config, pad_id)`.
    space: the generation space (`models.latent_space.LatentSpace`): the batch's
      `gen_pixels` are encoded into it first, with its frozen params `frozen` ({} in pixel
      space; `train/latents.py`).
    schedule: the learning-rate schedule (logged).
    param_axes: logical axes of the params (`partition.logical_specs` of the boxed
      abstract params): the gradient accumulator is laid out like them.
  """
  cfg = model.cfg
  coef = {"ar": step_cfg.ar_weight, "rf": step_cfg.flow_weight, "repa": step_cfg.repa_weight}
  num_micro = step_cfg.microbatches

  def freeze(params):
    # stop_gradient at frozen leaves: their backward (e.g. the whole SigLIP tower in
    # stages 1-2) is never computed, not just masked in the optimizer.
    return jax.tree.map(lambda p, train: p if train else jax.lax.stop_gradient(p),
                        params, trainable_mask)

  def micro_loss(params, mb, denom):
    params = freeze(params)
    und, text = _ar_sums(model, params, mb)
    sums = {"ar": und + text}
    sums["rf"], sums["repa"] = _generation_sums(model, params, mb, bool(coef["repa"]))
    loss = sum(coef[k] * sums[k] / denom[k] for k in coef)
    return loss, {**sums, "und": und, "text": text}

  def train_step(frozen, state: TrainState, batch):
    # uint8 images -> float32 model inputs, here on the devices (`data/device_inputs.py`),
    # then generation pixels -> latents + REPA view (`train/latents.py`).
    batch = device_inputs.normalize(batch)
    rng = jax.random.fold_in(state.rng, state.step)
    batch = latents.encode_generation_rows(space, frozen, batch, rng,
                                           cfg.und_encoder.image_size, num_micro)
    denom = loss_denominators(batch, cfg)
    batch = draw_generation_noise(rng, batch, step_cfg)
    micro = _split_microbatches(batch, num_micro)
    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def like_params(grads):
      return nn.with_logical_constraint(grads, param_axes)

    def body(carry, mb):
      (loss, sums), grads = grad_fn(state.params, microbatches.keep_rows_sharded(mb), denom)
      acc_grads, acc_loss, acc_sums = carry
      return (like_params(jax.tree.map(jnp.add, acc_grads, grads)), acc_loss + loss,
              jax.tree.map(jnp.add, acc_sums, sums)), None

    zeros = like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32),
                                     state.params))
    init = (zeros, jnp.zeros((), jnp.float32),
            {k: jnp.zeros((), jnp.float32) for k in (*coef, "und", "text")})
    (grads, loss, sums), _ = jax.lax.scan(body, init, micro)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    grad_norm = optim.trainable_global_norm(grads, trainable_mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = optim.ema_update(ema, params, step_cfg.ema_decay)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        ema_params=None if ema is None else keep(ema, state.ema_params))
    metrics = {
        "loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
        "nonfinite": 1 - finite.astype(jnp.int32),
        **{f"{k}_loss": sums[k] / denom[k] for k in (*coef, "und", "text")},
    }
    return new_state, metrics

  return train_step


def batch_sharding(mesh):
  """Every batch array is split over ('data', 'fsdp') on its leading (row) axis."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))


def jit_train_step(step_fn, state_shardings, mesh, rules, frozen_shardings,
                   donate: bool = True):
  """`jax.jit` of `step_fn(frozen, state, batch)` with in/out shardings; the state is
  donated (its buffers are reused).

  The logical axis rules are entered inside the traced function (they are read at trace
  time, so the compiled step does not depend on its caller's context); call it under
  `jax.set_mesh(mesh)`, as the loop does once around all steps. Bind the frozen params
  with `functools.partial(jitted, frozen)`.
  """
  def step_with_rules(frozen, state, batch):
    with nn.logical_axis_rules(rules):
      return step_fn(frozen, state, batch)
  in_shardings = (frozen_shardings, state_shardings, batch_sharding(mesh))
  return jax.jit(step_with_rules, in_shardings=in_shardings,
                 out_shardings=(state_shardings, None),
                 donate_argnums=(1,) if donate else ())
