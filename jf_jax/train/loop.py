"""The training job: build mesh/state/step from a config, then run, log and checkpoint.

`plan(config)` builds everything from shapes alone (the AOT tool compiles from it);
`setup(config)` adds the sharded train state: everything the loop needs (also used by
tests and benchmarks);
`train(config, workdir)` resumes from the latest checkpoint in `workdir` if there is one.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax

from jf_jax.checkpoint import manager as ckpt
from jf_jax.checkpoint import params_io
from jf_jax.data import layout
from jf_jax.data import pipeline
from jf_jax.data import tokenizer as tok_lib
from jf_jax.lora import base as lora_base
from jf_jax.lora import model as lora_model
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.models import latent_space
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import partition
from jf_jax.parallel import rules as rules_lib
from jf_jax.train import meter as meter_lib
from jf_jax.train import latents
from jf_jax.train import metrics_writer
from jf_jax.train import optim
from jf_jax.train import preemption
from jf_jax.train import resume_check
from jf_jax.train import skip_guard
from jf_jax.train import state as state_lib
from jf_jax.train import step as step_lib


@dataclasses.dataclass
class Setup:
  """Everything the loop needs, derived once from the config (`plan`, `setup`)."""
  config: Any
  cfg: model_config.JanusFlowConfig
  model: janusflow.JanusFlow
  mesh: Any
  rules: list
  optim_cfg: Any        # `optim.from_config(config)`, resolved once
  tx: Any
  trainable_mask: Any
  state: Any            # None after `plan`
  shardings: Any
  abstract: Any         # abstract TrainState
  step_cfg: step_lib.StepConfig
  jitted: Any           # jax.jit of `(frozen, state, batch) -> (state, metrics)`
  # The generation space (models/latent_space.py), its frozen params (the step's first
  # argument: {} in pixel space, the VAE encoder half otherwise; abstract after `plan`)
  # and their shardings.
  space: latent_space.LatentSpace
  frozen: Any
  frozen_shardings: Any
  # LoRA runs (config.lora.rank > 0, jf_jax/lora/): the state holds the adapters and the
  # modules trained in full; `frozen` is {"space": ..., "base": the frozen base params}.
  lora: lora_base.LoraPlan | None = None

  def step(self, state, batch):
    """One train step outside the loop (tests, benchmarks), under the mesh as in `_run`."""
    with jax.set_mesh(self.mesh):
      return self.jitted(self.frozen, state, batch)


def check_batch_config(config, mesh) -> None:
  """Each task's rows (and the switch's) must split over the batch shards, the
  microbatches and the processes."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.train.microbatches
  for prefix, task_rows in layout.row_groups(config.batch):
    for task, rows in task_rows.items():
      key = f"{task}_rows"
      if rows % (shards * micro):
        raise ValueError(
            f"{prefix}.{key}={rows} must be divisible by config.mesh.data * "
            f"config.mesh.fsdp ({shards}) times config.train.microbatches ({micro})")
      if rows % jax.process_count():
        raise ValueError(f"{prefix}.{key}={rows} is not divisible by the process count "
                         f"{jax.process_count()}")


def pad_id(config) -> int:
  """The pad id of the run's tokenizer: the one `config.data.tokenizer` names (checked
  against `config.tokens`), else `config.tokens.pad_id` (synthetic data, whose tokens are
  those ids, or a plan made before the tokenizer is at hand: the input pipeline checks
  the file against it when it loads it)."""
  if config.data.source != "synthetic" and config.data.tokenizer:
    return tok_lib.make_tokenizer(config).pad_id
  return int(config.tokens.pad_id)


def plan(config, devices=None) -> Setup:
  """Mesh, model, optimizer, the state's shapes and shardings and the jitted step.

  Nothing is materialised (`state` is None, `frozen` abstract): checks that need only
  shapes fail here first; the AOT tool (`jf_jax/tools/aot.py`) compiles from this for a
  TPU topology. The model is traced once (its boxed abstract params), and every value
  below is derived from that and from one resolved optimizer config.
  """
  cfg = model_config.from_config_dict(config.model)
  model = janusflow.JanusFlow(cfg)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  check_batch_config(config, mesh)  # per-task rows first: the most specific message
  mesh_lib.check_divisibility(sum(layout.rows_per_task(config.batch).values()), mesh,
                              cfg.llm.num_heads, cfg.llm.num_kv_heads,
                              batch_key="config.batch.*_rows (sum)")
  rules = rules_lib.merge_rules(rules_lib.default_rules(), config.logical_axis_rules)
  optim_cfg, lplan = optim.from_config(config), None
  if lora_model.enabled(config):  # the wrapped model's one trace; the state's part of it
    model, lplan = lora_base.plan(config, model, mesh, rules)
    boxed = lplan.boxed_trainable
    with optim_cfg.unlocked():
      optim_cfg.freeze = ()  # what trains is config.lora's, whatever the stage
  else:
    boxed = janusflow.abstract_params(model)["params"]  # the one trace of the model
  tx, mask = optim.make_optimizer(optim_cfg, nn.unbox(boxed))
  abstract, shardings = state_lib.state_shardings(tx, boxed, mesh, rules,
                                                  use_ema=config.train.ema_decay > 0)
  if mesh.shape["fsdp"] > 1:
    partition.assert_params_sufficiently_sharded(shardings.params, abstract.params)
  space = latent_space.from_config(config, cfg)
  frozen_shardings = latents.frozen_shardings(space, mesh, rules)
  frozen = space.abstract_params()
  if lplan is not None:
    frozen = {"space": frozen, "base": lplan.abstract_base}
    frozen_shardings = {"space": frozen_shardings, "base": lplan.base_shardings}
  step_cfg = step_lib.step_config(config, pad_id(config))
  jitted = step_lib.jit_train_step(
      step_lib.make_train_step(model, tx, mask, step_cfg, space,
                               optim.make_schedule(optim_cfg), partition.logical_specs(boxed),
                               lora_base=lplan is not None),
      shardings, mesh, rules, frozen_shardings)
  return Setup(config, cfg, model, mesh, rules, optim_cfg, tx, mask, None, shardings,
               abstract, step_cfg, jitted, space, frozen, frozen_shardings, lplan)


