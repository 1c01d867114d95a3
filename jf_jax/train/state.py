"""Train state and its shardings, derived from shapes only (never from real arrays)."""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from jf_jax.models import janusflow
from jf_jax.parallel import partition


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `rng` is a raw uint32 key (checkpoint friendly);
  `ema_params` is None when EMA is off."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None


def opt_state_shardings(tx: optax.GradientTransformation, boxed_params: Any, mesh, rules):
  """Shardings of the optimizer state, from `jax.eval_shape(tx.init)` of BOXED params.

  Optax builds per-parameter state (Adam's moments) by mapping over the parameter tree,
  so those leaves keep the parameters' `nn.LogicallyPartitioned` boxes and shard exactly
  like their parameters; leaves without a box (step counts) are replicated, and frozen
  parameters (`optax.MaskedNode`) have no state at all.
  """
  return partition.mesh_shardings(jax.eval_shape(tx.init, boxed_params), mesh, rules)


def _init_fn(model, tx, use_ema: bool, seed: int):
  """Pure init: (nothing) -> TrainState with boxed-free params."""
  def init():
    rng = jax.random.PRNGKey(seed)
    init_rng, state_rng = jax.random.split(rng)
    params = nn.unbox(janusflow.init_params(model, init_rng))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=state_rng,
                      ema_params=params if use_ema else None)
  return init


def abstract_state(tx, params: Any, use_ema: bool) -> TrainState:
  """The TrainState of `_init_fn` as `ShapeDtypeStruct`s, from the (unboxed, abstract)
  params: traces only `tx.init`, never the model."""
  return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                    opt_state=jax.eval_shape(tx.init, params),
                    rng=jax.eval_shape(lambda: jax.random.split(jax.random.PRNGKey(0))[1]),
                    ema_params=params if use_ema else None)


def state_shardings(tx, boxed_params: Any, mesh, rules, use_ema: bool):
  """(abstract TrainState, TrainState of NamedShardings) from the BOXED abstract params
  (`janusflow.abstract_params(model)["params"]`, traced once by the caller)."""
  param_sh = partition.mesh_shardings(boxed_params, mesh, rules)
  abstract = abstract_state(tx, nn.unbox(boxed_params), use_ema)
  opt_sh = opt_state_shardings(tx, boxed_params, mesh, rules)
  if jax.tree.structure(opt_sh) != jax.tree.structure(abstract.opt_state):
    raise ValueError("the optimizer state of the boxed parameters differs in structure "
                     "from that of the parameters; an optax transform does not map over "
                     "the parameter tree")
  replicated = NamedSharding(mesh, P())
  shardings = TrainState(step=replicated, params=param_sh, opt_state=opt_sh,
                         rng=replicated, ema_params=param_sh if use_ema else None)
  return abstract, shardings


def init_state(model, tx, mesh, shardings, seed: int = 0):
  """The train state, initialised directly sharded (no host copy of the full model).

  `shardings` comes from `state_shardings` (same model and optimizer); it also says
  whether the state keeps an EMA of the parameters.
  """
  use_ema = shardings.ema_params is not None
  with jax.set_mesh(mesh):
    return jax.jit(_init_fn(model, tx, use_ema, seed), out_shardings=shardings)()


def with_params(state: TrainState, params: Any, tx: optax.GradientTransformation,
                shardings: TrainState) -> TrainState:
  """Replaces the params (e.g. converted weights) and resets the optimizer for them."""
  @functools.partial(jax.jit, out_shardings=shardings)
  def replace(state, params):
    return state.replace(params=params, opt_state=tx.init(params),
                         ema_params=None if state.ema_params is None else params)
  return replace(state, params)
