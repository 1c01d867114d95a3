"""The shapes world (tfds, array_record) and user files as `MixtureSource`s.

`make_source(config, cfg, process_index, process_count)` is what `pipeline.make_source`
calls for `config.data.source` in ("shapes", "files"). All three tasks of the shapes world
read the same split, each in its own seeded order:

  und:  the image and `data.und_turns` of its question/answer pairs (a multi-turn
        conversation in random order; 0 = all), drawn per slot
  gen:  the image and its caption
  text: the scene's text-only description

The tfds dataset is generated on first use under `config.data.data_dir` (a few seconds).
"""

from typing import Any

import numpy as np

from jf_jax.data import layout
from jf_jax.data import mixture
from jf_jax.data import processor
from jf_jax.shapes import world as shapes_world
from jf_jax.data import tokenizer as tok_lib
from jf_jax.data import user_data
from jf_jax.data.records import BadExample
from jf_jax.models.config import JanusFlowConfig


def _und_converter(num_turns: int):
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


def shapes_tasks(data_cfg: Any, split: str | None = None) -> dict:
  """{task: (tfds data source, converter)} of one shapes-world split."""
  sources = shapes_world.load(data_cfg.data_dir, **shapes_world.config_kwargs(data_cfg))
  data = sources[split or data_cfg.split]
  return {"und": (data, _und_converter(data_cfg.get("und_turns", 1))),
          "gen": (data, lambda item, rng: {"image": item["image"],
                                           "caption": item["caption"]}),
          "text": (data, lambda item, rng: {"text": item["text"]})}


def file_tasks(data_cfg: Any) -> dict:
  """{task: (items, converter)} from `config.data.{und,gen,text}_files`."""
  tasks = {}
  if data_cfg.und_files:
    tasks["und"] = user_data.llava_files(list(data_cfg.und_files), data_cfg.image_root)
  if data_cfg.gen_files:
    tasks["gen"] = user_data.image_caption_files(list(data_cfg.gen_files), data_cfg.image_root)
  if data_cfg.text_files:
    tasks["text"] = user_data.text_files(list(data_cfg.text_files), data_cfg.text_unit)
  return tasks


def make_source(config: Any, cfg: JanusFlowConfig, process_index: int = 0,
                process_count: int = 1) -> mixture.MixtureSource:
  """This process's mixture source for `config.data.source` "shapes" or "files"."""
  kind = config.data.source
  if kind == "shapes":
    tasks = shapes_tasks(config.data)
  elif kind == "files":
    tasks = file_tasks(config.data)
  else:
    raise ValueError(f"tfds_source cannot read config.data.source={kind!r}")
  builder = processor.RowBuilder(tok_lib.make_tokenizer(config), config, cfg)
  return mixture.MixtureSource(tasks, layout.rows_per_task(config.batch), builder,
                               seed=config.seed, process_index=process_index,
                               process_count=process_count, shuffle=config.data.shuffle)
