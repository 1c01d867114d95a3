"""`python -m jf_jax.bench` on a tiny pixel-space checkpoint: each task's layout, the same
files on 1 and 8 devices and after an interrupted run, bad input lines, no overwriting.

The checkpoint is random tiny params written like `python -m jf_jax.convert` writes them
plus a word-level tokenizer; its generation.json names pixel space (no VAE to decode).
The CLI runs in-process (`cli.run(argv)`); conftest.py gives 8 fake CPU devices.
"""

import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from jf_jax.bench import cli
from jf_jax.bench import images
from jf_jax.sampling import image as image_sampling
import tiny_checkpoint

SIZE = tiny_checkpoint.config().model.latent_size  # pixel space: images are latent-sized
PROMPTS = ["a red circle", "a blue square to the left of a green triangle", "a red square"]
RUN_KEYS = {"task", "checkpoint", "checkpoint_step", "config_sha256", "dtype", "seed",
            "batch_per_device", "resolution", "quantize"}
IMAGE_KEYS = RUN_KEYS | {"solver", "steps", "guidance", "vae", "per_prompt"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """A params checkpoint, inputs for every task (with one bad entry each) and images."""
  root = tmp_path_factory.mktemp("bench")
  tiny_checkpoint.write_params_dir(str(root / "ckpt"))
  lines = [{"tag": "single_object", "prompt": PROMPTS[0]},
           {"tag": "broken", "include": []},  # no prompt: skipped, named as line 2
           {"tag": "position", "prompt": PROMPTS[1]},
           {"tag": "colors", "prompt": PROMPTS[2]}]
  (root / "geneval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
  (root / "dpg").mkdir()
  for stem, text in [("alpha", PROMPTS[0]), ("beta", PROMPTS[1]), ("empty", "  \n")]:
    (root / "dpg" / f"{stem}.txt").write_text(text)
  meta = {"img_a": {"category": "people", "prompt": PROMPTS[0]},
          "img_b": {"category": "animals", "prompt": PROMPTS[1]},
          "img_c": {"category": "people", "prompt": PROMPTS[2]},
          "img_d": {"category": "food"}}  # no prompt: skipped
  (root / "meta_data.json").write_text(json.dumps(meta))
  (root / "images").mkdir()
  rng = np.random.default_rng(0)
  for name in ("cat.png", "dog.jpg"):
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), np.uint8)).save(root / "images" / name)
  questions = [{"question_id": 7, "image": "cat.png", "text": "what color is the circle?"},
               {"question_id": 8, "image": "missing.png", "text": "is there a square?"},
               {"question_id": 9, "image": "dog.jpg", "text": "   "},
               {"question_id": "q10", "image": "dog.jpg", "text": "how many shapes?"},
               {"question_id": 11, "image": "cat.png", "text": "is there a square?"}]
  (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
  edits = [{"id": "e1", "image": "images/cat.png", "instruction": "make the red circle blue"},
           {"id": "e2", "image": "images/missing.png", "instruction": "remove the circle"},
           {"id": "e1", "image": "images/dog.jpg", "instruction": "remove the circle"},
           {"id": "../up", "image": "images/dog.jpg", "instruction": "remove the circle"},
           {"id": 4, "image": "images/dog.jpg", "instruction": "add a red square"}]
  (root / "edits.jsonl").write_text("".join(json.dumps(e) + "\n" for e in edits))
  return root


def _bench(root, task, out, *extra):
  common_flags = [f"--checkpoint={root / 'ckpt'}", f"--out={out}", "--batch_per_device=2"]
  if task == "vqa":
    inputs = [f"--questions={root / 'questions.jsonl'}", f"--image_root={root / 'images'}",
              "--max_new_tokens=3"]
  elif task == "edit":
    inputs = ["--steps=2", f"--inputs={root / 'edits.jsonl'}"]
  else:
    inputs = ["--steps=2", {
        "geneval": f"--metadata={root / 'geneval.jsonl'}",
        "dpg": f"--prompts={root / 'dpg'}",
        "mjhq": f"--meta={root / 'meta_data.json'}"}[task]]
  cli.run([task, *common_flags, *inputs, *extra])


def _files(out) -> dict[str, bytes]:
  """{relative path: bytes} of every output except run.json (its time and command vary)."""
  out = pathlib.Path(out)
  return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
          if p.is_file() and p.name != "run.json"}


