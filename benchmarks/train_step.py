r"""Train-step speed: step time, tokens/s, images/s and MFU after warm-up.

Random init of the config's shapes, synthetic batches with the real layout (no checkpoint
or data needed), the real jitted, donated, sharded step of `train/loop.py` over all local
devices.

  python benchmarks/train_step.py                                  # tiny config, CPU
  python benchmarks/train_step.py --config configs/janusflow_1p3b.py --config.stage=2 \
      --config.batch.und_rows=32 --config.batch.text_rows=16 --config.batch.gen_rows=80 \
      --config.batch.und_seq_len=640 --config.batch.text_seq_len=640 \
      --config.batch.gen_prompt_len=64 --config.model.llm.remat_policy=minimal  # 1.3B, 1 GPU
  bash benchmarks/gpu_train_step.sh OUTDIR   # the GPU rows of docs/benchmarks.md
  python benchmarks/train_step.py --config configs/janusflow_1p3b_finetune.py \
      --config.data.source=synthetic --random_vae ...  # + the on-device SDXL-VAE encoding
  python benchmarks/train_step.py ... --profile_dir /tmp/prof   # + where the time goes:
  python benchmarks/trace_summary.py /tmp/prof --steps 3 --thread Stream   # GPU kernels
  (on CPU --profile_dir also writes /tmp/prof/step.hlo.txt and prints the step's time per
  model part and direction, each part's dot FLOP/s beside a plain matmul of its largest
  dot's shape timed in the same run: benchmarks/trace_parts.py)

MFU = model FLOPs per step / (step time x devices x peak). Model FLOPs are counted as in
`jf_jax/tools/flops.py` (matmuls, 2 per multiply-add, 6N*tokens-style: forward x 3 for
trained towers, x 2 for frozen towers gradients pass through, x 1 behind stop_gradient;
attention over the full padded length; no remat recompute). Peak: bf16 dense per device
from `jf_jax/tools/chips.py`, or --peak_tflops (CPU has none: MFU is printed only with the flag).
Tokens/s counts LLM tokens of valid (unpadded) positions, as the training logs do;
images/s counts understanding images + generation rows. A latent-space config
(`data.gen_space = "sdxl_vae"`) encodes the generation images inside the step; its VAE
FLOPs are reported apart (`vae_encode`, forward only) and counted in the total.
--random_vae writes random SDXL-VAE weights of the config's sizes to a temp directory
instead of reading `config.vae.path` (nothing to download).
"""

import atexit
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # trace_parts

from jf_jax.checkpoint import convert_hf  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.checkpoint import vae_map  # pylint: disable=wrong-import-position
from jf_jax.data import pipeline  # pylint: disable=wrong-import-position
from jf_jax.models import vae as vae_lib  # pylint: disable=wrong-import-position
from jf_jax.tools import chips  # pylint: disable=wrong-import-position
from jf_jax.tools import flops as flops_lib  # pylint: disable=wrong-import-position
from jf_jax.train import loop  # pylint: disable=wrong-import-position
from jf_jax.train import step as step_lib  # pylint: disable=wrong-import-position
import trace_parts  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                           "tiny.py"), "Training config file.", lock_config=True)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after the compiling one.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "If set, trace --profile_steps more steps with jax.profiler (a "
    "Perfetto trace for benchmarks/trace_summary.py) after the timed ones.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 3, "Steps traced by --profile_dir.")
_RANDOM_VAE = flags.DEFINE_bool("random_vae", False, "Latent-space configs: random VAE "
                                 "weights instead of config.vae.path.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device (0: from the "
                           "device kind; none for CPU).")


def _write_random_vae(config, directory: str) -> None:
  """Random weights of `config.vae`'s sizes in the diffusers layout, at `directory`."""
  vcfg = vae_lib.config_from_dict(config.vae)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32),
                        vae_map.abstract_params(vcfg))
  convert_hf.save_state_dict(vae_map.to_state_dict(params, vcfg), directory,
                             vae_map.WEIGHTS_NAME)


def _peak_tflops(device) -> float:
  if _PEAK.value:
    return _PEAK.value
  chip = chips.lookup(device.device_kind)
  return chip.peak_bf16_flops / 1e12 if chip else 0.0


