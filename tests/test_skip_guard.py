"""A task that drops out stops the run (`jf_jax/train/skip_guard.py`), naming the task,
the reason, the longest row and the key to raise; smaller shares go to the progress line.

The end-to-end case is the issue's: own files, 2-turn LLaVA conversations longer than
`batch.und_seq_len`, read through the real loader (user files, packing, counters).
"""

import json

import numpy as np
from PIL import Image
import pytest

from jf_jax import config_defaults
from jf_jax.data import pipeline
from jf_jax.models import config as model_config
from jf_jax.train import skip_guard

WINDOW = 5


def _files_config(tmp_path, und_seq_len: int):
  """Pixel-space tiny config on a LLaVA JSON of 6 two-turn conversations (word-level
  tokenizer: one token per word), understanding rows only."""
  for i in range(3):
    Image.fromarray(np.full((40, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
  turns = [{"from": "human", "value": "<image>\nhow many shapes are there?"},
           {"from": "gpt", "value": "there are two shapes"},
           {"from": "human", "value": "what color is the circle?"},
           {"from": "gpt", "value": "the circle is red"}]
  entries = [{"image": f"im{i % 3}.png", "conversations": turns} for i in range(6)]
  (tmp_path / "llava.json").write_text(json.dumps(entries))
  config = config_defaults.base_config()
  config_defaults.use_pixel_space(config.model, image_size=32, patch_size=8)
  config.data.update(dict(source="files", tokenizer="shapes", resize_images=True,
                          und_files=(str(tmp_path / "llava.json"),)))
  config.batch.update(dict(und_rows=2, text_rows=0, gen_rows=0, und_seq_len=und_seq_len))
  config.train.skip_window = WINDOW
  return config, model_config.from_config_dict(config.model)


def _run_guard(config, cfg, steps: int) -> dict:
  """Feeds the loader's counters to a guard after each of `steps` batches, as the loop
  does; returns the last log rates."""
  source = pipeline.make_source(config, cfg)
  guard = skip_guard.SkipGuard(config, 0, source.stats())
  try:
    for step in range(steps):
      next(source)
      guard.observe(step + 1, source.stats())
    return guard.log_rates(source.stats())
  finally:
    source.close()


def test_a_task_whose_rows_are_all_too_long_stops_with_the_key_to_raise(tmp_path):
  config, cfg = _files_config(tmp_path, und_seq_len=24)
  with pytest.raises(skip_guard.TaskDroppedError) as raised:
    _run_guard(config, cfg, steps=3 * WINDOW)
  message = str(raised.value)
  longest = int(message.split("the longest row seen is ")[1].split(" ")[0])
  assert longest > 24
  assert message.startswith(f"task 'und' dropped out: 10 of its 10 rows in steps 0-{WINDOW} "
                            "were skipped (too_long 10)"), message
  assert message.endswith(f"batch.und_seq_len=24: raise --config.batch.und_seq_len to at "
                          f"least {longest}"), message


def test_rows_that_fit_run_and_report_no_skips(tmp_path):
  config, cfg = _files_config(tmp_path, und_seq_len=160)
  assert _run_guard(config, cfg, steps=2 * WINDOW) == {}


def _stats(und_real: int, und_skipped: int, gen_real: int = 0, longest: int = 0) -> dict:
  return {"rows": {"und": und_real, "text": 0, "gen": gen_real},
          "skipped": {"und/too_long": min(und_skipped, 3)} if und_skipped else {},
          "draws": {"und/too_long": und_skipped} if und_skipped else {},
          "longest": {"und/too_long": longest} if longest else {}}


def _config():
  config = config_defaults.base_config()
  config.train.update(dict(skip_window=10, max_skip_rate=0.5))
  return config


def test_the_first_window_stops_only_when_all_rows_are_skipped():
  guard = skip_guard.SkipGuard(_config(), 0, _stats(0, 0))
  guard.observe(10, _stats(und_real=4, und_skipped=36, gen_real=40, longest=50))  # 90%
  with pytest.raises(skip_guard.TaskDroppedError, match="steps 10-20 .* at least 51"):
    guard.observe(20, _stats(und_real=14, und_skipped=66, gen_real=80, longest=51))  # 75%


def test_a_resumed_run_applies_the_rate_threshold_from_its_first_window():
  guard = skip_guard.SkipGuard(_config(), 100, _stats(400, 10))
  guard.observe(110, _stats(und_real=430, und_skipped=20))  # 10 of 40 skipped: 25%
  with pytest.raises(skip_guard.TaskDroppedError, match="21 of its 40 rows"):
    guard.observe(120, _stats(und_real=449, und_skipped=41, longest=7))


def test_smaller_shares_are_shown_per_reason():
  guard = skip_guard.SkipGuard(_config(), 0, _stats(0, 0))
  stats = _stats(und_real=30, und_skipped=10, gen_real=40)
  rates = guard.log_rates(stats)
  assert rates == {"data/skip_rate/und/too_long": 0.25}
  text = skip_guard.progress_text({**rates, "data/skipped_total": 3})
  assert text == " | skipped und/too_long 25% (3 examples)"
  assert guard.log_rates(stats) == {}  # a new window: nothing skipped since
  assert skip_guard.progress_text({"data/skipped_total": 0}) == ""
