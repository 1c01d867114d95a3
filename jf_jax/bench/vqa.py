"""VQA answers in LLaVA's `model_vqa` format.

In: a JSONL of {"question_id", "image" (a path under --image_root), "text"} (LLaVA's
question files for POPE, MME, GQA, VQAv2, ...). Out: OUT/answers.jsonl, one
{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} a line, which
LLaVA's per-benchmark conversion and scoring scripts read. Decoding is greedy by default.

Every question is padded to the longest prompt of the file and decoded by the engine
(`jf_jax.inference.engine`) in batches of `batch_per_device` x devices; the answers do not
depend on the device count. With --temperature > 0 question k of the file (0-based line
order of the valid questions) draws from fold_in(key(seed), k), whatever its batch. With
several processes each writes answers.<process>-of-<count>.jsonl (concatenate them).
"""

import argparse
import json
import os
import uuid

import jax
import numpy as np
import tqdm

from jf_jax.bench import devices
from jf_jax.bench import images
from jf_jax.bench import inputs_io
from jf_jax.data import packing
from jf_jax.data import preprocess
from jf_jax.data import records
from jf_jax.inference import engine as engine_lib
from jf_jax.inference import inputs

HELP = "LLaVA model_vqa answers: OUT/answers.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--questions", required=True,
                      help="JSONL of {question_id, image, text} (LLaVA model_vqa input)")
  parser.add_argument("--image_root", required=True, help="folder the 'image' paths are in")
  parser.add_argument("--answers", default="answers.jsonl", help="answers file under --out")
  parser.add_argument("--model_id", default=None,
                      help="'model_id' of each answer (default: the checkpoint's name)")
  parser.add_argument("--max_new_tokens", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--top_p", type=float, default=1.0)


def read_questions(path: str, image_root: str) -> list[dict]:
  """The valid question lines (with an id, a non-empty text and an existing image)."""
  questions, seen = [], set()
  for number, entry in inputs_io.jsonl_lines(path):
    problem = None
    if "question_id" not in entry:
      problem = "no 'question_id'"
    elif entry["question_id"] in seen:
      problem = f"question_id {entry['question_id']!r} again"
    elif inputs_io.text_field(entry, "text") is None:
      problem = "empty question ('text')"
    elif inputs_io.text_field(entry, "image") is None:
      problem = "no 'image'"
    elif not os.path.isfile(os.path.join(image_root, entry["image"])):
      problem = f"image {os.path.join(image_root, entry['image'])} does not exist"
    if problem:
      inputs_io.skip(path, f"line {number}", problem)
      continue
    seen.add(entry["question_id"])
    questions.append(entry)
  return questions


def answers_path(args) -> str:
  if jax.process_count() == 1:
    return os.path.join(args.out, args.answers)
  stem, ext = os.path.splitext(args.answers)
  return os.path.join(args.out,
                      f"{stem}.{jax.process_index()}-of-{jax.process_count()}{ext}")


def model_id(args) -> str:
  return args.model_id or os.path.basename(os.path.normpath(args.checkpoint))


def task_settings(args) -> dict:
  return {"questions": os.path.abspath(args.questions),
          "image_root": os.path.abspath(args.image_root), "model_id": model_id(args),
          "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
          "top_p": args.top_p}


def answered(path: str) -> set:
  """question_ids already in an answers file (a last line cut short by a killed run is
  dropped first, so the file stays valid JSONL)."""
  if not os.path.exists(path):
    return set()
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)
  return {entry["question_id"] for _, entry in inputs_io.jsonl_lines(path)
          if "question_id" in entry}


def run(args, engine: engine_lib.Engine, seed: int) -> None:
  if args.max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens={args.max_new_tokens} must be >= 1")
  questions = read_questions(args.questions, args.image_root)
  if not questions:
    return
  loaded = engine.loaded
  cfg, tok = loaded.cfg, loaded.tok
  seq = max(len(packing.und_prompt_ids(tok, tok.user_text(q["text"]),
                                       cfg.und_encoder.num_patches,
                                       loaded.system_prompt)[0]) for q in questions)
  path = answers_path(args)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if args.overwrite and os.path.exists(path):
    os.remove(path)
  done = answered(path)
  number_of = {q["question_id"]: k for k, q in enumerate(questions)}
  share = devices.process_share(questions)
  todo = [q for q in share if q["question_id"] not in done]
  if not todo:
    images.report(path, len(share), 0, 0, args.stop_after, "answers")
    return
  size = max(engine.batch_buckets)
  bar = tqdm.tqdm(total=len(todo), unit="q", dynamic_ncols=True,
                  disable=jax.process_index() != 0)
  for lo, hi in devices.batches(len(todo), size):
    batch, pixels = [], []
    for q in todo[lo:hi]:
      try:
        pixels.append(preprocess.load_image(os.path.join(args.image_root, q["image"])))
        batch.append(q)
      except records.BadExample as e:
        inputs_io.skip(args.questions, f"question_id {q['question_id']!r}", str(e))
    if batch:
      rows = inputs.understanding_prompts(tok, cfg, [q["text"] for q in batch], pixels,
                                          loaded.system_prompt)
      rows["ids"], rows["valid"], rows["image_mask"] = engine_lib.left_pad(
          rows["ids"], rows["valid"], seq, tok.pad_id, [rows["image_mask"]])
      n = len(batch)
      keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.key(seed), k))(
          np.array([number_of[q["question_id"]] for q in batch], np.uint32))
      tokens, lengths = engine.answer_rows(
          rows, keys, max_new_tokens=args.max_new_tokens,
          limits=np.full(n, args.max_new_tokens), temperature=np.full(n, args.temperature),
          top_p=np.full(n, args.top_p))
      with open(path, "a", encoding="utf-8") as f:
        for r, q in enumerate(batch):
          f.write(json.dumps(_answer_line(args, q, tok.decode(
              tokens[r, :lengths[r]].tolist()).strip())) + "\n")
    bar.update(hi - lo)
    if args.stop_after is not None and hi >= args.stop_after:
      break
  bar.close()
  images.report(path, len(share), len(todo), hi, args.stop_after, "answers")


def _answer_line(args, question: dict, text: str) -> dict:
  """One answer as LLaVA's model_vqa writes it (answer_id: stable across reruns)."""
  mid = model_id(args)
  return {"question_id": question["question_id"], "prompt": question["text"], "text": text,
          "answer_id": uuid.uuid5(uuid.NAMESPACE_URL,
                                  f"{mid}/{question['question_id']}").hex[:22],
          "model_id": mid, "metadata": {}}
