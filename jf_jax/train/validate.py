"""Checks a training config before anything is built: names, enums, ranges and every path.

`check_config(config)` (train.py's first step) collects every problem and raises one
`ConfigError` listing them all, each line naming its config key, e.g.

  config has 2 problems (nothing was built):
    config.data.source='filez': expected synthetic, files, records or a data package (e.g. shapes)
    config.data.gen_files[0]=/data/imgs: does not exist

so a wrong path or value fails in a second, not after minutes of model initialisation,
and a user fixes them all in one go. Paths are checked through `etils.epath`, so gs://
paths are checked where they live (on the storage service) like local ones.

The checks here are those that need only the config and the file system; the shape
checks that need the mesh (rows per shard) stay in `loop.plan`, which runs next.
"""

import importlib.util
import numbers
from typing import Any, Callable, Iterator

from etils import epath

from jf_jax.data import layout
from jf_jax.data import storage
from jf_jax.losses import flow
from jf_jax.models import config as model_config
from jf_jax.models import latent_space
from jf_jax.models import layers
from jf_jax.models import vae as vae_lib
from jf_jax.train import step as step_lib

SOURCES = ("synthetic", "files", "records")  # besides a data package named by config.data.source
TEXT_UNITS = ("line", "paragraph", "file")
SCHEDULES = ("constant", "cosine")
STAGES = (1, 2, 3)
PREDICTIONS = ("velocity", "data")
ATTENTION = ("xla", "cudnn")
REMAT = tuple(sorted(layers._REMAT_POLICIES))  # pylint: disable=protected-access
# (key, test, what the test asks): ranges of numeric settings.
RANGES = (
    ("train.num_steps", lambda v: v > 0, "> 0"),
    ("train.microbatches", lambda v: v >= 1, ">= 1"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("train.checkpoint_every", lambda v: v >= 1, ">= 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.max_nonfinite_in_row", lambda v: v >= 1, ">= 1"),
    ("train.skip_window", lambda v: v >= 1, ">= 1"),
    ("train.max_skip_rate", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("optim.learning_rate", lambda v: v > 0, "> 0"),
    ("optim.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.eps", lambda v: v > 0, "> 0"),
    ("loss.cfg_drop_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("loss.edit_drop_text", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("loss.edit_drop_image", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("loss.edit_drop_both", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("loss.t_scale", lambda v: v > 0, "> 0"),
    ("batch.und_rows", lambda v: v >= 0, ">= 0"),
    ("batch.text_rows", lambda v: v >= 0, ">= 0"),
    ("batch.gen_rows", lambda v: v >= 0, ">= 0"),
    ("batch.edit_rows", lambda v: v >= 0, ">= 0"),
    ("batch.edit_prompt_len", lambda v: v > 0, "> 0"),
    ("batch.und_seq_len", lambda v: v > 0, "> 0"),
    ("batch.text_seq_len", lambda v: v > 0, "> 0"),
    ("batch.gen_prompt_len", lambda v: v > 0, "> 0"),
    ("batch.switch.step", lambda v: v >= 0, ">= 0"),
    ("batch.switch.und_rows", lambda v: v >= 0, ">= 0"),
    ("batch.switch.text_rows", lambda v: v >= 0, ">= 0"),
    ("batch.switch.gen_rows", lambda v: v >= 0, ">= 0"),
    ("batch.switch.edit_rows", lambda v: v >= 0, ">= 0"),
    ("data.workers", lambda v: v >= 0, ">= 0"),
    ("data.prefetch", lambda v: v >= 1, ">= 1"),
    ("encoder_pretrain.steps", lambda v: v >= 0, ">= 0"),
    ("eval.num_gen", lambda v: v >= 0, ">= 0"),
    ("eval.num_und", lambda v: v >= 0, ">= 0"),
    ("eval.steps", lambda v: v >= 1, ">= 1"),
    ("eval.cfg", lambda v: v >= 0, ">= 0"),
    ("eval.batch_size", lambda v: v >= 1, ">= 1"),
    ("eval.temperature", lambda v: v >= 0, ">= 0"),
    ("eval.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
)
TASK_FILES = {"und": "und_files", "gen": "gen_files", "text": "text_files",
              "edit": "edit_files"}
TASK_RECORDS = {"und": "und_records", "gen": "gen_records", "text": "text_records",
                "edit": "edit_records"}


class ConfigError(ValueError):
  """Every problem of a config, one per line, each naming its key."""

  def __init__(self, problems: list[str]):
    self.problems = problems
    super().__init__(f"config has {len(problems)} problem(s) (nothing was built):\n"
                     + "\n".join(f"  {p}" for p in problems))


def _get(config: Any, key: str) -> tuple[bool, Any]:
  """(present, value) of a dotted key."""
  node = config
  for part in key.split("."):
    if node is None or not hasattr(node, "get") or part not in node:
      return False, None
    node = node[part]
  return True, node


def _enum(config, key: str, allowed) -> Iterator[str]:
  present, value = _get(config, key)
  if present and value not in allowed:
    yield f"config.{key}={value!r}: expected one of {', '.join(map(repr, allowed))}"


def _ranges(config) -> Iterator[str]:
  for key, test, wanted in RANGES:
    present, value = _get(config, key)
    if not present:
      continue
    if not isinstance(value, numbers.Number) or isinstance(value, bool):
      yield f"config.{key}={value!r}: expected a number {wanted}"
    elif not test(value):
      yield f"config.{key}={value!r}: must be {wanted}"


def _edit_drops(config) -> Iterator[str]:
  """The train step's rule for the edit dropout shares (`step.edit_drop_problem`), checked
  here too so that it is listed with the others before anything is built."""
  values = [_get(config, f"loss.edit_drop_{k}") for k in step_lib.EDIT_DROPS]
  if all(present and isinstance(v, numbers.Number) for present, v in values):
    problem = step_lib.edit_drop_problem([v for _, v in values])
    if problem:
      yield problem


def _enums(config) -> Iterator[str]:
  yield from _enum(config, "stage", STAGES)
  yield from _enum(config, "data.gen_space", latent_space.KINDS)
  yield from _enum(config, "data.text_unit", TEXT_UNITS)
  yield from _enum(config, "optim.schedule", SCHEDULES)
  yield from _enum(config, "loss.t_distribution", flow.T_KINDS)
  yield from _enum(config, "vae.latent_mode", vae_lib.LATENT_MODES)
  yield from _enum(config, "model.gen_decoder.prediction", PREDICTIONS)
  yield from _enum(config, "model.gen_encoder.depthwise", model_config.DEPTHWISE)
  yield from _enum(config, "model.gen_decoder.depthwise", model_config.DEPTHWISE)
  yield from _enum(config, "model.llm.attention_impl", ATTENTION)
  yield from _enum(config, "model.llm.remat_policy", REMAT)
  yield from _enum(config, "model.und_encoder.remat_policy", REMAT)


def _is_module(name: str) -> bool:
  """Whether `name` (dotted, or a package under jf_jax/) can be imported, without
  importing it."""
  module = name if "." in name else f"jf_jax.{name}"
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def _path_problem(key: str, value: str, exists: Callable[[epath.Path], bool]) -> str | None:
  try:
    if exists(epath.Path(value)):
      return None
  except Exception as e:  # pylint: disable=broad-except  (a storage service's own errors)
    return f"config.{key}={value}: cannot be read ({type(e).__name__}: {e})"
  return f"config.{key}={value}: does not exist"


def _exists(path: epath.Path) -> bool:
  return path.exists()


def _source_and_files(config) -> Iterator[str]:
  data = config.data
  source = data.get("source", "synthetic")
  if source not in SOURCES and not _is_module(source):
    yield (f"config.data.source={source!r}: expected {', '.join(SOURCES)} or the name of a "
           "data package (e.g. shapes)")
    return
  if source == "records":
    yield from _records(config)
    return
  if source != "files":
    return
  for task, key in TASK_FILES.items():
    paths = data.get(key) or ()
    if isinstance(paths, str):
      yield f"config.data.{key}={paths!r}: expected a tuple of paths, e.g. \"('{paths}',)\""
      continue
    for i, path in enumerate(paths):
      problem = _path_problem(f"data.{key}[{i}]", path, _exists)
      if problem:
        yield problem
    for prefix, rows in layout.row_groups(config.batch):
      if rows.get(task) and not paths:
        yield (f"{prefix}.{task}_rows={rows[task]} but config.data.{key} is empty "
               f"(no {task} data with config.data.source='files')")
  if data.get("image_root"):
    problem = _path_problem("data.image_root", data.image_root, lambda p: p.is_dir())
    if problem:
      yield problem


def _records(config) -> Iterator[str]:
  """Each task with rows has record patterns, and each pattern matches a shard."""
  for task, key in TASK_RECORDS.items():
    patterns = config.data.get(key) or ()
    if isinstance(patterns, str):
      yield f"config.data.{key}={patterns!r}: expected a tuple of patterns, e.g. \"('{patterns}',)\""
      continue
    for i, pattern in enumerate(patterns):
      try:
        storage.expand([pattern], f"config.data.{key}[{i}]")
      except FileNotFoundError as e:
        yield str(e)
      except Exception as e:  # pylint: disable=broad-except  (a storage service's own errors)
        yield f"config.data.{key}[{i}]={pattern}: cannot be listed ({type(e).__name__}: {e})"
    for prefix, rows in layout.row_groups(config.batch):
      if rows.get(task) and not patterns:
        yield (f"{prefix}.{task}_rows={rows[task]} but config.data.{key} is empty "
               f"(no {task} data with config.data.source='records')")


def _tokenizer(config) -> Iterator[str]:
  name = config.data.get("tokenizer", "")
  if not name:
    source = config.data.get("source", "synthetic")
    if source != "synthetic" and (source in SOURCES or _is_module(source)):
      yield "config.data.tokenizer='': name a tokenizer (a directory with tokenizer.json)"
    return
  path_like = "/" in name or name.endswith(".json") or "://" in name
  if not path_like and _is_module(name):
    return
  file = epath.Path(name) if name.endswith(".json") else epath.Path(name) / "tokenizer.json"
  problem = _path_problem("data.tokenizer", str(file), _exists)
  if problem:
    yield (f"config.data.tokenizer={name!r}: no {file} (expected a directory holding "
           "tokenizer.json, or a tokenizer module such as 'shapes')")


def _plugins(config) -> Iterator[str]:
  """`config.init` and `config.after_training` name importable modules (train.py's
  plug-ins, `data/plugins.py`)."""
  for key in ("init", "after_training"):
    name = config.get(key) or ""
    if name and not _is_module(name):
      yield f"config.{key}={name!r}: no module of that name (a dotted path or jf_jax.NAME)"


def _other_paths(config) -> Iterator[str]:
  init = config.train.get("init_params_from", "")
  if init:
    problem = _path_problem("train.init_params_from", init, lambda p: p.is_dir())
    if problem:
      yield problem
  if config.data.get("gen_space") == "sdxl_vae" and config.get("vae") is not None:
    path = config.vae.get("path", "")
    if not path:
      yield ("config.vae.path='': config.data.gen_space='sdxl_vae' needs the SDXL-VAE "
             "(diffusers layout: config.json + diffusion_pytorch_model.safetensors)")
    else:
      problem = _path_problem("vae.path", path, _exists)
      if problem:
        yield problem


def problems(config: Any) -> list[str]:
  """Every problem found in `config`, one line each naming its key ([] if none)."""
  found = list(_ranges(config)) + list(_edit_drops(config)) + list(_enums(config))
  for check in (_source_and_files, _tokenizer, _plugins, _other_paths):
    found += list(check(config))
  return found


def check_config(config: Any) -> None:
  """Raises ConfigError listing every problem of `config` (module docstring)."""
  found = problems(config)
  if found:
    raise ConfigError(found)
