"""Project packages named in a config: `config.data.tokenizer = "shapes"`,
`config.data.source = "shapes"`.

The core packages never import a project package (e.g. `jf_jax/shapes/`); a config names
it and the data layer imports it by name, as a plug-in that provides one function.
"""

import importlib
from types import ModuleType


def import_named(name: str, config_key: str, function: str) -> ModuleType:
  """Module `name` (a dotted path, or a package under jf_jax/), checked to have `function`.

  Raises FileNotFoundError naming `config_key` when no such module exists, and ValueError
  when it lacks `function`; an ImportError inside the module itself propagates unchanged.
  """
  module_name = name if "." in name else f"jf_jax.{name}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name is None or not module_name.startswith(e.name):
      raise  # the module exists but one of its imports is missing
    raise FileNotFoundError(f"{config_key}={name!r}: no module {module_name}") from e
  if not hasattr(module, function):
    raise ValueError(f"{config_key}={name!r}: {module_name} has no {function}() function")
  return module
