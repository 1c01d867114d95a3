"""The `shapes_world` tfds dataset, generated on the spot: no downloads, no TensorFlow.

Each example is one scene (`scene.py`) with its image, a generation caption,
question/answer pairs for understanding, text-only sentences and the ground-truth objects.
Example i of a split is a pure function of (config seed, split, i), so the same config
gives the same bytes on any machine. Stored as array_record with `tfds.features.Tensor`
and `Text` only (the `Image` feature would need TensorFlow); read it back with
`load(...)` -> `{split: random-access data source}`.

  from jf_jax.shapes import world as shapes_world
  sources = shapes_world.load("/tmp/tfds", image_size=32)   # builds on first use
  sources["train"][0]["caption"]  # 'a red circle to the left of a blue square'

Splits: train and validation scenes never contain a held-out object pair
(`shapes_scene.holdout_pairs`); every test scene does, so every test caption is a
combination never seen in training.
"""

import contextlib
import dataclasses
import io

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from jf_jax.shapes import scene as shapes_scene

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class ShapesWorldConfig(tfds.core.BuilderConfig):
  image_size: int = 32
  layout: str = "columns"  # shapes_scene.LAYOUTS
  seed: int = 0
  holdout_seed: int = 0
  num_train: int = 20_000
  num_validation: int = 1_000
  num_test: int = 1_000


def config_for(image_size: int = 32, seed: int = 0, num_train: int = 20_000,
               num_validation: int = 1_000, num_test: int = 1_000,
               holdout_seed: int = 0, layout: str = "columns") -> ShapesWorldConfig:
  """A builder config whose name spells out every parameter (one directory per variant)."""
  shapes_scene.check_layout(layout)
  name = (f"s{image_size}_{layout}_seed{seed}_hold{holdout_seed}_"
          f"n{num_train}-{num_validation}-{num_test}")
  return ShapesWorldConfig(name=name, image_size=image_size, layout=layout, seed=seed,
                           holdout_seed=holdout_seed, num_train=num_train,
                           num_validation=num_validation, num_test=num_test)


def config_kwargs(data_cfg) -> dict:
  """`config_for` keyword arguments from a run's `config.data` (configs/, docs/data.md)."""
  return dict(image_size=data_cfg.image_size, layout=data_cfg.get("world_layout", "columns"),
              seed=data_cfg.world_seed, num_train=data_cfg.num_train,
              num_validation=data_cfg.num_validation, num_test=data_cfg.num_test)


class ShapesWorld(tfds.core.GeneratorBasedBuilder):
  """One to three coloured shapes on a plain background, with captions and questions."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "Layouts: 'columns' (new default) and 'free' (1.0.0's)."}
  BUILDER_CONFIGS = [config_for()]
  # No checksums file to find: skips tfds' source-path lookup, which needs the optional
  # `importlib_resources` package for builders defined inside a package.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
            "questions": tfds.features.Sequence(tfds.features.Text()),
            "answers": tfds.features.Sequence(tfds.features.Text()),
            "text": tfds.features.Text(),
            # Ground truth, left to right: colour / shape indices and (x0, y0, x1, y1).
            "colors": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "shapes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.int32),
        }),
        homepage="https://arxiv.org/abs/2411.07975",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    c = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, num: int):
    c = self.builder_config
    holdout = shapes_scene.holdout_pairs(c.holdout_seed)
    for i in range(num):
      yield i, make_example(c.seed, split, i, c.image_size, holdout, c.layout)


def make_example(seed: int, split: str, index: int, size: int, holdout: frozenset,
                 layout: str = "columns") -> dict:
  """Example `index` of `split`: a pure function of its arguments."""
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  scene = shapes_scene.sample_scene(rng, size, holdout, test=split == "test", layout=layout)
  qa = shapes_scene.questions(scene, rng)
  return {
      "image": shapes_scene.render(scene, size),
      "caption": shapes_scene.caption(scene),
      "questions": [q for q, _ in qa],
      "answers": [a for _, a in qa],
      "text": shapes_scene.description(scene),
      "colors": np.array([o.color for o in scene], np.int32),
      "shapes": np.array([o.shape for o in scene], np.int32),
      "boxes": np.array([o.box for o in scene], np.int32).reshape(-1, 4),
  }


def scene_of(example: dict) -> list[shapes_scene.Obj]:
  """The ground-truth scene of a stored example."""
  return [shapes_scene.Obj(int(c), int(s), tuple(int(v) for v in b))
          for c, s, b in zip(example["colors"], example["shapes"], example["boxes"])]


def builder(data_dir: str | None = None, **config_kwargs) -> ShapesWorld:
  """The builder for a config (see `config_for` for the keyword arguments)."""
  config = config_for(**config_kwargs)
  # tfds refuses a new config object named like a registered one; pass the name then.
  registered = {c.name for c in ShapesWorld.BUILDER_CONFIGS}
  return ShapesWorld(data_dir=data_dir or None,
                     config=config.name if config.name in registered else config,
                     file_format="array_record")


def _prepare_quietly(b: ShapesWorld) -> None:
  """Generates the dataset if needed, with one line of our own instead of tfds' banner
  and progress bars (a few seconds of work); tfds' text goes to the log at INFO."""
  if not b.is_prepared():
    print(f"generating the shapes world in {b.data_dir}", flush=True)
  tfds.display_progress_bar(False)
  banner = io.StringIO()
  with contextlib.redirect_stdout(banner):
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if banner.getvalue().strip():
    logging.info("tfds: %s", banner.getvalue().strip())


def load(data_dir: str | None = None, **config_kwargs) -> dict:
  """{split: random-access source}; generates the dataset first if it is not there yet.

  Items are dicts of numpy arrays; text fields come back as `bytes`.
  """
  b = builder(data_dir, **config_kwargs)
  _prepare_quietly(b)
  return {split: b.as_data_source(split=split) for split in _SPLIT_IDS}