def _settings(out) -> dict:
  return json.loads((pathlib.Path(out) / "run.json").read_text())["settings"]


def test_geneval_layout(root, tmp_path, capsys):
  out = tmp_path / "geneval"
  _bench(root, "geneval", out)
  assert "geneval.jsonl:line 2: skipped: no 'prompt'" in capsys.readouterr().err
  want = {f"{i:05d}/{name}" for i in (0, 2, 3)
          for name in ["metadata.jsonl", "grid.png"] + [f"samples/{k:05d}.png" for k in range(4)]}
  files = _files(out)
  assert set(files) == want
  lines = (root / "geneval.jsonl").read_text().splitlines()
  for i in (0, 2, 3):
    assert json.loads(files[f"{i:05d}/metadata.jsonl"]) == json.loads(lines[i])
    assert Image.open(out / f"{i:05d}" / "samples" / "00001.png").size == (SIZE, SIZE)
    assert Image.open(out / f"{i:05d}" / "grid.png").size == (2 * SIZE, 2 * SIZE)
  samples = [np.asarray(Image.open(out / "00000" / "samples" / f"{k:05d}.png")) for k in range(4)]
  assert not np.array_equal(samples[0], samples[1])  # each sample its own noise
  settings = _settings(out)
  assert set(settings) == IMAGE_KEYS | {"metadata"}
  assert (settings["steps"], settings["solver"], settings["per_prompt"],
          settings["resolution"]) == (2, "euler", 4, [SIZE, SIZE])


def test_dpg_layout(root, tmp_path, capsys):
  out = tmp_path / "dpg"
  _bench(root, "dpg", out)
  assert "empty.txt:line 1: skipped: empty prompt file" in capsys.readouterr().err
  assert set(_files(out)) == {"alpha.png", "beta.png"}
  assert Image.open(out / "alpha.png").size == (2 * SIZE, 2 * SIZE)  # 2 x 2 grid
  assert set(_settings(out)) == IMAGE_KEYS | {"prompts"}


def test_mjhq_layout(root, tmp_path, capsys):
  out = tmp_path / "mjhq"
  _bench(root, "mjhq", out)
  assert "meta_data.json:id 'img_d': skipped: no prompt" in capsys.readouterr().err
  assert set(_files(out)) == {"people/img_a.png", "animals/img_b.png", "people/img_c.png"}
  assert Image.open(out / "animals" / "img_b.png").size == (SIZE, SIZE)
  assert set(_settings(out)) == IMAGE_KEYS | {"meta"}


def test_vqa_layout_and_bad_lines(root, tmp_path, capsys):
  out = tmp_path / "vqa"
  _bench(root, "vqa", out)
  err = capsys.readouterr().err
  assert "questions.jsonl:line 2: skipped: image" in err and "missing.png" in err
  assert "questions.jsonl:line 3: skipped: empty question" in err
  answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
  assert [a["question_id"] for a in answers] == [7, "q10", 11]
  for a in answers:
    assert set(a) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert a["model_id"] == "ckpt" and a["metadata"] == {} and isinstance(a["text"], str)
  assert answers[0]["prompt"] == "what color is the circle?"
  assert len({a["answer_id"] for a in answers}) == 3
  settings = _settings(out)
  assert set(settings) == RUN_KEYS | {"questions", "image_root", "model_id",
                                      "max_new_tokens", "temperature", "top_p"}
  assert settings["temperature"] == 0.0  # greedy by default


