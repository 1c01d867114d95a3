"""The training job: build mesh/state/step from a config, then run, log and checkpoint.

`plan(config)` builds everything from shapes alone (the AOT tool compiles from it);
`setup(config)` adds the sharded train state: everything the loop needs (also used by
tests and benchmarks);
`train(config, workdir)` resumes from the latest checkpoint in `workdir` if there is one.
"""

import dataclasses
import os
import signal
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax.data import layout
from jf_jax.data import pipeline
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import partition
from jf_jax.parallel import rules as rules_lib
from jf_jax.train import latents
from jf_jax.train import metrics_writer
from jf_jax.train import optim
from jf_jax.train import state as state_lib
from jf_jax.train import step as step_lib


@dataclasses.dataclass
class Setup:
  config: Any
  cfg: model_config.JanusFlowConfig
  model: janusflow.JanusFlow
  mesh: Any
  rules: list
  tx: Any
  trainable_mask: Any
  state: Any
  shardings: Any
  abstract: Any
  step_fn: Any
  # Latent-space runs (config.data.gen_space='sdxl_vae', train/latents.py): the frozen VAE.
  encoder: Any = None
  vae_shardings: Any = None


def optim_config(config):
  """`config.optim` with the stage's freeze regexes prepended to the user's."""
  ocfg = config.optim.copy_and_resolve_references()
  with ocfg.unlocked():
    ocfg.freeze = optim.stage_freeze_regexes(config.stage) + tuple(config.optim.freeze)
  return ocfg


def check_batch_config(config, mesh) -> None:
  """Each task's rows (and the switch's) must split over the batch shards, the
  microbatches and the processes."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.train.microbatches
  groups = [("config.batch", config.batch)]
  if layout.switch_step(config.batch):
    groups.append(("config.batch.switch", config.batch.switch))
  for prefix, rows_cfg in groups:
    for key in ("und_rows", "text_rows", "gen_rows"):
      rows = rows_cfg[key]
      if rows % (shards * micro):
        raise ValueError(
            f"{prefix}.{key}={rows} must be divisible by config.mesh.data * "
            f"config.mesh.fsdp ({shards}) times config.train.microbatches ({micro})")
      if rows % jax.process_count():
        raise ValueError(f"{prefix}.{key}={rows} is not divisible by the process count "
                         f"{jax.process_count()}")


def plan(config, devices=None) -> Setup:
  """Mesh, model, optimizer, the state's shapes and shardings and the jitted step.

  Nothing is materialised (`state` is None): checks that need only shapes fail here
  first; the AOT tool (`jf_jax/tools/aot.py`) compiles from this for a TPU topology.
  """
  cfg = model_config.from_config_dict(config.model)
  model = janusflow.JanusFlow(cfg)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  check_batch_config(config, mesh)  # per-task rows first: the most specific message
  mesh_lib.check_divisibility(config.batch.und_rows + config.batch.text_rows
                              + config.batch.gen_rows, mesh, cfg.llm.num_heads,
                              cfg.llm.num_kv_heads, batch_key="config.batch.*_rows (sum)")
  rules = rules_lib.merge_rules(rules_lib.default_rules(), config.logical_axis_rules)
  abstract_params = nn.unbox(janusflow.abstract_params(model))["params"]
  tx, mask = optim.make_optimizer(optim_config(config), abstract_params)
  abstract, shardings = state_lib.state_shardings(
      model, tx, mesh, rules, use_ema=config.train.ema_decay > 0, seed=config.seed)
  if mesh.shape["fsdp"] > 1:
    partition.assert_params_sufficiently_sharded(shardings.params, abstract.params)
  encoder = latents.make_encoder(config, cfg)
  vae_shardings = latents.param_shardings(encoder, mesh, rules) if encoder else None
  step_fn = step_lib.jit_train_step(
      step_lib.make_train_step(model, tx, mask, config, encoder), shardings, mesh, rules,
      vae_shardings=vae_shardings)
  return Setup(config, cfg, model, mesh, rules, tx, mask, None, shardings, abstract,
               step_fn, encoder, vae_shardings)


def setup(config, devices=None) -> Setup:
  """`plan` plus the train state, initialised directly sharded."""
  s = plan(config, devices)
  if s.encoder is not None:  # before the slow init: a missing VAE fails at once
    s = dataclasses.replace(s, step_fn=s.step_fn.with_frozen(
        latents.load_params(config, s.encoder, s.vae_shardings)))
  state = state_lib.init_state(s.model, s.tx, s.mesh, s.shardings, seed=config.seed)
  # Finish init before any other program runs: on the in-process CPU mesh, programs with
  # collectives running concurrently were seen to deadlock.
  state = jax.block_until_ready(state)
  sync_processes("setup")
  return dataclasses.replace(s, state=state)


def sync_processes(name: str, timeout_s: int = 1800) -> None:
  """Barrier over the coordination service (not over CPU/gloo collectives).

  Processes compile at different speeds; gloo gives up creating a collective context
  after 30 s, so multi-process runs meet here after each compile, before the first
  collective of the next program.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  distributed.global_state.client.wait_at_barrier(f"jf_jax_{name}", timeout_s * 1000)


