"""The train step on 8 fake CPU devices: sharding, freezing, accumulation, learning, resume.

One module-level base config; each test builds only the setups it needs and reuses
compiled steps through fixtures, because compiling the step dominates the runtime.
"""

import json
import os
import re
import subprocess
import sys
import time

import chex
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import pytest

from jf_jax import config_defaults
from jf_jax.checkpoint import manager as ckpt
from jf_jax.data import layout
from jf_jax.data import pipeline
from jf_jax.data import synthetic
from jf_jax.models import janusflow
from jf_jax.parallel import hlo
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import partition
from jf_jax.parallel import rules as rules_lib
from jf_jax.train import loop
from jf_jax.train import optim
from jf_jax.train import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_config(**train):
  config = config_defaults.base_config()
  config.stage = 3
  config.batch.update(dict(und_rows=4, text_rows=4, gen_rows=4, und_seq_len=32,
                           text_seq_len=16, gen_prompt_len=8))
  config.optim.update(dict(learning_rate=LR, warmup_steps=0, weight_decay=0.0))
  config.train.update({**dict(num_steps=4, log_every=1, checkpoint_every=2,
                              max_nonfinite_in_row=3), **train})
  return config


# The first AdamW step (weight decay 0, bias-corrected moments m = g, v = g^2) moves each
# parameter by -lr * g / (|g| + eps): about lr * sign(g), and, for the few entries whose
# gradient is within a rounding error of zero, a steep function of g (slope lr * eps /
# (|g| + eps)^2). A different summation order (sharded, microbatched) changes g by a
# float32 rounding error, which there moves the update by a good fraction of lr, by an
# amount that depends on the CPU's vector width (seen on AVX-512 Xeons). So the comparisons
# are: the losses and the gradient norm at float32 precision; the gradients themselves
# (read back from Adam's first moment, mu = (1 - b1) * g) tightly; and each parameter to
# PARAM_ATOL plus the update change that the gradient tolerance allows at that element.
LR = 3e-3
PARAM_ATOL = 0.05 * LR * 0.01   # the update's own rounding, where it is well conditioned
GRAD_RTOL, GRAD_ATOL_OF_MAX = 1e-4, 1e-5  # gradient tolerance: relative, and of max |g|


def first_moments(opt_state):
  """The `mu` trees of every ScaleByAdamState in `opt_state` (frozen leaves: MaskedNode)."""
  found = []
  jax.tree.map(lambda x: found.append(x.mu) if isinstance(x, optax.ScaleByAdamState) else None,
               opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
  assert found, "no AdamW state found in the optimizer state"
  return found


def assert_first_adam_step_close(state, reference, b1=0.9, eps=1e-8):
  """`state` (params, opt_state) after one AdamW step equals `reference` where it is well
  conditioned: gradients to GRAD_RTOL/GRAD_ATOL_OF_MAX, parameters to PARAM_ATOL + the
  update change those gradient differences allow (lr * eps * dg / (|g| + eps)^2)."""
  mus, ref_mus = first_moments(state.opt_state), first_moments(reference.opt_state)
  assert len(mus) == len(ref_mus)
  masked = lambda x: isinstance(x, optax.MaskedNode)
  for mu, ref_mu in zip(mus, ref_mus):
    to_grad = lambda m: m if masked(m) else np.asarray(m) / (1 - b1)
    grads = jax.tree.map(to_grad, mu, is_leaf=masked)
    ref_grads = jax.tree.map(to_grad, ref_mu, is_leaf=masked)
    g_max = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads) if g.size)
    g_atol = GRAD_ATOL_OF_MAX * g_max
    chex.assert_trees_all_close(grads, ref_grads, rtol=GRAD_RTOL, atol=g_atol)

    def check_param(path, ref_g, p, ref_p):
      if masked(ref_g):
        return
      dg = g_atol + GRAD_RTOL * np.abs(ref_g)
      allowed = PARAM_ATOL + LR * eps * dg / (np.abs(ref_g) + eps) ** 2
      err = np.abs(np.asarray(p) - np.asarray(ref_p))
      bad = err > allowed
      assert not bad.any(), (
          f"{jax.tree_util.keystr(path)}: {int(bad.sum())} of {err.size} parameters differ "
          f"beyond what the gradient tolerance allows (worst {float(err[bad].max()):.3g}, "
          f"allowed there {float(allowed[bad][np.argmax(err[bad])]):.3g})")
    jax.tree_util.tree_map_with_path(check_param, ref_grads, to_host(state.params),
                                     to_host(reference.params), is_leaf=masked)


