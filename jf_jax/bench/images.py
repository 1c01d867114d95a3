"""Text-to-image for the benchmarks: per-image noise keys, batches over the local devices,
resume, progress.

Image k of prompt i starts from the noise of key fold_in(fold_in(key(seed), i), k), and
every prompt is padded to the longest prompt of the whole input file (positions count from
the padded start, so the pad length is part of a row's input). The engine
(`jf_jax.inference.engine`) runs batches of `batch_per_device` x devices rows split over
the devices; a row's result depends only on its own inputs and key, so the images are the
same on 1 device, 8 devices or a pod.
"""

import dataclasses
import os
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import tqdm

from jf_jax.bench import devices
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import grid
from jf_jax.inference import inputs


@dataclasses.dataclass(frozen=True)
class ImageSettings:
  """Sampling flags shared by the image tasks."""
  steps: int = 30
  guidance: float = 2.0
  solver: str = "euler"
  seed: int = 0
  batch_per_device: int = 4


@dataclasses.dataclass
class ImageJob:
  """One prompt's images still to make and where they go.

  index: the prompt's index in its input file (its noise keys derive from it).
  samples: the sample indices to generate.
  save: called once with {sample index: uint8 [H, W, 3]} when all of them are made.
  """
  index: int
  samples: list[int]
  save: Callable[[dict[int, np.ndarray]], None]


def noise_keys(seed: int, prompt_index: np.ndarray, sample_index: np.ndarray) -> jax.Array:
  """[n] keys, fold_in(fold_in(key(seed), prompt), sample) for each pair."""
  base = jax.random.key(seed)
  fold = jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(base, p), s))
  return fold(jnp.asarray(prompt_index, jnp.uint32), jnp.asarray(sample_index, jnp.uint32))


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a PNG via a temporary file, so an interrupted run leaves no partial file
  that a resumed run would take as done."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(image).save(path + ".tmp", format="PNG")
  os.replace(path + ".tmp", path)


def save_grid_png(path: str, images: np.ndarray) -> None:
  """`grid.save_grid` (ceil(sqrt(n)) columns, no gaps) via a temporary file."""
  tmp = path + ".tmp.png"
  grid.save_grid(images, tmp)
  os.replace(tmp, path)


def generate(engine: engine_lib.Engine, prompts: Mapping[int, str], jobs: list[ImageJob],
             settings: ImageSettings, stop_after: int | None = None) -> int:
  """Makes every job's images and saves them; returns the number of jobs finished.

  Args:
    prompts: every valid prompt of the input file by index (all processes' prompts: they
      set the common padded length).
    jobs: this process's jobs (what is left to make).
    stop_after: stop once this many jobs are saved (to bound a run; resuming finishes it).
  """
  units = [(j, k) for j, job in enumerate(jobs) for k in job.samples]
  if not units:
    return 0
  indices = sorted(prompts)
  ids, mask = inputs.generation_prompts(engine.loaded.tok, [prompts[i] for i in indices])
  row_of = {index: row for row, index in enumerate(indices)}
  size = settings.batch_per_device * engine.mesh.size
  made: dict[int, dict[int, np.ndarray]] = {}
  finished = 0
  bar = tqdm.tqdm(total=len(units), unit="img", dynamic_ncols=True,
                  disable=jax.process_index() != 0)
  for lo, hi in devices.batches(len(units), size):
    chunk = units[lo:hi]
    rows = np.array([row_of[jobs[j].index] for j, _ in chunk])
    keys = noise_keys(settings.seed, np.array([jobs[j].index for j, _ in chunk]),
                      np.array([k for _, k in chunk]))
    out = engine.generate_rows(ids[rows], mask[rows], keys, steps=settings.steps,
                               guidance=settings.guidance)
    for (j, k), image in zip(chunk, out):
      made.setdefault(j, {})[k] = image
      if len(made[j]) == len(jobs[j].samples):
        jobs[j].save(made.pop(j))
        finished += 1
    bar.update(len(chunk))
    if stop_after is not None and finished >= stop_after:
      break
  bar.close()
  return finished


def report(out: str, total: int, left: int, finished: int, stop_after: int | None,
           what: str) -> None:
  """The run's last line (process 0): nothing to do, stopped by --stop_after, or done.

  total: this process's outputs; left: how many were missing at the start; finished: how
  many of those this run wrote.
  """
  if jax.process_index() != 0:
    return
  if not left:
    print(f"{out}: all {total} {what} present, nothing to do (--overwrite regenerates "
          "them)", flush=True)
  elif finished < left and stop_after is not None:
    print(f"{out}: stopped after {finished} {what} (--stop_after={stop_after}); "
          f"{left - finished} of {total} still missing: run the same command again to "
          "finish", flush=True)
  else:
    print(f"{out}: wrote {finished} {what}; all {total} present", flush=True)
