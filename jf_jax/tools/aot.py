r"""Ahead-of-time compile of the train step and the text-to-image sampler for a TPU topology.

Runs on a CPU machine: libtpu (`pip install "jax[tpu]"`, in the `test` extra) compiles for
a *described* topology (`jax.experimental.topologies.get_topology_desc`) without any TPU.
Nothing is materialised: the train state is the abstract state of `train/state.py` with its
shardings, the batch is `jax.ShapeDtypeStruct`s.

  python -m jf_jax.tools.aot --config configs/janusflow_1p3b.py --topology v5p:4x4x4 \
      --config.stage=2 --config.batch.gen_rows=384 ...   # see docs/scaling.md
  python -m jf_jax.tools.aot --config configs/tiny.py --topology v5e:2x2 --json_out r.json

Topology names are `<chip>:<chip grid>` (v5e:4x4 = v5e-16; v5p:2x4x4 = 32 chips = v5p-64,
v5p counts TensorCores, 2 per chip). Printed per chip: argument, temporary and output bytes
of the compiled program (`memory_analysis()`), their peak (arguments + temporaries +
outputs - donated aliases) against the chip's HBM; the cost model's FLOPs
(`cost_analysis()`, per chip) and, where the cost model gives one, its step-time
estimate; the MFU implied, counting model FLOPs as in `jf_jax/tools/flops.py`
(6*N*tokens-style, matmuls only, no remat recompute); and the all-to-all /
collective-permute instructions of the compiled step, with those outside the model
(which would move batch rows between devices, e.g. for microbatches) listed.
"""

import contextlib
import json
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from jf_jax.data import layout
from jf_jax.lora import params as lora_params
from jf_jax.models import janusflow
from jf_jax.parallel import hlo
from jf_jax.parallel import partition
from jf_jax.parallel import paths
from jf_jax.sampling import image
from jf_jax.tools import chips
from jf_jax.tools import flops as flops_lib
from jf_jax.train import loop
from jf_jax.train import optim
from jf_jax.train import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5p:4x4x4.")
_SAMPLER = flags.DEFINE_bool("sampler", True, "Also compile the text-to-image sampler.")
_SAMPLER_BATCH = flags.DEFINE_integer(
    "sampler_batch", 0, "Prompts per sampler call (x2 with CFG); 0 = one per batch shard.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the report as JSON here.")
_HLO_OUT = flags.DEFINE_string("hlo_out", "", "Also write the compiled train step's HLO "
                                "text here.")
_UNROLL = flags.DEFINE_bool(
    "unroll_scans", False, "Compile with every nn.scan fully unrolled, so that the cost "
    "model counts every layer (XLA's cost analysis counts a while-loop body once); slower "
    "to compile, and not the program training runs.")

GiB = chips.GiB

_ACCELERATOR_TYPES = {"v5e": "v5litepod", "v5p": "v5p", "v4": "v4", "v6e": "v6e"}


def quiet_libtpu_env(topology: str) -> None:
  """Env vars that let libtpu start on a machine without TPUs, without warnings.

  Set before the TPU backend loads (the first `get_topology_desc`). ALLOW_MULTIPLE_LIBTPU_LOAD
  skips libtpu's /tmp lockfile, which any other JAX process on the machine that loaded
  libtpu (every JAX process once libtpu is installed) would otherwise hold.
  """
  chip = topology.split(":")[0]
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{_ACCELERATOR_TYPES.get(chip, chip)}-4")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_WORKER_ID", "0")


