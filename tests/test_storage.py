"""User paths in a bucket (`data/storage.py`), against the storage emulator
(`conftest.gcs`): glob patterns and their one-line errors, an Orbax params directory
written to and read from gs:// (what `train.init_params_from` reads; tensorstore's GCS
driver), a tokenizer.json read from gs://, and sample.py's PNG grid written to gs://.
"""

import io
import re
import json

from etils import epath
import jax
import numpy as np
from PIL import Image
import pytest

from jf_jax.checkpoint import params_io
from jf_jax.data import storage
from jf_jax.inference import grid


def test_expand_globs_a_bucket_and_names_what_matches_nothing(gcs):
  del gcs
  for name in ("a/x-0.txt", "a/x-1.txt", "a/sub/y.txt"):
    epath.Path(f"gs://bucket/glob/{name}").write_text(name)
  assert storage.expand(["gs://bucket/glob/a/x-*.txt"], "s") == [
      "gs://bucket/glob/a/x-0.txt", "gs://bucket/glob/a/x-1.txt"]
  assert storage.expand(["gs://bucket/glob/a/sub/y.txt"], "s") == [
      "gs://bucket/glob/a/sub/y.txt"]
  for missing in ("gs://bucket/glob/a/z-*.txt", "gs://no-such-bucket/a/*.txt",
                  "gs://bucket/glob/nothing.txt"):
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"setting: {missing!r} matches no file")):
      storage.expand([missing], "setting")


def test_params_directory_round_trips_through_the_bucket(gcs):
  del gcs
  params = {"dense": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
                      "bias": np.ones(4, np.float32)}}
  directory = "gs://bucket/ckpt/converted"
  params_io.save_params(directory, params, {"model": "tiny"},
                        generation={"data": {"gen_space": "pixel"}})
  assert params_io.checkpoint_kind(directory) == params_io.PARAMS
  assert json.loads(storage.read_text(directory + "/model.json")) == {"model": "tiny"}
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  restored = params_io.load_params(directory, target)
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  with pytest.raises(FileExistsError, match="not empty"):
    params_io.save_params(directory, params, {})  # nothing is overwritten
  with pytest.raises(FileNotFoundError, match="init_params_from=gs://bucket/ckpt/none"):
    params_io.checkpoint_kind("gs://bucket/ckpt/none", "init_params_from")


def test_tokenizer_and_grid_in_the_bucket(gcs, tmp_path):
  del gcs
  from jf_jax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  import release_fixtures  # pylint: disable=g-import-not-at-top
  local = release_fixtures.write_tokenizer(str(tmp_path / "release"))
  epath.Path(local, "tokenizer.json").copy(
      epath.Path("gs://bucket/release/tokenizer.json"), overwrite=True)
  remote = tok_lib.from_checkpoint_dir("gs://bucket/release")
  here = tok_lib.from_checkpoint_dir(local)
  assert remote.encode("a red fox") == here.encode("a red fox")
  images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), np.uint8)
  grid.save_grid(images, "gs://bucket/out/grid.png")
  png = Image.open(io.BytesIO(epath.Path("gs://bucket/out/grid.png").read_bytes()))
  np.testing.assert_array_equal(np.asarray(png)[:8, :8], images[0])