def setup(config, devices=None) -> Setup:
  """`plan` plus the train state, initialised directly sharded, and the frozen params."""
  s = plan(config, devices)
  # Before the slow init: a missing VAE fails at once.
  if s.lora is None:
    frozen = latents.load_frozen(config, s.space, s.frozen_shardings)
    state = state_lib.init_state(s.model, s.tx, s.mesh, s.shardings, seed=config.seed)
  else:
    frozen = {"space": latents.load_frozen(config, s.space, s.frozen_shardings["space"])}
    frozen["base"], in_full = lora_base.load(config, s.lora, s.cfg, s.mesh, s.rules)
    state = state_lib.init_state(s.model, s.tx, s.mesh, s.shardings, seed=config.seed,
                                 select=s.lora.trainable_part)
    # A LoRA run starts from the base's modules trained in full (and B = 0 adapters).
    state = state_lib.with_params(state, lora_base.initial_trainable(state.params, in_full),
                                  s.tx, s.shardings)
  # Finish init before any other program runs: on the in-process CPU mesh, programs with
  # collectives running concurrently were seen to deadlock.
  state = jax.block_until_ready(state)
  sync_processes("setup")
  return dataclasses.replace(s, state=state, frozen=frozen)


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
  params = params_io.restore_any(path, s.abstract.params, s.shardings.params,
                                 setting="config.train.init_params_from")
  return state_lib.with_params(s.state, params, s.tx, s.shardings)


def _progress_line(step, total, metrics) -> str:
  losses = " ".join(f"{k[:-5]} {metrics[k]:.4f}" for k in ("ar_loss", "rf_loss", "repa_loss"))
  losses += f" | und {metrics['und_loss']:.4f} text {metrics['text_loss']:.4f}"
  extra = skip_guard.progress_text(metrics)
  extra += f" | non-finite steps {metrics['nonfinite_total']}" if metrics.get(
      "nonfinite_total") else ""
  return (f"step {step}/{total} | loss {metrics['loss']:.4f} ({losses}) | grad_norm "
          f"{metrics['grad_norm']:.3f} | lr {metrics['learning_rate']:.2e} | "
          f"{metrics['tokens_per_s']:,.0f} tok/s {metrics['images_per_s']:,.1f} img/s | "
          f"{metrics['step_ms']:,.0f} ms/step, data {metrics['data_wait_ms_per_step']:,.0f} "
          f"ms/step | eta {metrics['eta_s'] / 60:.1f} min{extra}")


def train(config, workdir: str, devices=None,
          initialise: Callable[[Setup, Any], Any] | None = None) -> dict:
  """Runs (or resumes) training; returns the last logged metrics.

  `initialise(setup, config) -> state` gives a fresh run (nothing to resume, no
  `config.train.init_params_from`) its first state instead of `setup`'s, e.g. the shapes
  world's encoder pre-training (train.py loads it as the `config.init` plug-in).
  SIGTERM or Ctrl-C during the loop: saves the step's checkpoint and raises
  `preemption.Stopped`.
  """
  resume_check.check(workdir, config)  # another model's workdir: say so before building
  s = setup(config, devices)
  manager = ckpt.make_manager(workdir, config.train.checkpoint_every,
                              config.train.keep_checkpoints)
  source = pipeline.make_source(config, s.cfg, pixel_size=s.space.pixel_size)
  state, start = s.state, 0
  restored = ckpt.restore(manager, s.abstract, s.shardings)
  if restored is not None:
    start, state, data_state = restored
    source.set_state(data_state)
    print(f"resumed from {workdir} at step {start}", flush=True)
  elif config.train.init_params_from and s.lora is None:  # (LoRA: `setup` read it)
    state = load_initial_params(s, config.train.init_params_from)
    print(f"initialised params from {config.train.init_params_from}", flush=True)
  elif initialise is not None:
    state = initialise(s, config)
  writer = metrics_writer.MetricsWriter(workdir, enabled=jax.process_index() == 0)
  stop = preemption.StopRequest()
  try:
    # One mesh context around every step (the axis rules are entered inside the step).
    with jax.set_mesh(s.mesh):
      metrics = _run(s, state, start, source, manager, writer, stop)
  finally:
    source.close()  # grain worker processes and prefetch threads
    manager.wait_until_finished()
    writer.close()
    stop.restore()
  if stop.requested:  # during the last step or the final save: still no evaluation
    raise preemption.Stopped(stop.signum, metrics["final_step"])
  return metrics