def load_initial_params(s: Setup, path: str):
  """Params-only initialisation from a converted checkpoint or an earlier run's workdir."""
  if os.path.isdir(os.path.join(path, "params")):
    target = ckpt.with_shardings(s.abstract.params, s.shardings.params)
    params = params_io.load_params(path, target)
  elif os.path.isdir(os.path.join(path, "checkpoints")):
    params = ckpt.restore_params(path, s.abstract.params, s.shardings.params)
  else:
    raise FileNotFoundError(f"config.train.init_params_from={path!r} holds neither a params "
                            "checkpoint (params/) nor a training run (checkpoints/)")
  return state_lib.with_params(s.state, params, s.tx, s.shardings)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks, so it can checkpoint before exiting."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _progress_line(step, total, metrics, tokens_s, images_s, eta_s) -> str:
  losses = " ".join(f"{k[:-5]} {metrics[k]:.4f}" for k in ("ar_loss", "rf_loss", "repa_loss"))
  losses += f" | und {metrics['und_loss']:.4f} text {metrics['text_loss']:.4f}"
  skipped = metrics.get("data/skipped_total", 0)
  extra = f" | skipped examples {skipped}" if skipped else ""
  extra += f" | non-finite steps {metrics['nonfinite_total']}" if metrics.get(
      "nonfinite_total") else ""
  return (f"step {step}/{total} | loss {metrics['loss']:.4f} ({losses}) | grad_norm "
          f"{metrics['grad_norm']:.3f} | lr {metrics['learning_rate']:.2e} | "
          f"{tokens_s:,.0f} tok/s {images_s:,.1f} img/s | eta {eta_s / 60:.1f} min{extra}")


def train(config, workdir: str, devices=None) -> dict:
  """Runs (or resumes) training; returns the last logged metrics."""
  s = setup(config, devices)
  manager = ckpt.make_manager(workdir, config.train.checkpoint_every,
                              config.train.keep_checkpoints)
  source = pipeline.make_source(config, s.cfg)
  state, start = s.state, 0
  restored = ckpt.restore(manager, s.abstract, s.shardings)
  if restored is not None:
    start, state, data_state = restored
    source.set_state(data_state)
    print(f"resumed from {workdir} at step {start}", flush=True)
  elif config.train.init_params_from:
    state = load_initial_params(s, config.train.init_params_from)
    print(f"initialised params from {config.train.init_params_from}", flush=True)
  elif config.get("encoder_pretrain") is not None and config.encoder_pretrain.steps > 0:
    # Imported here: it reads the shapes world through tfds, which a run on other data
    # (e.g. the GPU benchmarks) need not have installed.
    from jf_jax.train import encoder_pretrain  # pylint: disable=g-import-not-at-top
    state = encoder_pretrain.initialise(s, config)
  writer = metrics_writer.MetricsWriter(workdir, enabled=jax.process_index() == 0)
  preemption = _Preemption()
  try:
    return _run(s, state, start, source, manager, writer, preemption)
  finally:
    manager.wait_until_finished()
    writer.close()
    preemption.restore()


def _source_stats(source) -> dict:
  """Skipped-example counters of the input pipeline (if it keeps any), for the logs."""
  stats = source.stats() if hasattr(source, "stats") else {}
  skipped = stats.get("skipped", {})
  out = {f"data/skipped/{reason}": count for reason, count in skipped.items()}
  out["data/skipped_total"] = sum(skipped.values())
  return out


