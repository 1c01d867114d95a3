"""OUT/run.json: the settings that made a sample set, so a score can be reproduced.

`settings` are the values the outputs depend on (checkpoint config hash, solver, steps,
guidance, seed, resolution, dtype, task inputs); resuming into an OUT whose run.json has
other settings is refused (mixing two settings in one set would be silent). `environment`
(command line, package versions, devices) is informative and rewritten on each run.
"""

import datetime
import hashlib
import importlib.metadata
import json
import os
import sys
from typing import Any

import jax
import ml_collections

PACKAGES = ("jf_jax", "jax", "jaxlib", "flax", "numpy", "pillow", "tokenizers")


def config_hash(config: ml_collections.ConfigDict) -> str:
  """sha256 of the config as sorted JSON (any change of a model setting changes it)."""
  text = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict[str, str | None]:
  def version(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None
  return {name: version(name) for name in PACKAGES}


def environment(mesh: jax.sharding.Mesh) -> dict[str, Any]:
  return {
      "command": [sys.executable, "-m", "jf_jax.bench", *sys.argv[1:]],
      "packages": package_versions(),
      "devices": f"{mesh.size} x {mesh.devices.flat[0].device_kind} per process, "
                 f"{jax.process_count()} process(es)",
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def write(out: str, settings: dict[str, Any], mesh: jax.sharding.Mesh,
          overwrite: bool) -> None:
  """Writes OUT/run.json (process 0); refuses to resume under other settings.

  Raises:
    ValueError naming the differing settings when OUT/run.json records others and
    `overwrite` is False.
  """
  path = os.path.join(out, "run.json")
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      before = json.load(f).get("settings", {})
    differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    if differ:
      listed = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in differ.items())
      raise ValueError(f"{path} records other settings ({listed}); use another --out or "
                       "--overwrite to regenerate everything")
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump({"settings": settings, "environment": environment(mesh)}, f, indent=2)
    os.replace(path + ".tmp", path)
