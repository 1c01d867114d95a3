"""The files in configs/, loaded by path as `ml_collections.config_flags` does (configs/ is
not a package): one loader for every test that needs a config file's defaults."""

import importlib.util
import pathlib

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load(name: str) -> ml_collections.ConfigDict:
  """`configs/<name>.py::get_config()`."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