def test_edit_layout_and_bad_lines(root, tmp_path, capsys):
  """One PNG per valid line named by its id, run.json with both guidance weights; bad
  lines named and skipped; the same files on 1 device and 8."""
  out = tmp_path / "edit"
  _bench(root, "edit", out, "--guidance_text=3", "--guidance_image=1.25")
  err = capsys.readouterr().err
  assert "edits.jsonl:line 2: skipped: image" in err and "missing.png" in err
  assert "edits.jsonl:line 3: skipped: id 'e1' again" in err
  assert "edits.jsonl:line 4: skipped: id '../up' is not a plain file name" in err
  files = _files(out)
  assert sorted(files) == ["4.png", "e1.png"]
  assert np.asarray(Image.open(out / "e1.png")).shape == (SIZE, SIZE, 3)
  settings = _settings(out)
  assert set(settings) == RUN_KEYS | {"inputs", "steps", "solver", "guidance_text",
                                      "guidance_image", "vae"}
  assert (settings["guidance_text"], settings["guidance_image"]) == (3.0, 1.25)
  _bench(root, "edit", tmp_path / "one", "--guidance_text=3", "--guidance_image=1.25",
         "--devices=1")
  assert _files(tmp_path / "one") == files


@pytest.mark.parametrize("task", ["geneval", "vqa"])
def test_one_device_and_eight_write_the_same_files(root, tmp_path, task):
  _bench(root, task, tmp_path / "one", "--devices=1")
  _bench(root, task, tmp_path / "eight")
  one, eight = _files(tmp_path / "one"), _files(tmp_path / "eight")
  assert one and one == eight
  assert _settings(tmp_path / "one") == _settings(tmp_path / "eight")


@pytest.mark.parametrize("task", ["geneval", "vqa"])
def test_interrupted_run_resumes_to_the_same_files(root, tmp_path, task, capsys):
  _bench(root, task, tmp_path / "whole")
  # 1 device (2 rows a call) stops after the first prompt; the rest resumes on 8
  _bench(root, task, tmp_path / "parts", "--stop_after=1", "--devices=1")
  assert "(--stop_after=1); " in capsys.readouterr().out  # it says it stopped
  partial, whole = _files(tmp_path / "parts"), _files(tmp_path / "whole")
  assert partial and partial != whole
  if task == "geneval":  # no prompt folder without its images
    folders = {name.split("/")[0] for name in partial}
    assert all(f"{folder}/samples/00000.png" in partial for folder in folders), partial
  for name, data in partial.items():  # images: final; the answers file: its first lines
    assert whole[name].startswith(data) if name.endswith(".jsonl") else whole[name] == data
  if task == "vqa":  # a run killed while writing leaves a cut line; the rerun drops it
    with open(tmp_path / "parts" / "answers.jsonl", "a") as f:
      f.write('{"question_id": 11, "prom')
  _bench(root, task, tmp_path / "parts")
  assert _files(tmp_path / "parts") == whole
  capsys.readouterr()
  _bench(root, task, tmp_path / "parts")  # finished: says so, writes nothing
  assert "present, nothing to do" in capsys.readouterr().out
  assert _files(tmp_path / "parts") == whole


def test_nothing_written_is_overwritten_unless_asked(root, tmp_path):
  out = tmp_path / "mjhq"
  _bench(root, "mjhq", out)
  mine = out / "people" / "img_a.png"
  Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(mine)
  kept = mine.read_bytes()
  _bench(root, "mjhq", out)
  assert mine.read_bytes() == kept
  with pytest.raises(ValueError, match="records other settings .*steps: 2 on disk vs 3 now"):
    _bench(root, "mjhq", out, "--steps=3")
  assert mine.read_bytes() == kept
  _bench(root, "mjhq", out, "--overwrite")
  assert mine.read_bytes() != kept
  assert _files(out) == _files(_fresh(root, tmp_path))


def _fresh(root, tmp_path):
  out = tmp_path / "fresh"
  _bench(root, "mjhq", out)
  return out


def test_each_image_has_its_own_noise_key():
  """Row noise depends only on (seed, prompt index, sample index), not on its batch."""
  keys = images.noise_keys(3, np.array([0, 0, 5]), np.array([0, 1, 0]))
  noise = image_sampling.initial_noise(keys, 3, (2, 2, 4))
  alone = image_sampling.initial_noise(images.noise_keys(3, np.array([5]), np.array([0])),
                                       1, (2, 2, 4))
  np.testing.assert_array_equal(noise[2], alone[0])
  assert not np.array_equal(noise[0], noise[1]) and not np.array_equal(noise[0], noise[2])
  other_seed = image_sampling.initial_noise(
      images.noise_keys(4, np.array([5]), np.array([0])), 1, (2, 2, 4))
  assert not np.array_equal(other_seed[0], alone[0])