def topology_devices(topology: str) -> list[Any]:
  """Devices of a described TPU topology (no TPU needed)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  quiet_libtpu_env(topology)
  grid = [int(d) for d in topology.split(":")[1].split("x")]
  extra = {}
  if len(grid) == 2 and grid[0] * grid[1] < 4:  # fewer chips than one 2x2 host, e.g. v5e:1x1
    extra["chips_per_host_bounds"] = (*grid, 1)
  return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                           **extra).devices)


@contextlib.contextmanager
def unrolled_scans(enabled: bool = True):
  """Makes `nn.scan` (looked up at trace time by the model code) fully unroll.

  XLA's cost analysis visits a while-loop body once, so with layers under `nn.scan` its
  FLOPs and time estimate cover one layer per stack. Unrolling gives a program whose cost
  counts every layer (memory may differ a little from the scanned program training runs).
  """
  if not enabled:
    yield
    return
  original = nn.scan

  def scan(*args, **kwargs):
    kwargs["unroll"] = True
    return original(*args, **kwargs)
  nn.scan = scan
  try:
    yield
  finally:
    nn.scan = original


def _with_sharding(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def _lora_flops_params(s):
  """(plain params, trainable mask) of a LoRA run for the model-FLOP count: the whole
  model's params (base + modules trained in full, adapters' few FLOPs left out), with
  the base frozen (its weight gradients are never computed)."""
  whole = lora_params.without_adapters(lora_params.combine(s.abstract.params,
                                                           s.lora.abstract_base))
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: s.lora.trains(paths.path_str(path)), whole)
  return whole, mask


def compile_train_step(config, devices):
  """(compiled, info) for the real train step on `devices`, from shapes only."""
  s = loop.plan(config, devices)
  cfg, mesh, params, mask = s.cfg, s.mesh, s.abstract.params, s.trainable_mask
  batch_sh = step_lib.batch_sharding(mesh)
  pixels = s.space.pixel_size
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh)
           for k, v in layout.abstract_batch(config.batch, cfg, pixels).items()}
  # The frozen params of the generation space (and a LoRA run's base, quantized for
  # QLoRA): abstract too, laid out by the rules.
  frozen = _with_sharding(s.frozen, s.frozen_shardings)
  space_frozen = s.frozen if s.lora is None else s.frozen["space"]
  vae_params = space_frozen if s.space.has_params else None
  n_params, n_trainable = optim.count_params(params), optim.count_params(params, mask)
  if s.lora is not None:
    params, mask = _lora_flops_params(s)
    n_params = optim.count_params(params) + n_trainable - optim.count_params(params, mask)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh), unrolled_scans(_UNROLL.value):
    lowered = s.jitted.lower(frozen, _with_sharding(s.abstract, s.shardings), batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
  t2 = time.perf_counter()
  # compile_s = lower_s (trace + lower to StableHLO) + xla_compile_s (XLA/libtpu only);
  # the setup before (topology, abstract state, shardings) is not counted.
  info = dict(compile_s=t2 - t0, lower_s=t1 - t0, xla_compile_s=t2 - t1,
              mesh=dict(mesh.shape),
              params=n_params, trainable=n_trainable,
              model_flops=flops_lib.train_step_flops(config, cfg, params, mask, vae_params,
                                                     pixels))
  built = (s.model, mesh, s.rules, s.shardings.params, params)
  if s.lora is not None:  # the sampler of the merged model (adapters folded in)
    plain = janusflow.JanusFlow(cfg)
    boxed = janusflow.abstract_params(plain)["params"]
    built = (plain, mesh, s.rules, partition.mesh_shardings(boxed, mesh, s.rules),
             nn.unbox(boxed))
  return compiled, info, built


def compile_sampler(config, built, batch: int):
  """(compiled, info) for one text-to-image call (prefill + fori_loop over ODE steps).

  Params in the compute dtype, sharded like the train state's params; prompts sharded
  over the batch axes; steps and guidance traced (one executable for any count).
  """
  model, mesh, rules, param_sh, abstract_params = built
  cfg = model.cfg
  fn = image.make_sample_fn(model, pad_id=config.tokens.pad_id)

  def with_rules(*args):
    with nn.logical_axis_rules(rules):
      return fn(*args)
  batch_sh = step_lib.batch_sharding(mesh)
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, jnp.dtype(cfg.dtype),
                                                           sharding=s),
                        abstract_params, param_sh)
  plen = config.batch.gen_prompt_len
  ids = jax.ShapeDtypeStruct((batch, plen), jnp.int32, sharding=batch_sh)
  mask = jax.ShapeDtypeStruct((batch, plen), jnp.bool_, sharding=batch_sh)
  key = jax.eval_shape(lambda: jax.random.key(0))
  scalar_i = jax.ShapeDtypeStruct((), jnp.int32)
  scalar_f = jax.ShapeDtypeStruct((), jnp.float32)
  jitted = jax.jit(with_rules, in_shardings=(param_sh, batch_sh, batch_sh, repl, repl, repl))
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = jitted.lower(params, ids, mask, key, scalar_i, scalar_f).compile()
  return compiled, dict(compile_s=time.perf_counter() - t0, batch=batch, prompt_len=plen)


def memory_report(compiled, hbm: int) -> dict[str, Any]:
  """Per-chip bytes of a compiled program and whether they fit `hbm`."""
  m = compiled.memory_analysis()
  out = dict(argument_bytes=m.argument_size_in_bytes, output_bytes=m.output_size_in_bytes,
             temp_bytes=m.temp_size_in_bytes, alias_bytes=m.alias_size_in_bytes,
             code_bytes=m.generated_code_size_in_bytes)
  out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"]
                       - out["alias_bytes"] + out["code_bytes"])
  out["hbm_bytes"] = hbm
  out["fits"] = out["peak_bytes"] <= hbm
  return out


def moves_report(compiled) -> dict[str, Any]:
  """All-to-all / collective-permute counts of a compiled step; those outside the model
  (batch split, per-microbatch slice, update) by op name."""
  text = compiled.as_text()
  if _HLO_OUT.value:
    with open(_HLO_OUT.value, "w") as f:
      f.write(text)
  moves = hlo.collective_moves(text)
  outside = hlo.outside_model(moves)
  return dict(total=len(moves), outside_model=len(outside), outside_model_ops=sorted({
      f"{m.kind} {m.shape} from {m.op_name or '(no op name)'} in {m.computation}"
      for m in outside}))


def cost_report(compiled) -> dict[str, float]:
  """The compiled cost model's per-chip FLOPs / bytes (and step time if it gives one)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = dict(cost or {})
  out = {"flops": float(cost.get("flops", 0.0)),
         "bytes_accessed": float(cost.get("bytes accessed", 0.0))}
  for key in ("optimal_seconds", "seconds", "utilization"):
    if key in cost:
      out[key] = float(cost[key])
  return out


