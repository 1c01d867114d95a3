r"""Parameter memory of the inference params: bf16 vs weight-only int8 (Qwix PTQ).

From shapes only (`jax.eval_shape`, nothing allocated): the bytes of the params as the
inference loader holds them (floating leaves in the compute dtype) and with the LLM's
kernels quantized (`jf_jax/lora/quantize.py`: int8 values + one scale per layer and output
channel, in the compute dtype), per top-level module.

  python benchmarks/quantized_params.py --config configs/janusflow_1p3b.py
"""

import os
import sys

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax.checkpoint import params_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.lora import quantize  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position
from jf_jax.models import janusflow  # pylint: disable=wrong-import-position
from jf_jax.sampling import common  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                           "janusflow_1p3b.py"), "Model config.", lock_config=True)
GiB = 2**30


def _bytes(tree) -> int:
  return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def main(argv):
  del argv
  cfg = model_config.from_config_dict(_CONFIG.value.model)
  abstract = params_io.abstract_params(cfg)
  float_params = jax.eval_shape(lambda p: common.cast_floating(p, cfg.dtype), abstract)
  qmodel = quantize.quantized_model(janusflow.JanusFlow(cfg), "int8")
  q_params = jax.eval_shape(
      lambda p: common.cast_floating(quantize.quantize_params(
          p, quantize.abstract_quantized(qmodel), cfg.dtype), cfg.dtype), abstract)
  dtype = jnp.dtype(cfg.dtype).name
  print(f"{'module':<28} {dtype:>10} {'int8 LLM':>10}")
  for name in sorted(float_params):
    print(f"{name:<28} {_bytes(float_params[name]) / GiB:9.3f}G "
          f"{_bytes(q_params[name]) / GiB:9.3f}G")
  total_f, total_q = _bytes(float_params), _bytes(q_params)
  print(f"{'total':<28} {total_f / GiB:9.3f}G {total_q / GiB:9.3f}G  "
        f"(int8 / {dtype} = {total_q / total_f:.3f})")


if __name__ == "__main__":
  app.run(main)
