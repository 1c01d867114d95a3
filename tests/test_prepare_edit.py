"""`python -m jf_jax.prepare edit`: a JSONL of {source, instruction, target} (the layout
`config.data.edit_files` reads) of generated shapes-world edits, with a malformed line, a
missing target and an empty instruction -> ArrayRecord shards; the index counts and names
the bad lines; training (`config.data.source = "records"`, `edit_records`) reads the
records back into edit rows whose source, target and instruction are the inputs'.
"""

import importlib
import json
import os

import numpy as np
from PIL import Image

from jf_jax.data import pipeline
from jf_jax.data import preprocess
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.prepare import examples
from jf_jax.prepare import run
from jf_jax.shapes import detector
from jf_jax.shapes import edits
from jf_jax.shapes import scene as shapes_scene
import config_files

cli = importlib.import_module("jf_jax.prepare.__main__")  # `python -m jf_jax.prepare`
SIZE = 32  # the tiny config's image size: stored as it is (never enlarged)
NUM_EDITS = 6


def write_edits(folder) -> list[dict]:
  """NUM_EDITS shapes-world edits as PNGs + edits.jsonl (relative paths), then three bad
  lines; returns the good edits' {source, target: [(colour, shape)], instruction,
  source_image, target_image (uint8), source_png, target_png (the files' bytes)}."""
  holdout = shapes_scene.holdout_pairs(0)
  rng = np.random.default_rng(0)
  good, lines = [], []
  while len(good) < NUM_EDITS:
    scene = shapes_scene.sample_scene(rng, SIZE, holdout, test=False)
    kind = edits.EDIT_TYPES[len(good) % len(edits.EDIT_TYPES)]
    if not edits.possible(kind, len(scene)):
      continue
    edit = edits.make_edit(rng, scene, SIZE, holdout, test=False, kind=kind)
    i = len(good)
    pixels = {}
    for name, objects in (("source", edit.source), ("target", edit.target)):
      pixels[name] = shapes_scene.render(list(objects), SIZE)
      Image.fromarray(pixels[name]).save(folder / f"{i}_{name}.png")
      pixels[f"{name}_png"] = (folder / f"{i}_{name}.png").read_bytes()
    lines.append(json.dumps({"source": f"{i}_source.png", "instruction": edit.instruction,
                             "target": f"{i}_target.png"}))
    good.append({"source": edits.pairs(edit.source), "target": edit.target_pairs,
                 "instruction": edit.instruction, "source_image": pixels["source"],
                 "target_image": pixels["target"], "source_png": pixels["source_png"],
                 "target_png": pixels["target_png"]})
  lines += ["{not json",
            json.dumps({"source": "0_source.png", "instruction": "remove the red circle",
                        "target": "gone.png"}),
            json.dumps({"source": "0_source.png", "instruction": "  ", "target": "0_target.png"})]
  (folder / "edits.jsonl").write_text("\n".join(lines) + "\n")
  return good


def test_prepare_edit_then_train_reads_the_inputs_back(tmp_path):
  good = write_edits(tmp_path)
  prefix = str(tmp_path / "rec" / "edits")
  settings = examples.Settings(task="edit", image_size=SIZE)
  index = run.prepare("edit", [str(tmp_path / "edits.jsonl")], prefix, settings,
                      num_shards=2, show_progress=False)
  assert index["records"] == NUM_EDITS and index["task"] == "edit"
  assert [s["records"] for s in index["shards"]] == [5, 1]  # 9 lines in units of 5 and 4
  assert {r: e["count"] for r, e in index["bad"].items()} == {
      "bad_record": 1, "missing_image": 1, "missing_instruction": 1}
  assert "target:" in index["bad"]["missing_image"]["examples"][0]
  assert "gone.png" in index["bad"]["missing_image"]["examples"][0]
  # The same job by its command line finds every shard done and writes nothing.
  mtimes = sorted(os.path.getmtime(p) for p in (tmp_path / "rec").iterdir()
                  if p.suffix == ".array_record")
  assert cli.main(["edit", "--input", str(tmp_path / "edits.jsonl"), "--output", prefix,
                   "--shards", "2", "--image_size", str(SIZE), "--no_progress"]) == 0
  assert sorted(os.path.getmtime(p) for p in (tmp_path / "rec").iterdir()
                if p.suffix == ".array_record") == mtimes

  config = config_files.load("tiny_shapes")
  config.data.update(dict(source="records", resize_images=True,
                          edit_records=(prefix + "-*.array_record",)))
  config.batch.update(dict(und_rows=0, text_rows=0, gen_rows=0, edit_rows=NUM_EDITS))
  cfg = model_config.from_config_dict(config.model)
  source = pipeline.make_source(config, cfg)
  batch = next(source)
  source.close()
  assert batch["edit_weights"].tolist() == [1.0] * NUM_EDITS  # one epoch: every record once
  tok = tok_lib.make_tokenizer(config)
  got = []
  for r in range(NUM_EDITS):
    source_image = batch["edit_images"][r, 0]
    target_image = batch["edit_pixels"][r]
    text = [int(t) for t, keep in zip(batch["edit_prompt_ids"][r], batch["edit_prompt_mask"][r])
            if keep]
    instruction = tok.decode(text).split("\n")[1]  # "User: ... \n{instruction}\n\nAssistant:"
    got.append((instruction, detector.scene(source_image), detector.scene(target_image)))
    want = next(g for g in good if g["instruction"] == got[-1][0])
    # The rows hold the inputs re-encoded once (JPEG, quality 95), exactly, and close to
    # the PNGs (a few levels on average at 32 px).
    for image, name in ((source_image, "source"), (target_image, "target")):
      stored = preprocess.load_image(examples.reencode(want[f"{name}_png"], settings))
      np.testing.assert_array_equal(image, stored)
      assert np.abs(image.astype(int) - want[f"{name}_image"]).mean() < 8
  assert sorted(got) == sorted((g["instruction"], g["source"], g["target"]) for g in good)


def test_edit_inputs_other_than_jsonl_are_one_line_naming_the_path(tmp_path, capsys):
  tar = tmp_path / "edits.tar"
  tar.write_bytes(b"")
  assert cli.main(["edit", "--input", str(tar), "--output", str(tmp_path / "rec"),
                   "--no_progress"]) == 1
  assert capsys.readouterr().err.splitlines() == [
      f"error: --input {tar}: edit inputs are .jsonl files of {{source, instruction, "
      "target} lines (config.data.edit_files' layout)"]