def _profile(step_fn, state, global_batches):
  """Runs --profile_steps steps under jax.profiler; returns (state, metrics)."""
  with jax.profiler.trace(_PROFILE_DIR.value, create_perfetto_trace=True):
    for i in range(_PROFILE_STEPS.value):
      with jax.profiler.StepTraceAnnotation("train", step_num=i):
        state, metrics = step_fn(state, global_batches[i % 2])
    jax.block_until_ready(metrics)
  print(f"profile of {_PROFILE_STEPS.value} steps written under {_PROFILE_DIR.value}")
  return state, metrics


def _cpu_parts(s, state, batch) -> None:
  """On CPU: writes the compiled step's HLO beside the trace and prints where the
  profiled steps' time went per model part (benchmarks/trace_parts.py)."""
  with jax.set_mesh(s.mesh):
    text = s.jitted.lower(s.frozen, state, batch).compile().as_text()
  trace_parts.write_hlo(_PROFILE_DIR.value, text)
  print(trace_parts.summarise_trace(_PROFILE_DIR.value, text, _PROFILE_STEPS.value, 15,
                                    trace_parts.matmul_rate))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _RANDOM_VAE.value and config.get("vae") is not None:
    config.vae.path = tempfile.mkdtemp(prefix="jf_random_vae_")
    _write_random_vae(config, config.vae.path)
    atexit.register(shutil.rmtree, config.vae.path, ignore_errors=True)
  t0 = time.perf_counter()
  s = loop.setup(config)
  source = pipeline.make_source(config, s.cfg, pixel_size=s.space.pixel_size)
  batch_sh = step_lib.batch_sharding(s.mesh)
  batches = [next(source) for _ in range(2)]  # alternate two batches: no host work timed
  tokens, images = pipeline.batch_stats(batches[0], s.cfg)
  tokens, images = tokens * jax.process_count(), images * jax.process_count()
  global_batches = [pipeline.global_batch(b, batch_sh) for b in batches]
  state = s.state
  state, metrics = s.step(state, global_batches[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for i in range(_WARMUP.value):
    state, metrics = s.step(state, global_batches[i % 2])
  jax.block_until_ready(metrics)
  times = []
  for i in range(_STEPS.value):
    t = time.perf_counter()
    state, metrics = s.step(state, global_batches[i % 2])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  if _PROFILE_DIR.value:
    state, metrics = _profile(s.step, state, global_batches)
    if jax.default_backend() == "cpu":
      _cpu_parts(s, state, global_batches[0])
  vae_params = s.space.abstract_params() if s.space.has_params else None
  flops = flops_lib.train_step_flops(config, s.cfg, s.abstract.params, s.trainable_mask,
                                     vae_params, s.space.pixel_size)
  device = jax.devices()[0]
  n = jax.device_count()
  peak = _peak_tflops(device)
  achieved = flops["total"] / step_s / n / 1e12
  mfu = f"{100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else "n/a (no peak)"
  b = config.batch
  print(f"devices {n} x {device.device_kind}; mesh {dict(s.mesh.shape)}; stage "
        f"{config.stage}; batch und/text/gen {b.und_rows}/{b.text_rows}/{b.gen_rows}; dtype "
        f"{np.dtype(s.cfg.dtype).name}; remat {config.model.llm.remat_policy}")
  print(f"setup + first step (compile) {compile_s:.1f} s; {_STEPS.value} timed steps after "
        f"{_WARMUP.value} warm-up: median {step_s * 1e3:.1f} ms (min {min(times) * 1e3:.1f},"
        f" max {max(times) * 1e3:.1f})")
  print(f"{tokens / step_s:,.0f} tokens/s, {images / step_s:,.1f} images/s; model FLOPs "
        f"{flops['total']:.3e} per step -> {achieved:.4f} TFLOP/s per device; MFU {mfu}")
  if "vae_encode" in flops:
    rest = flops["total"] - flops["vae_encode"]
    print(f"VAE encoding ({b.gen_rows} images of {s.space.pixel_size} px, "
          f"{s.space.latent_mode}): {flops['vae_encode']:.3e} FLOPs per step = "
          f"{100 * flops['vae_encode'] / rest:.1f}% of the model's other {rest:.3e}; VAE "
          f"params {sum(x.size for x in jax.tree.leaves(vae_params)):,} in "
          f"{np.dtype(s.space.module.param_dtype).name} (replicated, not in the train state)")
  print(f"loss {float(metrics['loss']):.4f}")


if __name__ == "__main__":
  app.run(main)
