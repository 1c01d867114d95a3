"""Random-access splits of any tfds dataset stored as array_record (grain reads them).

  data = tfds_source.split_source("my_dataset", "train", data_dir="/data/tfds")
  data = tfds_source.split_source(builder, "train")   # a builder object (e.g. generated)

The result supports `len` and `[i]`, which is all `mixture.task_rows` (a grain
`MapDataset.source`) needs; pair it with a converter to `records.py` records per task and
pass {task: (data, converter)} to `pipeline.make_source(..., tasks=...)`.
"""

import contextlib
import io
import time

from absl import logging
import tensorflow_datasets as tfds


def prepare_quietly(builder: tfds.core.DatasetBuilder) -> None:
  """Generates (or downloads) the dataset if needed, printing one line of our own instead
  of tfds' banner and progress bars; tfds' text goes to the log at INFO."""
  tfds.display_progress_bar(False)
  banner, start = io.StringIO(), time.time()
  with contextlib.redirect_stdout(banner):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if banner.getvalue().strip():  # tfds prints only when it prepared the dataset now
    logging.info("tfds: %s", banner.getvalue().strip())
    print(f"prepared the tfds dataset {builder.name} in {builder.data_dir} "
          f"({time.time() - start:.0f} s)", flush=True)


def split_source(builder: "str | tfds.core.DatasetBuilder", split: str,
                 data_dir: str | None = None, prepare: bool = True):
  """`builder` (object, or registered name under `data_dir`) -> random-access `split`.

  With `prepare`, a dataset not yet on disk is generated (or downloaded) first.
  """
  if isinstance(builder, str):
    builder = tfds.builder(builder, data_dir=data_dir or None, file_format="array_record")
  if prepare:
    prepare_quietly(builder)
  if split not in builder.info.splits:
    raise ValueError(f"tfds dataset {builder.name!r} has no split {split!r} "
                     f"(it has {sorted(builder.info.splits)})")
  return builder.as_data_source(split=split)