def _loader_stats(source) -> dict:
  """The input pipeline's counters (`Loader.stats()`), {} for a source that keeps none."""
  return source.stats() if hasattr(source, "stats") else {}


def _source_stats(source) -> dict:
  """Skipped-example counters of the input pipeline (if it keeps any), for the logs."""
  stats = _loader_stats(source)
  skipped = stats.get("skipped", {})
  out = {f"data/skipped/{reason}": count for reason, count in skipped.items()}
  out["data/skipped_total"] = sum(skipped.values())
  return out


def _compile(s: Setup, state, batch, report: bool):
  """The compiled step for this batch shape; `report`: print its memory use once."""
  compiled = s.jitted.lower(s.frozen, state, batch).compile()
  if report and jax.process_index() == 0:
    print(_memory_line(compiled.memory_analysis()), flush=True)
  return compiled


def _memory_line(stats) -> str:
  """One line of `Compiled.memory_analysis()` (per device), or why there is none."""
  if stats is None:
    return "train step memory: not reported by this backend"
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return (f"train step memory per device: arguments {gib(stats.argument_size_in_bytes)}, "
          f"outputs {gib(stats.output_size_in_bytes)} ({gib(stats.alias_size_in_bytes)} "
          f"aliased to donated inputs), temporaries {gib(stats.temp_size_in_bytes)}, "
          f"code {gib(stats.generated_code_size_in_bytes)}")


def _run(s: Setup, state, start, source, manager, writer, stop) -> dict:
  config, total = s.config, s.config.train.num_steps
  batch_sh = step_lib.batch_sharding(s.mesh)
  # Host rows and their global arrays, placed one step ahead while the step runs.
  feed = source.device_batches(functools.partial(pipeline.global_batch, sharding=batch_sh))
  config_json = config.to_dict()
  meter = meter_lib.Meter(total, config.train.max_nonfinite_in_row)
  guard = skip_guard.SkipGuard(config, start, _loader_stats(source))  # a task dropping out stops
  last, step, rows, step_fn = {}, start, None, None
  for step in range(start, total):
    step_rows = layout.rows_at(config.batch, step)
    new_shapes = step_rows != rows  # the first step, or the switch (or resuming after it)
    if new_shapes:
      rows = step_rows
      if rows != layout.rows_per_task(config.batch):
        edit = f", edit rows {rows['edit']}" if rows["edit"] else ""
        print(f"step {step}: batches now hold und/text/gen rows {rows['und']}/"
              f"{rows['text']}/{rows['gen']}{edit} (config.batch.switch; the step "
              "recompiles)", flush=True)
    with meter.data_wait():  # the prefetched batch: waits only if it is not ready
      local, batch = next(feed)
    guard.observe(step + 1, _loader_stats(source))
    if new_shapes:
      # Compile before the first execution of each batch shape: its memory is printed
      # once, and every process enters its collectives together (the barrier; one name
      # per step: barrier ids are not meant to be reused).
      step_fn = _compile(s, state, batch, report=step == start)
      if jax.process_count() > 1:
        sync_processes(f"step_{step}_compiled")
    state, metrics = step_fn(s.frozen, state, batch)
    tokens, images = pipeline.batch_stats(local, s.cfg)
    meter.step_done(tokens * jax.process_count(), images * jax.process_count(),
                    recompiled=new_shapes)
    done = step + 1
    meter.nonfinite(metrics["nonfinite"], done)
    if done % config.train.log_every == 0 or done == total:
      last = {k: float(v) for k, v in jax.device_get(metrics).items()}
      last.update(**meter.summary(done), **_source_stats(source),
                  **guard.log_rates(_loader_stats(source)))
      print(_progress_line(done, total, last), flush=True)
      writer.write(done, last)
    ckpt.save(manager, done, state, source.get_state(), config_json)
    if stop.requested:
      if manager.latest_step() != done:
        ckpt.save(manager, done, state, source.get_state(), config_json, force=True)
      manager.wait_until_finished()
      raise preemption.Stopped(stop.signum, done)
  else:
    if total > start and manager.latest_step() != total:
      ckpt.save(manager, total, state, source.get_state(), config_json, force=True)
  last["final_step"] = step + 1 if total > start else start
  last["state"] = state
  if s.lora is not None:  # the frozen base the step was given (never written)
    last["base_params"] = s.frozen["base"]
  return last
