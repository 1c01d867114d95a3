r"""`python -m jf_jax.prepare {gen,und,text,edit} --input PATTERN... --output PREFIX`.

  python -m jf_jax.prepare gen --input 'gs://bucket/laion/*.tar' \
      --output gs://bucket/records/laion --shards 256 --image_size 384 --workers 8
  python -m jf_jax.prepare gen --input 'data/train-*.parquet' --output /data/rec/hf \
      --image_column image --caption_column text
  python -m jf_jax.prepare und --input llava.json --image_root /data/coco --output rec/llava
  python -m jf_jax.prepare text --input 'notes/*.txt' --output rec/notes
  python -m jf_jax.prepare edit --input edits.jsonl --output rec/edits   # {source,
      instruction, target} lines (config.data.edit_files' layout)

Writes PREFIX-SSSSS-of-NNNNN.array_record shards and PREFIX.json (docs/data.md, "Training
data at scale"). Rerunning the same command after a crash writes only the shards still
missing.
"""

import argparse
import json
import sys

from jf_jax.prepare import examples
from jf_jax.prepare import run


def parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m jf_jax.prepare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("task", choices=("gen", "und", "text", "edit"))
  p.add_argument("--input", nargs="+", required=True,
                 help="glob patterns, local or gs://: WebDataset .tar (gen), .parquet, "
                 "folders / .jsonl (gen), LLaVA .json (und), text files (text), .jsonl of "
                 "{source, instruction, target} (edit)")
  p.add_argument("--output", required=True, help="shard prefix, local or gs://")
  p.add_argument("--shards", type=int, default=0,
                 help="number of shards (0: one per unit of work, at most 1,024)")
  p.add_argument("--workers", type=int, default=0, help="worker processes (0: in-process)")
  p.add_argument("--image_size", type=int, default=384, help="stored short side (px)")
  p.add_argument("--jpeg_quality", type=int, default=95)
  p.add_argument("--max_pixels", type=int, default=50_000_000,
                 help="larger images are counted as bad (oversized_image)")
  p.add_argument("--caption_field", default="caption", help="caption key in KEY.json")
  p.add_argument("--image_column", default="image")
  p.add_argument("--caption_column", default="caption")
  p.add_argument("--text_column", default="text")
  p.add_argument("--image_root", default="", help="base of relative image paths")
  p.add_argument("--text_unit", default="line", choices=("line", "paragraph", "file"))
  p.add_argument("--no_progress", action="store_true")
  return p.parse_args(argv)


def main(argv: list[str]) -> int:
  args = parse(argv)
  settings = examples.Settings(
      task=args.task, image_size=args.image_size, jpeg_quality=args.jpeg_quality,
      max_pixels=args.max_pixels, caption_field=args.caption_field,
      image_column=args.image_column, caption_column=args.caption_column,
      text_column=args.text_column)
  try:
    index = run.prepare(args.task, args.input, args.output, settings, args.shards,
                        args.workers, args.image_root, args.text_unit,
                        show_progress=not args.no_progress)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps({"records": index["records"], "shards": len(index["shards"]),
                    "bad": {r: e["count"] for r, e in index["bad"].items()},
                    "index": args.output + ".json"}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
