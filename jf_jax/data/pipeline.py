"""Input pipelines behind one small interface: `next()` plus a resumable JSON state.

`config.data.source` picks the pipeline. Each process builds only its own rows
(`process_index` of `process_count`); `global_batch` turns them into global arrays.
"""

from typing import Any

import jax
import numpy as np

from jf_jax.data import layout
from jf_jax.data import synthetic
from jf_jax.models.config import JanusFlowConfig


class SyntheticSource:
  """Synthetic batches with the real layout; the state is the next batch index."""

  def __init__(self, config: Any, cfg: JanusFlowConfig, process_index: int = 0,
               process_count: int = 1):
    self._config, self._cfg = config, cfg
    self._index, self._count = process_index, process_count
    self._step = 0
    self._batch_cfg = config.batch

  def set_rows(self, rows: dict[str, int]) -> None:
    """Rows per task of the batches from now on (`config.batch.switch`)."""
    self._batch_cfg = layout.with_rows(self._config.batch, rows)

  def get_state(self) -> dict:
    return {"step": self._step}

  def set_state(self, state: dict) -> None:
    self._step = int(state["step"])

  def __next__(self) -> dict[str, np.ndarray]:
    batch = synthetic.make_batch(self._batch_cfg, self._config.tokens, self._cfg,
                                 self._config.seed, self._step,
                                 layout.gen_pixel_size(self._config, self._cfg))
    self._step += 1
    return {k: _process_rows(v, self._index, self._count) for k, v in batch.items()}

  def __iter__(self):
    return self


def _process_rows(x: np.ndarray, index: int, count: int) -> np.ndarray:
  rows = x.shape[0] // count
  return x[index * rows:(index + 1) * rows]


def make_source(config: Any, cfg: JanusFlowConfig):
  """The configured input pipeline for this process."""
  kind = config.data.source
  if kind == "synthetic":
    return SyntheticSource(config, cfg, jax.process_index(), jax.process_count())
  if kind in ("shapes", "files"):  # tfds shapes world / user files (data/tfds_source.py)
    from jf_jax.data import tfds_source  # pylint: disable=g-import-not-at-top  (imports tfds)
    return tfds_source.make_source(config, cfg, jax.process_index(), jax.process_count())
  raise ValueError(f"unknown config.data.source {kind!r}; expected 'synthetic', 'shapes' "
                   "or 'files'")


def global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  """Process-local rows -> global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def batch_stats(batch: dict[str, np.ndarray], cfg: JanusFlowConfig) -> tuple[int, int]:
  """(tokens, images) processed by the LLM in a batch, for throughput figures."""
  gen_rows = int(np.sum(batch["gen_weights"] > 0))
  tokens = (int(batch["und_valid"].sum()) + int(batch["text_valid"].sum())
            + int(batch["gen_prompt_mask"].sum()) + gen_rows * (1 + cfg.num_gen_tokens))
  images = batch["und_images"].shape[0] + gen_rows
  return tokens, images


__all__ = ["SyntheticSource", "make_source", "global_batch", "batch_stats", "layout"]
