"""Train checkpoints: an Orbax `CheckpointManager` with named items.

Items per step: `state` (the TrainState, sharded arrays), `data` (the input loader's
state, JSON: the next batch's step and the bad-example counters, `data/loader.py`; it does
not depend on the number of loader workers or processes) and `config` (the run's config,
JSON). Saves are async; the latest
`keep` checkpoints are kept. Restores target the *current* mesh: every leaf of the
abstract state carries its current sharding, so a checkpoint written on one mesh restores
on another. A gs:// workdir is written through tensorstore's own GCS driver.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp

from jf_jax.data import storage


def make_manager(workdir: str, save_every: int, keep: int, async_save: bool = True
                 ) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every, max_to_keep=keep, create=True,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(storage.join(storage.absolute(workdir), "checkpoints"),
                               options=options, item_names=("state", "data", "config"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         config: dict, force: bool = False) -> bool:
  """Starts an (async) save; returns whether a checkpoint is written at this step."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data=ocp.args.JsonSave(data_state),
                            config=ocp.args.JsonSave(config))
  return manager.save(step, args=args, force=force)


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that carry the current shardings (the restore target)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, shardings: Any,
            step: int | None = None) -> tuple[int, Any, dict] | None:
  """Restores (step, state, data_state) of `step` (default latest); None if there is none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  target = with_shardings(abstract_state, shardings)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
  return step, restored.state, restored.data


def restore_params(workdir: str, abstract_params: Any, param_shardings: Any,
                   step: int | None = None, item: str = "params") -> Any:
  """Params only, from another run's checkpoints (e.g. an earlier training stage).

  Its optimizer state may have another structure (other frozen parameters), so only the
  `item` subtree of the saved state is read: "params", or "ema_params" (the parameters'
  moving average of a run with `train.ema_decay` > 0).
  """
  manager, step = _open_step(workdir, step)
  target = {item: with_shardings(abstract_params, param_shardings)}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True)))
  return restored.state[item]


def restore_config(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """(the run's config as a dict, step) of `step` (default latest) of a training workdir."""
  manager, step = _open_step(workdir, step)
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return restored.config, step


def _open_step(workdir: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  """A read-only manager of `workdir`'s checkpoints and the step to read (default latest)."""
  directory = storage.join(storage.absolute(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data", "config"))
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {directory}")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"no checkpoint of step {step} in {directory} (it holds steps "
                            f"{', '.join(map(str, steps))})")
  return manager, steps[-1] if step is None else step
