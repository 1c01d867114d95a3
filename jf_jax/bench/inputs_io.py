"""Reading the benchmarks' input files; a bad line is named and skipped, the run goes on."""

import json
import os
import sys
from typing import Any, Iterator


def skip(path: str, where: Any, problem: str) -> None:
  """Tells the user which input is skipped and why (stderr; the run continues)."""
  print(f"{path}:{where}: skipped: {problem}", file=sys.stderr, flush=True)


def jsonl_lines(path: str) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) of each JSON line; blank and undecodable lines are
  skipped (undecodable ones named)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        value = json.loads(line)
      except json.JSONDecodeError as e:
        skip(path, f"line {number}", f"not JSON ({e})")
        continue
      if not isinstance(value, dict):
        skip(path, f"line {number}", f"a JSON {type(value).__name__}, not an object")
        continue
      yield number, value


def text_field(entry: dict, key: str) -> str | None:
  """entry[key] if it is a non-blank string, else None."""
  value = entry.get(key)
  return value if isinstance(value, str) and value.strip() else None