def single_device(config):
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  return loop.setup(config, devices=jax.devices()[:1])


def host_batch(setup, step=0):
  return synthetic.make_batch(setup.config.batch, setup.config.tokens, setup.cfg,
                              setup.config.seed, step, setup.space.pixel_size)


def to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.fixture(scope="module")
def single():
  return single_device(base_config())


@pytest.fixture(scope="module")
def first_step(single):
  """(state before, state after, metrics) of one single-device step."""
  before = to_host(single.state)
  state, metrics = single.step(single.state, host_batch(single))
  return before, to_host(state), to_host(metrics)


# Set in the fresh process that runs the 8-device comparisons (below).
_IN_FRESH_PROCESS = "JF_JAX_MESH_STEP_FRESH_PROCESS"


def _in_fresh_process(request) -> bool:
  """True inside the fresh process; otherwise runs the calling test there and checks it.

  The 8-device steps run in a fresh Python process: in two clean-clone full-suite runs,
  executing the 8-device step in the long-lived pytest process (after ~150 other tests)
  left XLA:CPU's 8 device threads waiting in different collectives (a deadlock inside the
  CPU runtime). It was later seen once in a fresh process too (a clean-clone run on
  2026-11-29: the child sat at 0% CPU), where the step had been loaded from the
  persistent compilation cache, as in the multi-process deadlock `parallel/mesh.py`
  describes. So the child compiles without that cache, and a child that hangs (not one
  that fails) is started again, at most 3 times.
  """
  if os.environ.get(_IN_FRESH_PROCESS) == "1":
    return True
  env = dict(os.environ, **{_IN_FRESH_PROCESS: "1", "JAX_ENABLE_COMPILATION_CACHE": "false"})
  node = f"{os.path.relpath(__file__, REPO)}::{request.node.name}"
  for attempt in range(3):
    try:
      out = subprocess.run(
          [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", node],
          cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
      break
    except subprocess.TimeoutExpired:
      print(f"{node}: the fresh process hung (attempt {attempt + 1} of 3)", flush=True)
  else:
    raise AssertionError(f"{node}: the fresh process hung 3 times (XLA:CPU collectives)")
  assert out.returncode == 0, f"{node} failed in the fresh process:\n" + _failure(out.stdout)
  assert "1 passed" in out.stdout, _failure(out.stdout)
  return False


def _failure(pytest_stdout: str) -> str:
  """The child's assertion lines (pytest's `E ` lines and its summary), not the XLA warnings
  around them; the last lines of its output when it printed no `E ` line."""
  lines = pytest_stdout.splitlines()
  wanted = [l for l in lines if l.startswith(("E ", "FAILED", "ERROR"))
            or l.startswith("tests/") and ":" in l]
  return "\n".join(wanted[:60]) if wanted else "\n".join(lines[-40:])


def test_sharded_step_equals_single_device(request):
  """The (data=2, fsdp=2, tensor=2) step equals the single-device step (fresh process)."""
  if _in_fresh_process(request):
    _compare_sharded_to_single(request.getfixturevalue("first_step"))


def _compare_sharded_to_single(first_step):
  before, after, metrics = first_step
  config = base_config()
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  sharded = loop.setup(config)
  assert dict(sharded.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  state = jax.block_until_ready(jax.device_put(before, sharded.shardings))
  state, sh_metrics = sharded.step(state, host_batch(sharded))
  # Out-shardings equal in-shardings (what donation needs).
  for leaf, sh in zip(jax.tree.leaves(state), jax.tree.leaves(sharded.shardings)):
    assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)
  for key in ("loss", "ar_loss", "und_loss", "text_loss", "rf_loss", "repa_loss", "grad_norm"):
    np.testing.assert_allclose(sh_metrics[key], metrics[key], rtol=2e-5, atol=2e-6)
  assert_first_adam_step_close(to_host(state), after)


def test_stage1_freezes_llm_and_siglip():
  s = single_device(_with(base_config(), stage=1))
  before = to_host(s.state.params)
  state = s.state
  for i in range(2):
    state, metrics = s.step(state, host_batch(s, i))
  after = to_host(state.params)
  for tower in ("language_model", "vision_und_enc_model"):
    for a, b in zip(jax.tree.leaves(before[tower]), jax.tree.leaves(after[tower])):
      np.testing.assert_array_equal(a, b)
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before["vision_gen_enc_model"]),
      jax.tree.leaves(after["vision_gen_enc_model"]))]
  assert any(changed)
  # No optimizer moments for frozen leaves: the optimizer state holds exactly two
  # moment arrays per trainable parameter (plus scalar counters).
  trainable = sum(x.size for x, t in zip(jax.tree.leaves(s.state.params),
                                         jax.tree.leaves(s.trainable_mask)) if t)
  frozen = sum(x.size for x, t in zip(jax.tree.leaves(s.state.params),
                                      jax.tree.leaves(s.trainable_mask)) if not t)
  assert frozen > trainable  # the LLM and SigLIP dominate even the tiny model
  opt_elems = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
  assert opt_elems == 2 * trainable
  # The reported (clipping) norm covers trainable leaves only: frozen leaves get exact
  # zero gradients through stop_gradient, so the global norm equals the trainable norm.
  assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0


