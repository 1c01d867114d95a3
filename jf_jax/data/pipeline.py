"""Input pipelines behind one interface: a grain `loader.Loader` over a step function.

`config.data.source` picks the step function: synthetic batches, or the task mixture
(`mixture.MixtureBatches`) over the shapes world or user files. Each process builds only
its own rows (`process_index` of `process_count`); `global_batch` turns them into global
arrays. `config.data.workers` / `config.data.prefetch` configure the loader.
"""

from typing import Any, Mapping

import jax
import numpy as np

from jf_jax.data import layout
from jf_jax.data import loader
from jf_jax.data import mixture
from jf_jax.data import plugins
from jf_jax.data import processor
from jf_jax.data import synthetic
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import latent_space
from jf_jax.models.config import JanusFlowConfig


class SyntheticBatches:
  """step -> synthetic rows of this process (`synthetic.make_batch`), with the step's rows
  per task (`config.batch.switch`)."""

  def __init__(self, config: Any, cfg: JanusFlowConfig, pixel_size: int,
               process_index: int = 0, process_count: int = 1):
    self._batch_cfg, self._tokens, self._cfg = config.batch, config.tokens, cfg
    self._seed, self._index, self._count = config.seed, process_index, process_count
    self._pixel_size = pixel_size

  def __call__(self, step: int) -> dict:
    batch_cfg = layout.with_rows(self._batch_cfg, layout.rows_at(self._batch_cfg, step))
    batch = synthetic.make_batch(batch_cfg, self._tokens, self._cfg, self._seed, step,
                                 self._pixel_size)
    return {"step": step, "rows": {}, "skips": [],
            "batch": {k: _process_rows(v, self._index, self._count) for k, v in batch.items()}}


def _process_rows(x: np.ndarray, index: int, count: int) -> np.ndarray:
  rows = x.shape[0] // count
  return x[index * rows:(index + 1) * rows]


def default_tasks(config: Any) -> dict:
  """{task: (random-access data, converter)} of `config.data.source`.

  "files": your own data (`user_data.py`); "records": prepared ArrayRecord shards
  (`record_source.py`, `python -m jf_jax.prepare`); any other name is a project package (e.g.
  "shapes" = `jf_jax.shapes`) whose `tasks(data_cfg)` builds them: the core data layer
  never imports project code itself.
  """
  kind = config.data.source
  if kind == "files":
    from jf_jax.data import user_data  # pylint: disable=g-import-not-at-top
    return user_data.file_tasks(config.data)
  if kind == "records":
    from jf_jax.data import record_source  # pylint: disable=g-import-not-at-top
    return record_source.record_tasks(config.data)
  return plugins.import_named(kind, "config.data.source", "tasks").tasks(config.data)


def make_source(config: Any, cfg: JanusFlowConfig, tasks: Mapping | None = None,
                process_index: int | None = None, process_count: int | None = None,
                pixel_size: int | None = None) -> loader.Loader:
  """The configured input pipeline for this process.

  `pixel_size`: P of the run's `LatentSpace` (`models/latent_space.py`), the side of the
  uint8 `gen_pixels` every generation row carries; None: resolved from the config (the
  train loop passes the one it built).
  `tasks` ({task: (random-access data, converter)}, e.g. `tfds_source.split_source` items
  with converters to `records.py` records) replaces the data `config.data.source` names.
  """
  if pixel_size is None:
    pixel_size = latent_space.from_config(config, cfg).pixel_size
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  data = config.data
  workers, prefetch = data.get("workers", 0), data.get("prefetch", 2)
  if tasks is None and data.source == "synthetic":
    return loader.Loader(SyntheticBatches(config, cfg, pixel_size, index, count), workers,
                         prefetch, counts_examples=False)
  builder = processor.RowBuilder(tok_lib.make_tokenizer(config), config, cfg, pixel_size)
  batches = mixture.MixtureBatches(default_tasks(config) if tasks is None else tasks,
                                   builder, config.batch, seed=config.seed,
                                   shuffle=data.shuffle, process_index=index,
                                   process_count=count)
  return loader.Loader(batches, workers, prefetch)


def global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  """Process-local rows -> global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def batch_stats(batch: dict[str, np.ndarray], cfg: JanusFlowConfig) -> tuple[int, int]:
  """(tokens, images) processed by the LLM in a batch, for throughput figures."""
  gen_rows = int(np.sum(batch["gen_weights"] > 0))
  tokens = (int(batch["und_valid"].sum()) + int(batch["text_valid"].sum())
            + int(batch["gen_prompt_mask"].sum()) + gen_rows * (1 + cfg.num_gen_tokens))
  images = batch["und_images"].shape[0] + gen_rows
  if "edit_weights" in batch:  # edit rows: prompt (with the source's tokens) + the flow's
    edit_rows = int(np.sum(batch["edit_weights"] > 0))
    tokens += int(batch["edit_prompt_mask"].sum()) + edit_rows * (1 + cfg.num_gen_tokens)
    images += 2 * edit_rows  # the source through SigLIP, the target through the flow
  return tokens, images


__all__ = ["SyntheticBatches", "make_source", "global_batch", "batch_stats", "layout"]