def _count_nonfinite(flag, in_row, total, step, config) -> tuple[int, int]:
  """Updates the non-finite counters; stops the run after too many in a row."""
  bad = int(jax.device_get(flag))
  in_row, total = (in_row + 1 if bad else 0), total + bad
  if bad:
    logging.warning("step %d: non-finite loss or gradient; state left unchanged", step)
  if in_row >= config.train.max_nonfinite_in_row:
    raise FloatingPointError(
        f"{in_row} steps in a row had a non-finite loss or gradient (last at step {step}); "
        "each left the state unchanged. Lower config.optim.learning_rate or raise "
        "config.train.max_nonfinite_in_row.")
  return in_row, total


def _run(s: Setup, state, start, source, manager, writer, preemption) -> dict:
  config, total = s.config, s.config.train.num_steps
  batch_sh = step_lib.batch_sharding(s.mesh)
  config_json = config.to_dict()
  last, window_start, window_tokens, window_images = {}, time.time(), 0, 0
  nonfinite_in_row, nonfinite_total, pending_nonfinite = 0, 0, None
  loop_start, step, rows = time.time(), start, None
  for step in range(start, total):
    step_rows = layout.rows_at(config.batch, step)
    new_shapes = step_rows != rows  # the first step, or the switch (or resuming after it)
    if new_shapes:
      rows = step_rows
      source.set_rows(rows)
      if rows != layout.rows_per_task(config.batch):
        print(f"step {step}: batches now hold und/text/gen rows {rows['und']}/"
              f"{rows['text']}/{rows['gen']} (config.batch.switch; the step recompiles)",
              flush=True)
    local = next(source)
    if new_shapes and jax.process_count() > 1:
      # Compile before the first execution (of each batch shape) so every process enters
      # its collectives together (the jit call below then reuses the compiled program).
      # One barrier name per step: barrier ids are not meant to be reused.
      with jax.set_mesh(s.mesh):
        s.step_fn.lower(state, pipeline.global_batch(local, batch_sh)).compile()
      sync_processes(f"step_{step}_compiled")
    tokens, images = pipeline.batch_stats(local, s.cfg)
    window_tokens += tokens * jax.process_count()
    window_images += images * jax.process_count()
    state, metrics = s.step_fn(state, pipeline.global_batch(local, batch_sh))
    done = step + 1
    log_now = done % config.train.log_every == 0 or done == total
    # The non-finite flag of the previous step is read now, so the host never waits for
    # the step it just dispatched.
    if pending_nonfinite is not None:
      nonfinite_in_row, nonfinite_total = _count_nonfinite(
          pending_nonfinite, nonfinite_in_row, nonfinite_total, done - 1, config)
    pending_nonfinite = metrics["nonfinite"]
    if log_now:
      nonfinite_in_row, nonfinite_total = _count_nonfinite(
          pending_nonfinite, nonfinite_in_row, nonfinite_total, done, config)
      pending_nonfinite = None
      last = {k: float(v) for k, v in jax.device_get(metrics).items()}
      elapsed = time.time() - window_start
      rate = (done - start) / max(time.time() - loop_start, 1e-9)
      last.update(tokens_per_s=window_tokens / elapsed, images_per_s=window_images / elapsed,
                  nonfinite_total=nonfinite_total, **_source_stats(source))
      print(_progress_line(done, total, last, last["tokens_per_s"], last["images_per_s"],
                           (total - done) / rate), flush=True)
      writer.write(done, last)
      window_start, window_tokens, window_images = time.time(), 0, 0
    ckpt.save(manager, done, state, source.get_state(), config_json)
    if preemption.requested:
      if manager.latest_step() != done:
        ckpt.save(manager, done, state, source.get_state(), config_json, force=True)
      manager.wait_until_finished()
      print(f"SIGTERM: saved checkpoint at step {done}, exiting", flush=True)
      break
  else:
    if total > start and manager.latest_step() != total:
      ckpt.save(manager, total, state, source.get_state(), config_json, force=True)
  last["final_step"] = step + 1 if total > start else start
  last["state"] = state
  return last