def train_report(config, topology: str) -> dict[str, Any]:
  """Compiles the train step (and sampler) for `topology`; returns the whole report."""
  devices = topology_devices(topology)
  spec = chips.require(devices[0].device_kind)
  chip, hbm, peak, hbm_bw = (spec.name, spec.hbm_bytes, spec.peak_bf16_flops,
                             spec.hbm_bytes_per_s)
  n = len(devices)
  compiled, info, built = compile_train_step(config, devices)
  mem, cost = memory_report(compiled, hbm), cost_report(compiled)
  moves = moves_report(compiled)
  model_flops = info["model_flops"]["total"]
  # Step-time estimate: the cost model's own if it reports one, else a roofline on its
  # per-chip FLOPs and bytes (max of compute time at peak and HBM time at full bandwidth).
  loops = ("layers unrolled" if _UNROLL.value else
           "nn.scan bodies counted ONCE: one layer per stack, an underestimate; "
           "see --unroll_scans")
  if cost.get("optimal_seconds", 0) > 0:
    step_s, step_src = cost["optimal_seconds"], f"cost model optimal_seconds, {loops}"
  else:
    step_s = max(cost["flops"] / peak, cost["bytes_accessed"] / hbm_bw)
    step_src = f"roofline of the cost model's flops and bytes (no collectives), {loops}"
  report = dict(
      topology=topology, chip=chip, chips=n, peak_flops_per_chip=peak,
      stage=config.stage, remat=config.model.llm.remat_policy, unrolled=_UNROLL.value,
      global_batch=dict(und=config.batch.und_rows, text=config.batch.text_rows,
                        gen=config.batch.gen_rows),
      microbatches=config.train.microbatches,
      **{k: info[k] for k in ("mesh", "params", "trainable", "compile_s", "lower_s",
                              "xla_compile_s")},
      train=dict(memory=mem, cost=cost, model_flops=info["model_flops"], moves=moves,
                 step_time_s=step_s, step_time_source=step_src,
                 cost_model_flops_global=cost["flops"] * n,
                 mfu=model_flops / (n * peak * step_s) if step_s > 0 else None,
                 tokens_per_s=info["model_flops"]["llm_tokens"] / step_s if step_s else None))
  if _SAMPLER.value:
    shards = info["mesh"]["data"] * info["mesh"]["fsdp"]
    sc, sinfo = compile_sampler(config, built, _SAMPLER_BATCH.value or shards)
    report["sampler"] = dict(memory=memory_report(sc, hbm), cost=cost_report(sc), **sinfo)
  return report


def _gib(x) -> str:
  return f"{x / GiB:.2f} GiB"