def _with(config, **kwargs):
  config.update(kwargs)
  return config


def test_accumulation_equals_whole_batch(single, first_step):
  _, after, metrics = first_step
  accum = single_device(base_config(microbatches=4))
  state = jax.device_put(first_step[0], accum.shardings)
  state, acc_metrics = accum.step(state, host_batch(accum))
  for key in ("loss", "ar_loss", "und_loss", "text_loss", "rf_loss", "repa_loss", "grad_norm"):
    np.testing.assert_allclose(acc_metrics[key], metrics[key], rtol=2e-5, atol=2e-6)
  assert_first_adam_step_close(to_host(state), after)


def test_split_microbatches_keeps_rows_on_their_devices():
  """Microbatch i holds rows i, i+4, ...; each device's part of every microbatch is made
  of rows that device already held (16 rows over 4 batch shards, 4 microbatches)."""
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
  rows = np.arange(16, dtype=np.float32)[:, None]

  def split(batch):
    with nn.logical_axis_rules(rules_lib.default_rules()):
      return step_lib._split_microbatches(batch, 4)  # pylint: disable=protected-access
  with jax.set_mesh(mesh):
    batch = jax.device_put({"x": rows, "empty": np.zeros((0, 3), np.float32)},
                           step_lib.batch_sharding(mesh))
    micro = jax.jit(split)(batch)
  np.testing.assert_array_equal(micro["x"][..., 0], np.arange(16).reshape(4, 4).T)
  assert micro["empty"].shape == (4, 0, 3)
  held = {shard.device: set(np.asarray(shard.data).ravel()) for shard in
          batch["x"].addressable_shards}
  for shard in micro["x"].addressable_shards:
    assert set(np.asarray(shard.data).ravel()) <= held[shard.device]


def _sixteen_rows(config):
  """Rows per task for 4 batch shards x 4 microbatches, one row per device each."""
  config.batch.update(dict(und_rows=16, text_rows=16, gen_rows=16))
  return config


def test_microbatches_stay_on_their_devices(request):
  """On a (data=2, fsdp=2, tensor=2) mesh the 4-microbatch step moves no batch rows
  between devices and equals the single-device whole-batch step (fresh process).

  Moves are all-to-all / collective-permute instructions of the compiled program outside
  the model (the model may reshard its activations): a contiguous split slices each
  microbatch off some of the devices, so the accumulation loop's per-microbatch slice
  becomes all-to-alls; the strided split slices on every device.
  """
  if not _in_fresh_process(request):
    return
  whole = single_device(_sixteen_rows(base_config()))
  before = to_host(whole.state)
  state, metrics = whole.step(whole.state, host_batch(whole))
  after = to_host(state)

  config = _sixteen_rows(base_config(microbatches=4))
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  micro = loop.plan(config)
  batch = jax.device_put(host_batch(micro), step_lib.batch_sharding(micro.mesh))
  start = jax.device_put(before, micro.shardings)
  with jax.set_mesh(micro.mesh):
    compiled = micro.jitted.lower(micro.frozen, start, batch).compile()
    moves = hlo.outside_model(hlo.collective_moves(compiled.as_text()))
    assert not moves, f"{len(moves)} moves of batch rows, e.g. {moves[:3]}"
    state, micro_metrics = compiled(micro.frozen, start, batch)
  for key in ("loss", "ar_loss", "und_loss", "text_loss", "rf_loss", "repa_loss", "grad_norm"):
    np.testing.assert_allclose(micro_metrics[key], metrics[key], rtol=2e-5, atol=2e-6)
  assert_first_adam_step_close(to_host(state), after)


