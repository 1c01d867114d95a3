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
from jf_jax.lora import params as lora_params
from jf_jax.losses import flow
from jf_jax.losses import next_token
from jf_jax.losses import repa as repa_loss
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
  # Edit rows' two-condition dropout (shares of rows without the instruction / the source
  # image / both) and the <end_of_image> id that closes the image block.
  edit_drop: tuple[float, float, float] = (0.0, 0.0, 0.0)
  eoi_id: int = -1


def step_config(config: Any, pad_id: int, eoi_id: int | None = None) -> StepConfig:
  """`config.loss` / `config.train` as the step reads them; `pad_id` (and `eoi_id`, None:
  `config.tokens.eoi_id`) from the tokenizer."""
  loss, train = config.loss, config.train
  edit_drop = tuple(float(loss.get(f"edit_drop_{k}", 0.0)) for k in EDIT_DROPS)
  problem = edit_drop_problem(edit_drop)
  if problem:
    raise ValueError(problem)
  return StepConfig(
      edit_drop=edit_drop,
      eoi_id=int(config.tokens.eoi_id if eoi_id is None else eoi_id),
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


# The edit dropout's cases, in `StepConfig.edit_drop` order (`config.loss.edit_drop_*`).
EDIT_DROPS = ("text", "image", "both")


def edit_drop_problem(shares) -> str | None:
  """The problem with the edit dropout's shares (EDIT_DROPS order), None if none: they
  split one set of rows, so together they are at most 1."""
  total = sum(shares)
  if total <= 1.0:
    return None
  return (f"config.loss.edit_drop_text + edit_drop_image + edit_drop_both = {total:g}: "
          "must be <= 1 (each is a share of the edit rows)")


def edit_keeps(rng, rows: int, drops: tuple[float, float, float]):
  """Which condition each edit row keeps: ([rows] keep_image, [rows] keep_text) bool.

  One draw per row picks "drop the instruction", "drop the image", "drop both" or "keep
  both" with probabilities `drops` (then the rest); `sequence.edit_condition_rows`
  builds the rows, as the sampler's guidance rows.
  """
  u = jax.random.uniform(rng, (rows,))
  edges = jnp.cumsum(jnp.asarray(drops, jnp.float32))
  no_text, no_image, no_both = u < edges[0], (u >= edges[0]) & (u < edges[1]), (
      (u >= edges[1]) & (u < edges[2]))
  return ~(no_image | no_both), ~(no_text | no_both)


def loss_denominators(batch, cfg) -> dict[str, jax.Array]:
  """Whole-batch weights of the three losses (never zero); edit rows count as generation
  rows in the flow loss (none in REPA's)."""
  gen_rows = jnp.sum(batch["gen_weights"])
  flow_rows = gen_rows
  if batch.get("edit_weights") is not None and batch["edit_weights"].shape[0]:
    flow_rows = gen_rows + jnp.sum(batch["edit_weights"])
  latent_elems = math.prod(batch["gen_latents"].shape[1:])  # per row; 0 rows allowed
  und, text = jnp.sum(batch["und_weights"]), jnp.sum(batch["text_weights"])
  return {
      "ar": jnp.maximum(und + text, 1.0),
      # Only for the logged per-task split of the next-token loss.
      "und": jnp.maximum(und, 1.0), "text": jnp.maximum(text, 1.0),
      "rf": jnp.maximum(flow_rows * latent_elems, 1.0),
      "repa": jnp.maximum(gen_rows * cfg.num_gen_tokens, 1.0),
  }


def _ar_sums(model, params, mb) -> tuple[jax.Array, jax.Array]:
  """Next-token loss sums (understanding rows, text rows) of a microbatch."""
  und = text = jnp.zeros((), jnp.float32)
  if mb["und_ids"].shape[0]:
    logits, _, _ = model.apply(
        {"params": params}, mb["und_ids"], mb["und_images"], mb["und_image_mask"],
        attention_mask=mb["und_valid"], method="understand")
    und = next_token.next_token_loss(logits, mb["und_targets"], mb["und_weights"])[0]
  if mb["text_ids"].shape[0]:
    logits = model.apply({"params": params}, mb["text_ids"], attention_mask=mb["text_valid"],
                         method="text_logits")
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


# The edit rows' draws come from the step key folded with this, apart from the others.
_EDIT_STREAM = 0xED1


def draw_edit_noise(rng, batch, step_cfg: StepConfig):
  """The edit rows' t, noise and two-condition dropout, drawn once for the whole batch
  (as `draw_generation_noise`, from a stream of their own: the other rows' draws are the
  same with or without edit rows). Adds `edit_t`, `edit_noise` and replaces the prompt
  ids/mask by their dropped versions."""
  if not batch.get("edit_latents", jnp.zeros((0,))).shape[0]:
    return batch
  rows = batch["edit_latents"].shape[0]
  t_rng, noise_rng, drop_rng = jax.random.split(jax.random.fold_in(rng, _EDIT_STREAM), 3)
  keep_image, keep_text = edit_keeps(drop_rng, rows, step_cfg.edit_drop)
  ids, mask = sequence.edit_condition_rows(
      batch["edit_prompt_ids"], batch["edit_prompt_mask"], batch["edit_image_mask"],
      keep_image, keep_text, step_cfg.pad_id, step_cfg.eoi_id)
  return dict(batch, edit_prompt_ids=ids, edit_prompt_mask=mask,
              edit_t=flow.sample_t(t_rng, rows, step_cfg.t_distribution, step_cfg.t_loc,
                                   step_cfg.t_scale),
              edit_noise=jax.random.normal(noise_rng, batch["edit_latents"].shape,
                                           batch["edit_latents"].dtype))


def _edit_sum(model, params, mb):
  """Flow-loss sum of the edit rows of a microbatch (the source image through SigLIP and
  the aligner into the prompt, the edited image as the flow's data)."""
  if not mb.get("edit_latents", jnp.zeros((0,))).shape[0]:
    return None
  data, noise, t = mb["edit_latents"], mb["edit_noise"], mb["edit_t"]
  velocity = model.apply({"params": params}, mb["edit_prompt_ids"], mb["edit_images"],
                         mb["edit_image_mask"], flow.interpolate(noise, data, t), t,
                         mb["edit_prompt_mask"], method="edit_velocity")
  return flow.flow_loss(velocity, flow.velocity_target(noise, data), mb["edit_weights"])[0]


def _generation_sums(model, params, mb, repa_on: bool):
  """(flow sum, REPA sum) of the generation rows of a microbatch."""
  zero = jnp.zeros((), jnp.float32)
  if not mb["gen_latents"].shape[0]:
    return zero, zero
  data, noise, t = mb["gen_latents"], mb["gen_noise"], mb["gen_t"]
  capture = model.cfg.repa.layer if repa_on else None
  out = model.apply({"params": params}, mb["gen_prompt_ids"], flow.interpolate(noise, data, t),
                    t, mb["gen_prompt_mask"], capture_layer=capture,
                    method="generate_velocity")
  velocity = out if capture is None else out[0]
  rf_sum = flow.flow_loss(velocity, flow.velocity_target(noise, data), mb["gen_weights"])[0]
  if capture is None:
    return rf_sum, zero
  projected = model.apply({"params": params}, out[1],
                          method="project_repa")
  target = jax.lax.stop_gradient(model.apply({"params": params}, mb["gen_images"],
                                             method="und_features"))
  return rf_sum, repa_loss.repa_loss(projected, target, mb["gen_weights"])[0]


def _split_microbatches(batch, num: int):
  """[rows, ...] -> [num, rows/num, ...] for every key, strided (`parallel/microbatches.py`;
  each task's rows split separately). Which microbatch a row falls in does not change the
  step: the losses are sums over all rows, and each row's noise and prompt dropout are
  drawn before the split."""
  return jax.tree.map(lambda x: microbatches.split(x, num), batch)


def make_train_step(model, tx, trainable_mask, step_cfg: StepConfig, space, schedule,
                    param_axes, lora_base: bool = False):
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
    lora_base: a LoRA run (`jf_jax/lora/`): the state holds only what trains and `frozen`
      is `{"space": the space's params, "base": the frozen base params}`; the base is
      combined with the state's params inside the loss and never differentiated.

  Model methods are called by name, so a Qwix-wrapped model's interception applies.
  """
  cfg = model.cfg
  coef = {"ar": step_cfg.ar_weight, "rf": step_cfg.flow_weight, "repa": step_cfg.repa_weight}
  num_micro = step_cfg.microbatches

  def freeze(params):
    # stop_gradient at frozen leaves: their backward (e.g. the whole SigLIP tower in
    # stages 1-2) is never computed, not just masked in the optimizer.
    return jax.tree.map(lambda p, train: p if train else jax.lax.stop_gradient(p),
                        params, trainable_mask)

  def micro_loss(params, mb, denom, base_params):
    params = lora_params.combine(freeze(params), base_params)
    und, text = _ar_sums(model, params, mb)
    sums = {"ar": und + text}
    sums["rf"], sums["repa"] = _generation_sums(model, params, mb, bool(coef["repa"]))
    extra = {}
    edit = _edit_sum(model, params, mb)
    if edit is not None:  # static: a batch without edit rows traces the step it had before
      extra["edit"] = edit
      sums["rf"] = sums["rf"] + edit
    loss = sum(coef[k] * sums[k] / denom[k] for k in coef)
    return loss, {**sums, "und": und, "text": text, **extra}

  def train_step(frozen, state: TrainState, batch):
    edits_on = bool(batch.get("edit_pixels", jnp.zeros((0,))).shape[0])
    logged = (*coef, "und", "text", *(("edit",) if edits_on else ()))
    frozen, base_params = (frozen["space"], frozen["base"]) if lora_base else (frozen, None)
    # uint8 images -> float32 model inputs, here on the devices (`data/device_inputs.py`),
    # then generation pixels -> latents + REPA view (`train/latents.py`).
    batch = device_inputs.normalize(batch)
    rng = jax.random.fold_in(state.rng, state.step)
    batch = latents.encode_generation_rows(space, frozen, batch, rng,
                                           cfg.und_encoder.image_size, num_micro)
    denom = loss_denominators(batch, cfg)
    batch = draw_edit_noise(rng, draw_generation_noise(rng, batch, step_cfg), step_cfg)
    micro = _split_microbatches(batch, num_micro)
    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def like_params(grads):
      return nn.with_logical_constraint(grads, param_axes)

    def body(carry, mb):
      (loss, sums), grads = grad_fn(state.params, microbatches.keep_rows_sharded(mb), denom,
                                    base_params)
      acc_grads, acc_loss, acc_sums = carry
      return (like_params(jax.tree.map(jnp.add, acc_grads, grads)), acc_loss + loss,
              jax.tree.map(jnp.add, acc_sums, sums)), None

    zeros = like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32),
                                     state.params))
    init = (zeros, jnp.zeros((), jnp.float32),
            {k: jnp.zeros((), jnp.float32) for k in logged})
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
        # The flow loss of the edit rows alone, per latent element of the flow rows.
        **({"edit_loss": sums["edit"] / denom["rf"]} if edits_on else {}),
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
