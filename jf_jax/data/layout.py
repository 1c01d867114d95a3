"""The train batch layout: four fixed-shape sub-batches, one per task.

Every batch holds `und_rows` understanding conversations, `text_rows` text-only sequences,
`gen_rows` generation examples and `edit_rows` image edits (the stage's mixture ratio;
edits are off, 0 rows, unless a config turns them on), each padded to fixed lengths with
masks, so the jitted step never recompiles. Keys and shapes:

  und_ids        [und_rows, und_seq] int32   tokens (image slots hold placeholder ids)
  und_images     [und_rows, 1, S, S, 3] uint8  images for SigLIP (S = und image size)
  und_image_mask [und_rows, und_seq] bool    <begin_of_image> + placeholder positions
  und_valid      [und_rows, und_seq] bool    attention (key padding) mask
  und_targets    [und_rows, und_seq] int32   next token at each position
  und_weights    [und_rows, und_seq] f32     1 on supervised targets (answers + EOS only)
  text_ids / text_valid / text_targets / text_weights   [text_rows, text_seq]
  gen_prompt_ids  [gen_rows, prompt_len] int32  BOS + prompt, left-padded
  gen_prompt_mask [gen_rows, prompt_len] bool
  gen_pixels      [gen_rows, P, P, 3] uint8  the image's centre crop, P =
                                            `LatentSpace.pixel_size` (models/latent_space.py)
  gen_weights     [gen_rows] f32            1 for real rows, 0 for padding rows
  edit_prompt_ids  [edit_rows, edit_len] int32  BOS + prompt with the source image's
                                                 placeholders, left-padded (packing.py)
  edit_prompt_mask [edit_rows, edit_len] bool
  edit_image_mask  [edit_rows, edit_len] bool   <begin_of_image> + placeholder positions
  edit_images      [edit_rows, 1, S, S, 3] uint8  the source image for SigLIP
  edit_pixels      [edit_rows, P, P, 3] uint8  the edited image (the flow's target)
  edit_weights     [edit_rows] f32

One schema for every generation space: images travel as uint8 pixels (4x less to build,
copy between processes and send to the accelerators than float32); the train step turns
them into float32 model inputs on the devices (`device_inputs.py`) and then into the
flow's latents and SigLIP's REPA view (`train/latents.py`).
"""

from typing import Any

import jax
import numpy as np

from jf_jax.models.config import JanusFlowConfig


def edit_prompt_len(batch_cfg: Any) -> int:
  """`batch_cfg.edit_prompt_len` (a config written before edits existed: gen_prompt_len)."""
  return int(batch_cfg.get("edit_prompt_len", batch_cfg.gen_prompt_len))


def batch_shapes(batch_cfg: Any, cfg: JanusFlowConfig, pixel_size: int
                 ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Key -> (shape, numpy dtype) of a global batch; `pixel_size` = P of the run's
  `LatentSpace`."""
  u, t, g = batch_cfg.und_rows, batch_cfg.text_rows, batch_cfg.gen_rows
  e, el = batch_cfg.get("edit_rows", 0), edit_prompt_len(batch_cfg)
  s, p = cfg.und_encoder.image_size, pixel_size
  us, ts, pl = batch_cfg.und_seq_len, batch_cfg.text_seq_len, batch_cfg.gen_prompt_len
  shapes = {
      "und_ids": ((u, us), np.int32), "und_images": ((u, 1, s, s, 3), np.uint8),
      "und_image_mask": ((u, us), np.bool_), "und_valid": ((u, us), np.bool_),
      "und_targets": ((u, us), np.int32), "und_weights": ((u, us), np.float32),
      "text_ids": ((t, ts), np.int32), "text_valid": ((t, ts), np.bool_),
      "text_targets": ((t, ts), np.int32), "text_weights": ((t, ts), np.float32),
      "gen_prompt_ids": ((g, pl), np.int32), "gen_prompt_mask": ((g, pl), np.bool_),
      "gen_pixels": ((g, p, p, 3), np.uint8), "gen_weights": ((g,), np.float32),
      "edit_prompt_ids": ((e, el), np.int32), "edit_prompt_mask": ((e, el), np.bool_),
      "edit_image_mask": ((e, el), np.bool_), "edit_images": ((e, 1, s, s, 3), np.uint8),
      "edit_pixels": ((e, p, p, 3), np.uint8), "edit_weights": ((e,), np.float32),
  }
  return shapes


def abstract_batch(batch_cfg: Any, cfg: JanusFlowConfig, pixel_size: int
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  return {k: jax.ShapeDtypeStruct(shape, dtype)
          for k, (shape, dtype) in batch_shapes(batch_cfg, cfg, pixel_size).items()}


def rows_per_task(batch_cfg: Any) -> dict[str, int]:
  """{task: rows}; a config without `edit_rows` (written before edits existed) has none."""
  return {"und": batch_cfg.und_rows, "text": batch_cfg.text_rows, "gen": batch_cfg.gen_rows,
          "edit": int(batch_cfg.get("edit_rows", 0))}


def switch_step(batch_cfg: Any) -> int:
  """First step of the second mixture (`batch_cfg.switch`), 0 when the run has one."""
  switch = batch_cfg.get("switch")
  return int(switch.step) if switch is not None and switch.step else 0


def with_rows(batch_cfg: Any, rows: dict[str, int]) -> Any:
  """A copy of `batch_cfg` holding `rows` ({task: rows}) instead of its own."""
  out = batch_cfg.copy_and_resolve_references()
  with out.unlocked():
    for task, n in rows.items():
      out[f"{task}_rows"] = int(n)
  return out


def row_groups(batch_cfg: Any) -> list[tuple[str, dict[str, int]]]:
  """[(config prefix, rows per task)] of each mixture of a run: `config.batch`'s, and
  `config.batch.switch`'s when the run switches (for checks that name the key)."""
  groups = [("config.batch", rows_per_task(batch_cfg))]
  if switch_step(batch_cfg):
    groups.append(("config.batch.switch", rows_per_task(batch_cfg.switch)))
  return groups


def rows_at(batch_cfg: Any, step: int) -> dict[str, int]:
  """Rows per task of training step `step`: `batch_cfg`'s, or from `batch_cfg.switch.step`
  on the switch's."""
  start = switch_step(batch_cfg)
  return rows_per_task(batch_cfg.switch if start and step >= start else batch_cfg)


def slots_before(batch_cfg: Any, step: int) -> dict[str, int]:
  """Rows per task in all global batches before training step `step` (where each task's
  stream stands at that step; the switch changes the rate, not the stream)."""
  start, first = switch_step(batch_cfg), rows_per_task(batch_cfg)
  if not start or step <= start:
    return {task: n * step for task, n in first.items()}
  later = rows_per_task(batch_cfg.switch)
  return {task: n * start + later[task] * (step - start) for task, n in first.items()}


def check_batch(batch: dict, batch_cfg: Any, cfg: JanusFlowConfig, pixel_size: int
                ) -> None:
  """Raises naming the key when a batch does not have the configured layout."""
  expected = batch_shapes(batch_cfg, cfg, pixel_size)
  missing = sorted(set(expected) - set(batch))
  if missing:
    raise ValueError(f"batch is missing keys {missing}")
  for key, (shape, dtype) in expected.items():
    if tuple(batch[key].shape) != shape:
      raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {shape} "
                       "(from config.batch and config.model)")
    if batch[key].dtype != dtype:
      raise ValueError(f"batch[{key!r}] is {batch[key].dtype}, expected {np.dtype(dtype)}")
