r"""Plain float32 GEMM GFLOP/s at the sampler's shapes: XLA:CPU (as XLA_FLAGS sets it) beside
PyTorch in the same process, median of 15 calls each.

  for f in "" --xla_cpu_use_onednn=true --xla_cpu_experimental_ynn_fusion_type= ; do
    XLA_FLAGS="$f" python benchmarks/gemm_vs_torch.py; done

The shapes are the 1.3B sampler's (batch 1 + CFG at 384 px): the LLM's attention and MLP
projections over 2 x 577 tokens and the ConvNeXt's pointwise layer over 2 x 576 cells.
`benchmarks/torch_loop.py --parts` times the same matmuls beside the parts they bound.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jf_jax import config_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position


def gemm_shapes(cfg) -> dict[str, tuple[int, int, int]]:
  """name -> (m, k, n) of the sampler's main matmuls, for a model config."""
  m_llm = 2 * (1 + cfg.num_gen_tokens)  # the CFG pair of [t_emb, image tokens]
  m_conv = 2 * cfg.num_gen_tokens  # the ConvNeXt blocks run at the token grid
  width, mlp, ch = cfg.llm.embed_dim, cfg.llm.mlp_dim, cfg.gen_encoder.channels
  return {"llm attn [m, d] x [d, d]": (m_llm, width, width),
          "llm mlp [m, d] x [d, mlp]": (m_llm, width, mlp),
          "convnext [m, c] x [c, 4c]": (m_conv, ch, 4 * ch)}


def matmul_calls(m: int, k: int, n: int):
  """(FLOPs, jax call, torch call) of one [m, k] x [k, n] float32 matmul of the same data."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
  ja, jb, dot = jnp.asarray(a), jnp.asarray(b), jax.jit(jnp.dot)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  return (2 * m * k * n, lambda: jax.block_until_ready(dot(ja, jb)),
          lambda: torch.matmul(ta, tb))


def median_seconds(fn, repeats: int = 15) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main() -> None:
  cfg = model_config.from_config_dict(config_defaults.model_1p3b())
  cells = []
  for (m, k, n) in gemm_shapes(cfg).values():
    flop, ours, theirs = matmul_calls(m, k, n)
    ours, theirs = median_seconds(ours), median_seconds(theirs)
    cells.append(f"[{m},{k}]x[{k},{n}] jax {flop / ours / 1e9:.0f} torch "
                 f"{flop / theirs / 1e9:.0f} GFLOP/s ({theirs / ours:.2f}x)")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
  main()
