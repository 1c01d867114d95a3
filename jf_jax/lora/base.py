"""A LoRA run's two param trees: the trained part (in the train state) and the frozen base.

`plan` derives, from shapes only, the wrapped model, which leaves train, and the base's
abstract tree and shardings; `load` reads the base from `config.train.init_params_from`
(a converted release or an earlier run), in `config.lora.base_dtype` or quantized
(`config.lora.base_quant`, QLoRA), and the initial values of the modules trained in full.
The base is read again on every start (resume included): runs checkpoint only what trains.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.checkpoint import params_io
from jf_jax.lora import model as lora_model
from jf_jax.lora import params as lora_params
from jf_jax.lora import quantize
from jf_jax.models import janusflow
from jf_jax.parallel import partition


@dataclasses.dataclass
class LoraPlan:
  trains: Callable[[str], bool]  # param path -> in the train state?
  boxed_trainable: Any  # boxed abstract params of the train state
  abstract_base: Any  # unboxed abstract base (quantized kernels are qwix WithAux)
  base_shardings: Any

  def trainable_part(self, params: Any) -> Any:
    """The train state's part of the model's params (boxed or not)."""
    return lora_params.split(params, self.trains)[0]


def _cast_floating(abstract: Any, dtype: str) -> Any:
  if not dtype:
    return abstract
  def cast(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
      return jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype), sharding=x.sharding)
    return x
  return jax.tree.map(cast, abstract)


def plan(config, model: janusflow.JanusFlow, mesh, rules) -> tuple[janusflow.JanusFlow,
                                                                     LoraPlan]:
  """(the Qwix-wrapped model, the LoRA plan) of a run config, from shapes only."""
  if not config.train.init_params_from:
    raise ValueError("config.lora.rank > 0 needs config.train.init_params_from: the frozen "
                     "base (a `python -m jf_jax.convert` directory or a training workdir)")
  wrapped, boxed = lora_model.lora_model(model, config.lora)
  trains = lora_params.trainable_predicate(nn.unbox(boxed), config.lora.train_in_full)
  boxed_trainable, boxed_base = lora_params.split(boxed, trains)
  abstract_base = _cast_floating(nn.unbox(boxed_base), config.lora.base_dtype)
  return wrapped, LoraPlan(trains, boxed_trainable, abstract_base,
                           partition.mesh_shardings(boxed_base, mesh, rules))


def load(config, lplan: LoraPlan, cfg, mesh, rules) -> tuple[Any, Any]:
  """(frozen base, initial values of the modules trained in full), both on the mesh.

  The float params are restored as the plain model's; the base is then cast or quantized
  once (jitted, straight into its shardings).
  """
  boxed_plain = janusflow.abstract_params(janusflow.JanusFlow(cfg))["params"]
  plain_sh = partition.mesh_shardings(boxed_plain, mesh, rules)
  params = params_io.restore_any(config.train.init_params_from, nn.unbox(boxed_plain),
                                 plain_sh, setting="config.train.init_params_from")
  in_full, base = lora_params.split(params, lplan.trains)
  abstract_base = lplan.abstract_base

  def to_base(base):
    base = jax.tree.map(lambda x, a: x if isinstance(a, quantize.WithAux) else
                        x.astype(a.dtype), base, abstract_base,
                        is_leaf=lambda x: isinstance(x, quantize.WithAux))
    return quantize.quantize_params(base, abstract_base)

  with jax.set_mesh(mesh):
    base = jax.jit(to_base, out_shardings=lplan.base_shardings)(base)
  return base, in_full


def initial_trainable(state_params: Any, in_full: Any) -> Any:
  """The train state's params with the loaded values of the modules trained in full
  (the adapters keep their initialisation: B = 0, so the run starts at the base model)."""
  adapters = lora_params.split(state_params, lora_params.is_adapter)[0]
  return lora_params.combine(adapters, in_full)


def load_merged(config, workdir: str, cfg, sharding, step: int | None = None,
                ema: bool = False) -> Any:
  """Plain JanusFlow params of a LoRA run: its checkpointed adapters (and modules trained
  in full) at `step` (default latest; `ema`: their moving average) merged into the float
  base the run names (`config.train.init_params_from`), all on `sharding`.

  Raises:
    ValueError: `config` is not a LoRA run's (`--merge_lora` on a full fine-tune).
  """
  from jf_jax.checkpoint import manager  # pylint: disable=g-import-not-at-top
  from jf_jax.lora import merge  # pylint: disable=g-import-not-at-top
  if not lora_model.enabled(config):
    raise ValueError(f"{workdir} is not a LoRA run (its config.lora.rank is "
                     f"{(config.get('lora') or {}).get('rank', 0)}): no adapters to merge")
  _, boxed = lora_model.lora_model(janusflow.JanusFlow(cfg), config.lora)
  trains = lora_params.trainable_predicate(nn.unbox(boxed), config.lora.train_in_full)
  abstract_trainable = lora_params.split(nn.unbox(boxed), trains)[0]
  on_device = lambda tree: jax.tree.map(lambda _: sharding, tree)
  trained = manager.restore_params(workdir, abstract_trainable,
                                   on_device(abstract_trainable), step,
                                   item="ema_params" if ema else "params")
  abstract_plain = params_io.abstract_params(cfg)
  plain = params_io.restore_any(config.train.init_params_from, abstract_plain,
                                on_device(abstract_plain),
                                setting=f"{workdir}'s config.train.init_params_from")
  base = lora_params.split(plain, trains)[1]
  return merge.merge_adapters(lora_params.combine(trained, base),
                              lora_model.scale(config.lora))