def test_plan_traces_the_model_once(monkeypatch):
  """`plan` derives the optimizer, the state's shapes and shardings and the step's
  accumulator layout from one `eval_shape` trace of the model."""
  calls = []
  init = janusflow.init_params
  monkeypatch.setattr(janusflow, "init_params", lambda *a, **kw: calls.append(1) or init(*a, **kw))
  config = base_config()
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  s = loop.plan(config, devices=jax.devices()[:1])
  assert len(calls) == 1 and s.state is None
  # The step, traced now, reads the facts plan resolved: no further trace of the model init.
  batch = layout.abstract_batch(config.batch, s.cfg, s.space.pixel_size)
  with jax.set_mesh(s.mesh):
    s.jitted.lower(s.frozen, s.abstract, batch)
  assert len(calls) == 1


def test_step_compiles_once_and_overfits_one_batch(single):
  """Repeated calls never retrace; a fixed batch drives every loss down."""
  batch = host_batch(single)
  traced_step = chex.assert_max_traces(n=1)(step_lib.make_train_step(
      single.model, single.tx, single.trainable_mask, single.step_cfg, single.space,
      optim.make_schedule(single.optim_cfg),
      partition.logical_specs(janusflow.abstract_params(single.model)["params"])))
  jitted = step_lib.jit_train_step(traced_step, single.shardings, single.mesh, single.rules,
                                   single.frozen_shardings)

  def step_fn(state, batch):
    with jax.set_mesh(single.mesh):
      return jitted(single.frozen, state, batch)
  state = jax.device_put(to_host(single.state), single.shardings)
  history = []
  for _ in range(120):
    state, metrics = step_fn(state, batch)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  first, last = history[0], history[-1]
  assert last["ar_loss"] < 0.2 * first["ar_loss"], (first, last)
  assert last["rf_loss"] < 0.6 * first["rf_loss"], (first, last)
  # REPA is a negative cosine: it starts near 0 and must approach -1.
  assert last["repa_loss"] < first["repa_loss"] - 0.5, (first, last)
  assert all(h["nonfinite"] == 0 for h in history)


def test_nonfinite_step_leaves_state_unchanged(single):
  batch = host_batch(single)
  # Float pixels pass through the uint8 normalisation unchanged (device_inputs.py).
  batch["gen_pixels"] = np.full(batch["gen_pixels"].shape, np.nan, np.float32)
  before = to_host(single.state)
  state = jax.device_put(before, single.shardings)
  state, metrics = single.step(state, batch)
  assert int(metrics["nonfinite"]) == 1
  chex.assert_trees_all_equal(to_host(state.params), before.params)
  chex.assert_trees_all_equal(to_host(state.opt_state), before.opt_state)


def test_resume_is_exact_and_restores_on_another_mesh(tmp_path):
  straight = loop.train(base_config(num_steps=4), str(tmp_path / "straight"),
                        devices=jax.devices()[:1])
  interrupted = str(tmp_path / "interrupted")
  loop.train(base_config(num_steps=2), interrupted, devices=jax.devices()[:1])
  resumed = loop.train(base_config(num_steps=4), interrupted, devices=jax.devices()[:1])
  assert resumed["final_step"] == 4
  chex.assert_trees_all_equal(to_host(resumed["state"].params),
                              to_host(straight["state"].params))
  # The same checkpoint restores onto a (data=2, fsdp=2, tensor=2) mesh.
  config = base_config()
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  sharded = loop.setup(config)
  manager = ckpt.make_manager(interrupted, 2, 2)
  step, state, data_state = ckpt.restore(manager, sharded.abstract, sharded.shardings)
  assert step == 4 and data_state == {"step": 4}
  leaf = state.params["language_model"]["model"]["layers"]["mlp"]["up_proj"]["kernel"]
  assert len(leaf.sharding.device_set) == 8
  chex.assert_trees_all_equal(to_host(state.params), to_host(straight["state"].params))


class _SlowSource:
  """The run's input source, taking `delay_s` longer for every batch."""

  def __init__(self, source, delay_s):
    self._source, self._delay_s = source, delay_s

  def __getattr__(self, name):
    return getattr(self._source, name)

  def device_batches(self, place):
    for item in self._source.device_batches(place):
      time.sleep(self._delay_s)  # as if the prefetched batch were late by delay_s
      yield item