def format_report(r: dict[str, Any]) -> str:
  t, m = r["train"], r["train"]["memory"]
  mf = t["model_flops"]
  lines = [
      f"topology {r['topology']}: {r['chips']} x {r['chip']} chips, mesh {r['mesh']}; "
      f"stage {r['stage']}, remat {r['remat']}, global batch {r['global_batch']}",
      f"params {r['params']:,} (trainable {r['trainable']:,}); train step compiled in "
      f"{r['compile_s']:.1f} s (trace + lower {r['lower_s']:.1f} s, XLA compile "
      f"{r['xla_compile_s']:.1f} s; setup not counted)",
      f"train step per chip: arguments {_gib(m['argument_bytes'])}, temporaries "
      f"{_gib(m['temp_bytes'])}, outputs {_gib(m['output_bytes'])} (donated/aliased "
      f"{_gib(m['alias_bytes'])}); peak {_gib(m['peak_bytes'])} of {_gib(m['hbm_bytes'])} "
      f"HBM -> {'FITS' if m['fits'] else 'DOES NOT FIT'}",
      f"cost model: {t['cost']['flops']:.3e} FLOPs per chip ({t['cost_model_flops_global']:.3e}"
      f" all chips, incl. remat recompute), {t['cost']['bytes_accessed']:.3e} bytes per chip",
      f"model FLOPs per step (matmuls, 6N*tokens-style, no remat; jf_jax/tools/flops.py): "
      f"{mf['total']:.3e} = " + ", ".join(f"{k} {v:.2e}" for k, v in mf.items()
                                         if k not in ("total", "llm_tokens"))
      + (f"; VAE encoding {mf['vae_encode']:.3e} = "
         f"{100 * mf['vae_encode'] / (mf['total'] - mf['vae_encode']):.1f}% of the rest"
         if "vae_encode" in mf else ""),
      f"estimated step time {t['step_time_s'] * 1e3:.1f} ms ({t['step_time_source']}); "
      + (f"MFU {100 * (t['mfu'] or 0):.1f}% at {r['peak_flops_per_chip'] / 1e12:.0f} "
         f"TFLOP/s bf16 per chip; {t['tokens_per_s'] or 0:,.0f} LLM tokens/s" if r["unrolled"]
         else "MFU not estimated (scanned layers; rerun with --unroll_scans)"),
      f"all-to-all / collective-permute in the train step ({r['microbatches']} "
      f"microbatches): {t['moves']['total']}, outside the model (moving batch rows): "
      f"{t['moves']['outside_model']}" + "".join(f"\n  {op}" for op in
                                                   t['moves']['outside_model_ops'][:5]),
  ]
  if "sampler" in r:
    s, sm = r["sampler"], r["sampler"]["memory"]
    lines.append(
        f"text-to-image sampler ({s['batch']} prompts x2 CFG, prompt {s['prompt_len']}): "
        f"arguments {_gib(sm['argument_bytes'])}, temporaries {_gib(sm['temp_bytes'])}, "
        f"outputs {_gib(sm['output_bytes'])}; peak {_gib(sm['peak_bytes'])} -> "
        f"{'FITS' if sm['fits'] else 'DOES NOT FIT'}; cost model {s['cost']['flops']:.3e} "
        f"FLOPs per chip (loop body counted once); compiled in {s['compile_s']:.1f} s")
  return "\n".join(lines)


def markdown_row(r: dict[str, Any], command: str) -> str:
  """One row of the docs/scaling.md table."""
  t, m = r["train"], r["train"]["memory"]
  mesh = "x".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
  gb = r["global_batch"]
  sampler = (f"{_gib(r['sampler']['memory']['peak_bytes'])}" if "sampler" in r else "-")
  fits = "fits" if m["fits"] else "OOM"
  est = (f"{t['step_time_s'] * 1e3:.0f} (unrolled) | {100 * (t['mfu'] or 0):.0f}%"
         if r["unrolled"] else "n/a (scan) | n/a (scan)")
  return (f"| {r['topology']} ({r['chips']} chips) | {r['stage']} | {mesh} | "
          f"{gb['und']}/{gb['text']}/{gb['gen']} | {_gib(m['argument_bytes'])} | "
          f"{_gib(m['temp_bytes'])} | {_gib(m['peak_bytes'])} {fits} | {t['cost']['flops']:.2e} | {t['model_flops']['total']:.2e} | "
          f"{est} | {sampler} | "
          f"{r['compile_s']:.0f} s | {time.strftime('%Y-%m-%d')} | `{command}` |")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required")
  # The host side runs on CPU: the TPU topology is only described, never opened.
  jax.config.update("jax_platforms", "cpu")
  quiet_libtpu_env(_TOPOLOGY.value)
  report = train_report(_CONFIG.value, _TOPOLOGY.value)
  print(format_report(report), flush=True)
  args, skip = [], False  # the command without --json_out (as '--json_out=X' or '--json_out X')
  for a in sys.argv[1:]:
    if not skip and not a.startswith("--json_out"):
      args.append(a)
    skip = a == "--json_out"
  print("markdown: " + markdown_row(report, "python -m jf_jax.tools.aot " + " ".join(args)),
        flush=True)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
  sys.setrecursionlimit(10_000)
  app.run(main)
