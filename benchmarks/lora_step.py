r"""LoRA vs full fine-tune: train-step time and compiled FLOPs at equal batch.

Builds both runs of one config from the same params directory (random weights of the
config's model written to a temp directory, or --base DIR): `config.lora.rank` = 0 (full
stage-3 fine-tune: every weight trains) and > 0 (adapters on the LLM's projections plus
the modules trained in full). Times the real jitted, donated step of `train/loop.py` on
synthetic batches (median of --steps after warm-up) and reads XLA's cost analysis of each
compiled step (FLOPs of the program on this backend, nn.scan bodies counted once).

  python benchmarks/lora_step.py                       # tiny model, CPU
  python benchmarks/lora_step.py --rank 16 --steps 20
  python benchmarks/lora_step.py --config configs/janusflow_1p3b_lora.py --model_flops_only
      # the analytic model-FLOP ratio (`jf_jax/tools/flops.py`) of the config's batch, no run
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax.checkpoint import params_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.data import synthetic  # pylint: disable=wrong-import-position
from jf_jax.lora import params as lora_params  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position
from jf_jax import testing  # pylint: disable=wrong-import-position
from jf_jax.train import loop  # pylint: disable=wrong-import-position
from jf_jax.train import optim  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                           "tiny.py"), "Training config file.", lock_config=True)
_BASE = flags.DEFINE_string("base", None, "Params directory of the base (default: random).")
_RANK = flags.DEFINE_integer("rank", 8, "LoRA rank.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after the compiling one.")
_MODEL_FLOPS_ONLY = flags.DEFINE_bool("model_flops_only", False,
                                      "Only the analytic model FLOPs of both runs.")


def _write_random_base(config) -> str:
  cfg = model_config.from_config_dict(config.model)
  path = os.path.join(tempfile.mkdtemp(prefix="lora_step_"), "base")
  params_io.save_params(path, jax.tree.map(np.asarray, testing.numpy_random_params(cfg)),
                        config.model.to_dict())
  return path


def measure(config, rank: int) -> dict:
  """Median step time, compiled FLOPs and trainable/optimizer sizes of one run."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.stage = 3
    config.lora.rank = rank
  s = loop.setup(config, devices=jax.devices()[:1])
  if rank == 0:  # the full fine-tune starts from the same base
    s.state = loop.load_initial_params(s, config.train.init_params_from)
  batches = [synthetic.make_batch(config.batch, config.tokens, s.cfg, config.seed, i,
                                  s.space.pixel_size) for i in range(4)]
  state = s.state
  with jax.set_mesh(s.mesh):
    compiled = s.jitted.lower(s.frozen, state, batches[0]).compile()
  cost = compiled.cost_analysis()
  flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  times = []
  for i in range(1 + _WARMUP.value + _STEPS.value):
    t0 = time.perf_counter()
    state, metrics = s.step(state, batches[i % len(batches)])
    jax.block_until_ready(metrics["loss"])
    times.append(time.perf_counter() - t0)
  opt = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
  return dict(step_ms=1e3 * float(np.median(times[1 + _WARMUP.value:])), flops=flops,
              trainable=optim.count_params(state.params), opt_state=opt)


def model_flops(config) -> tuple[float, float]:
  """(full stage 3, LoRA) model FLOPs per step (`tools/flops.py`: x3 forward for trained
  towers, x2 for frozen ones gradients pass through, x1 behind stop_gradient; the
  adapters' own FLOPs left out), from shapes only."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jf_jax.lora import model as lora_model  # pylint: disable=g-import-not-at-top
  from jf_jax.models import janusflow  # pylint: disable=g-import-not-at-top
  from jf_jax.parallel import paths  # pylint: disable=g-import-not-at-top
  from jf_jax.tools import flops as flops_lib  # pylint: disable=g-import-not-at-top
  cfg = model_config.from_config_dict(config.model)
  params = nn.unbox(janusflow.abstract_params(janusflow.JanusFlow(cfg)))["params"]
  full_mask = jax.tree.map(lambda _: True, params)
  trains = lora_params.trainable_predicate(params, config.lora.train_in_full)
  lora_mask = jax.tree_util.tree_map_with_path(lambda p, _: trains(paths.path_str(p)), params)
  del lora_model
  return (flops_lib.train_step_flops(config, cfg, params, full_mask)["total"],
          flops_lib.train_step_flops(config, cfg, params, lora_mask)["total"])


def main(argv):
  del argv
  if _MODEL_FLOPS_ONLY.value:
    full, lora = model_flops(_CONFIG.value)
    print(f"model FLOPs per step: full {full:.3e}, LoRA {lora:.3e}, ratio {lora / full:.3f}")
    return
  config = _CONFIG.value.copy_and_resolve_references()
  with config.unlocked():
    config.train.init_params_from = _BASE.value or _write_random_base(config)
    config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  b = config.batch
  print(f"batch und/text/gen {b.und_rows}/{b.text_rows}/{b.gen_rows} rows; "
        f"{jax.devices()[0].device_kind}; median of {_STEPS.value} steps", flush=True)
  full, lora = measure(config, 0), measure(config, _RANK.value)
  for name, r in (("full", full), (f"lora r={_RANK.value}", lora)):
    print(f"{name:>10}: {r['step_ms']:8.1f} ms/step, {r['flops']:.3e} compiled FLOPs, "
          f"{r['trainable']:,} trained params, {r['opt_state']:,} optimizer-state values",
          flush=True)
  print(f"LoRA / full: time {lora['step_ms'] / full['step_ms']:.3f}, compiled FLOPs "
        f"{lora['flops'] / full['flops']:.3f}", flush=True)


if __name__ == "__main__":
  app.run(main)
