"""The shapes world as task data for the mixture: {task: (random-access data, converter)}.

`config.data.source = "shapes"` makes the data layer call `tasks` here. All three tasks read
the same split, each in its own seeded order:

  und:  the image and `data.und_turns` of its question/answer pairs (a multi-turn
        conversation in random order; 0 = all), drawn per slot
  gen:  the image and its caption
  text: the scene's text-only description
  edit: the image, an instruction and the edited image (`edits.py`: a random edit of
        the scene, drawn per slot; test-split edits end in held-out compositions)

The tfds dataset is generated on first use under `config.data.data_dir` (a few seconds).
"""

from typing import Any

import numpy as np

from jf_jax.data import tfds_source
from jf_jax.data.records import BadExample
from jf_jax.shapes import edits
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world


def und_converter(num_turns: int):
  """item -> und record with `num_turns` random question/answer turns (0 = all of them).

  More turns per image supervise more answers per understanding row for little extra
  sequence (a shapes-world question/answer turn is ~12 tokens, the image 65).
  """
  if num_turns < 0:
    raise ValueError(f"config.data.und_turns must be >= 0 (0 = all), got {num_turns}")

  def convert(item: dict, rng: np.random.Generator) -> dict:
    questions, answers = list(item["questions"]), list(item["answers"])
    if not questions or len(questions) != len(answers):
      raise BadExample("bad_record", f"{len(questions)} questions, {len(answers)} answers")
    order = rng.permutation(len(questions))
    if num_turns:
      order = order[:num_turns]
    return {"image": item["image"], "turns": [(questions[i], answers[i]) for i in order]}

  return convert


def gen_record(item: dict, rng: np.random.Generator) -> dict:
  del rng
  return {"image": item["image"], "caption": item["caption"]}


def text_record(item: dict, rng: np.random.Generator) -> dict:
  del rng
  return {"text": item["text"]}


def edit_converter(data_cfg: Any, split: str):
  """item -> edit record {"image": source, "instruction", "target": edited image} of one
  random edit per slot (`edits.make_edit`, the split's held-out rule)."""
  kwargs = shapes_world.config_kwargs(data_cfg)
  size, layout = kwargs["image_size"], kwargs["layout"]
  holdout = shapes_scene.holdout_pairs(kwargs.get("holdout_seed", 0))  # as world.py

  def convert(item: dict, rng: np.random.Generator) -> dict:
    edit = edits.make_edit(rng, shapes_world.scene_of(item), size, holdout,
                           test=split == "test", layout=layout)
    return {"image": item["image"], "instruction": edit.instruction,
            "target": shapes_scene.render(list(edit.target), size)}

  return convert


def tasks(data_cfg: Any, split: str | None = None) -> dict:
  """{task: (tfds data source, converter)} of one shapes-world split."""
  split = split or data_cfg.split
  builder = shapes_world.builder(data_cfg.data_dir, **shapes_world.config_kwargs(data_cfg))
  data = tfds_source.split_source(builder, split)
  return {"und": (data, und_converter(data_cfg.get("und_turns", 1))),
          "gen": (data, gen_record), "text": (data, text_record),
          "edit": (data, edit_converter(data_cfg, split))}