def test_progress_line_and_metrics_show_data_wait(tmp_path, capsys, monkeypatch):
  """The time spent getting each batch is in the progress line and metrics.jsonl."""
  make_source = pipeline.make_source
  monkeypatch.setattr(pipeline, "make_source",
                      lambda *args, **kw: _SlowSource(make_source(*args, **kw), delay_s=0.2))
  loop.train(base_config(num_steps=2, log_every=1), str(tmp_path),
             devices=jax.devices()[:1])
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("step ")]
  assert len(lines) == 2, lines
  waits = [int(re.search(r"data ([\d,]+) ms/step", l).group(1).replace(",", ""))
           for l in lines]
  assert all(w >= 200 for w in waits), lines
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2]
  for r in records:  # one step per logging window
    assert 200 <= r["data_wait_ms_per_step"] <= r["step_ms"]
    np.testing.assert_allclose(r["data_wait_fraction"],
                               r["data_wait_ms_per_step"] / r["step_ms"], rtol=1e-6)


def test_mixture_switch_changes_rows_and_resumes_exactly(tmp_path):
  """config.batch.switch: from step 2 the batches hold other rows (no text rows: the text
  loss drops to 0); a run interrupted after the switch resumes to the same parameters."""
  def config(num_steps):
    c = base_config(num_steps=num_steps)
    c.batch.switch.update(dict(step=2, und_rows=8, text_rows=0, gen_rows=4))
    return c
  devices = jax.devices()[:1]
  straight = loop.train(config(4), str(tmp_path / "straight"), devices=devices)
  assert straight["text_loss"] == 0.0 and straight["und_loss"] > 0
  interrupted = str(tmp_path / "interrupted")
  loop.train(config(3), interrupted, devices=devices)
  resumed = loop.train(config(4), interrupted, devices=devices)
  assert resumed["final_step"] == 4
  chex.assert_trees_all_equal(to_host(resumed["state"].params),
                              to_host(straight["state"].params))
  unswitched = base_config(num_steps=4)
  assert layout.rows_at(unswitched.batch, 3) == layout.rows_per_task(unswitched.batch)
  assert layout.rows_at(config(4).batch, 1) == dict(und=4, text=4, gen=4, edit=0)
  assert layout.rows_at(config(4).batch, 2) == dict(und=8, text=0, gen=4, edit=0)
  bad = config(4)
  bad.batch.switch.gen_rows = 3
  bad.mesh.update(dict(data=2, fsdp=2, tensor=2))
  with pytest.raises(ValueError, match="config.batch.switch.gen_rows"):
    loop.setup(bad)


def test_bad_batch_config_names_the_key():
  config = base_config()
  config.batch.gen_rows = 3
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  with pytest.raises(ValueError, match="config.batch.gen_rows"):
    loop.setup(config)


def test_train_py_runs_and_resumes(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "train.py", f"--workdir={tmp_path}", "--config=configs/tiny.py",
         "--config.train.log_every=1", "--config.train.checkpoint_every=2"]
  first = subprocess.run(cmd + ["--config.train.num_steps=2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "step 2/2" in first.stdout and "tok/s" in first.stdout
  assert re.search(r"step 2/2 .* data [\d,]+ ms/step", first.stdout), first.stdout[-2000:]
  second = subprocess.run(cmd + ["--config.train.num_steps=3"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from" in second.stdout and "at step 2" in second.stdout
  assert "step 3/3" in second.stdout
  assert os.listdir(tmp_path / "tensorboard")


def test_params_only_init_from_earlier_stage_and_converted_dir(tmp_path):
  """Stage transition: a stage-1 setup takes the params of a finished stage-3 run (whose
  optimizer state has another structure), and a converted params directory."""
  earlier = str(tmp_path / "earlier")
  finished = loop.train(base_config(num_steps=2), earlier, devices=jax.devices()[:1])
  want = to_host(finished["state"].params)
  s = single_device(_with(base_config(), stage=1))
  state = loop.load_initial_params(s, earlier)
  chex.assert_trees_all_equal(to_host(state.params), want)
  assert int(state.step) == 0  # a new run: fresh step counter and optimizer state
  from jf_jax.checkpoint import params_io  # pylint: disable=g-import-not-at-top
  params_io.save_params(str(tmp_path / "converted"), want, {})
  state = loop.load_initial_params(s, str(tmp_path / "converted"))
  chex.assert_trees_all_equal(to_host(state.params), want)
  with pytest.raises(FileNotFoundError, match="init_params_from"):
    loop.load_initial_params(s, str(tmp_path / "nothing_here"))
