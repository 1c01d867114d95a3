r"""Plain float32 GEMM GFLOP/s at the sampler's shapes: XLA:CPU (as XLA_FLAGS sets it) beside
PyTorch in the same process, median of 15 calls each.

  for f in "" --xla_cpu_use_onednn=true --xla_cpu_experimental_ynn_fusion_type= ; do
    XLA_FLAGS="$f" python benchmarks/gemm_vs_torch.py; done

The shapes are the 1.3B sampler's (batch 1 + CFG at 384 px): the LLM's attention and MLP
projections over 2 x 577 tokens and the ConvNeXt's pointwise layer over 2 x 576 cells.
`benchmarks/torch_loop.py --parts` shows that the LLM runs at this ratio.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

SHAPES = ((1154, 2048, 2048), (1154, 2048, 5632), (1152, 768, 3072))  # (m, k, n)


def median_seconds(fn, repeats: int = 15) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main() -> None:
  rng = np.random.default_rng(0)
  dot = jax.jit(jnp.dot)
  cells = []
  for m, k, n in SHAPES:
    a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ours = median_seconds(lambda: dot(ja, jb).block_until_ready())
    theirs = median_seconds(lambda: torch.matmul(ta, tb))
    flop = 2 * m * k * n
    cells.append(f"[{m},{k}]x[{k},{n}] jax {flop / ours / 1e9:.0f} torch "
                 f"{flop / theirs / 1e9:.0f} GFLOP/s ({theirs / ours:.2f}x)")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
  main()
