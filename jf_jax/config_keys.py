r"""Lists every key of a config file with its value: what `--config.KEY=VALUE` can set.

  python -m jf_jax.config_keys                          # configs/default.py
  python -m jf_jax.config_keys --config configs/janusflow_1p3b_finetune.py
  python -m jf_jax.config_keys --config configs/tiny.py --config.batch.und_rows=8

One line per key, `config.batch.und_rows = 4`, in the config's order.
"""

import os
from typing import Any, Iterator

from ml_collections import config_flags

from jf_jax import entry_point

def flat_items(config: Any, prefix: str = "config") -> Iterator[tuple[str, Any]]:
  """(dotted key, value) of every leaf of a ConfigDict, depth first."""
  for key, value in config.items():
    if hasattr(value, "items") and not isinstance(value, dict):
      yield from flat_items(value, f"{prefix}.{key}")
    else:
      yield f"{prefix}.{key}", value


def main() -> None:
  """Defines --config (only when run: importing `flat_items` defines no flag) and lists."""
  config = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"),
      "Config file to list.", lock_config=True)

  def list_keys(argv):
    del argv
    for key, value in flat_items(config.value):
      print(f"{key} = {value!r}")

  entry_point.run_absl(list_keys)


if __name__ == "__main__":
  main()
