"""Mesh construction, startup checks, logical rules and sharded initialisation (8 CPUs)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jf_jax import config_defaults
from jf_jax import testing
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import partition
from jf_jax.parallel import rules as rules_lib
from jf_jax.train import optim
from jf_jax.train import state as state_lib


def _mesh_config(data=1, fsdp=-1, tensor=1):
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def test_eight_fake_devices():
  assert jax.device_count() == 8


def test_minus_one_fills_rest():
  mesh = mesh_lib.make_mesh(_mesh_config(data=2, fsdp=-1, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh_lib.resolve_mesh_shape(_mesh_config(), 8) == (1, 8, 1)
  assert mesh_lib.resolve_mesh_shape(_mesh_config(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)


def test_explicit_devices_subset():
  mesh = mesh_lib.make_mesh(_mesh_config(data=1, fsdp=2, tensor=2), jax.devices()[:4])
  assert mesh.devices.size == 4


@pytest.mark.parametrize("cfg,key", [
    (dict(data=3, fsdp=-1, tensor=1), "config.mesh.data=3"),
    (dict(data=1, fsdp=2, tensor=2), "config.mesh.fsdp=2"),
    (dict(data=-1, fsdp=-1, tensor=1), "config.mesh.fsdp"),
    (dict(data=1, fsdp=0, tensor=1), "config.mesh.fsdp"),
])
def test_bad_mesh_sizes_name_the_key(cfg, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    mesh_lib.make_mesh(_mesh_config(**cfg))


def test_check_divisibility():
  mesh = mesh_lib.make_mesh(_mesh_config(data=2, fsdp=2, tensor=2))
  mesh_lib.check_divisibility(8, mesh, num_heads=16, num_kv_heads=4)
  with pytest.raises(ValueError, match=r"config\.batch\.global_size"):
    mesh_lib.check_divisibility(6, mesh, num_heads=16, num_kv_heads=4)
  with pytest.raises(ValueError, match=r"config\.batch\.gen_rows=6"):
    mesh_lib.check_divisibility(6, mesh, 16, 4, batch_key="config.batch.gen_rows")
  with pytest.raises(ValueError, match=r"config\.mesh\.tensor"):
    mesh_lib.check_divisibility(8, mesh, num_heads=15, num_kv_heads=5)
  with pytest.raises(ValueError, match=r"config\.model\.llm\.num_kv_heads"):
    mesh_lib.check_divisibility(8, mesh, num_heads=16, num_kv_heads=3)


def test_single_process_distributed_is_noop():
  assert mesh_lib.maybe_initialize_distributed() is False


def test_rules_defaults_and_overrides():
  rules = dict(rules_lib.default_rules())
  assert rules["embed"] == "fsdp" and rules["mlp"] == "tensor"
  assert rules["act_batch"] == ("data", "fsdp") and rules["layers"] is None
  merged = dict(rules_lib.merge_rules(rules_lib.default_rules(),
                                      [("embed", None), ("vocab", ["fsdp", "tensor"]),
                                       ("new_axis", "data")]))
  assert merged["embed"] is None and merged["vocab"] == ("fsdp", "tensor")
  assert merged["new_axis"] == "data"
  with pytest.raises(ValueError, match="logical_axis_rules"):
    rules_lib.merge_rules(rules_lib.default_rules(), [("embed", "model")])


class _Toy(nn.Module):
  """Big sharded kernels, a small unsharded norm and a constrained activation."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(64, use_bias=False, kernel_init=nn.with_logical_partitioning(
        nn.initializers.normal(), ("embed", "mlp")))(x)
    x = nn.with_logical_constraint(x, ("act_batch", "act_mlp"))
    x = nn.LayerNorm(use_bias=False, scale_init=nn.with_logical_partitioning(
        nn.initializers.ones_init(), ("norm",)))(x)
    return nn.Dense(16, use_bias=False, kernel_init=nn.with_logical_partitioning(
        nn.initializers.normal(), ("mlp", "embed")))(x)


def _init_fn():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)
  return functools.partial(_Toy().init, x=x), x


def test_init_sharded_and_fraction():
  mesh = mesh_lib.make_mesh(_mesh_config(data=1, fsdp=4, tensor=2))
  rules = rules_lib.default_rules()
  init_fn, _ = _init_fn()
  variables, shardings = testing.init_sharded(init_fn, mesh, rules, jax.random.key(0))
  kernel = variables["params"]["Dense_0"]["kernel"]
  assert not isinstance(kernel, nn.LogicallyPartitioned)
  assert kernel.sharding == shardings["params"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (4, 32)
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  specs = partition.logical_specs(abstract)
  assert specs["params"]["LayerNorm_0"]["scale"] == jax.sharding.PartitionSpec("norm")
  # 2 * 16 * 64 kernel floats sharded, 64 norm floats not: 2048 / 2112.
  expected = 2048 / 2112
  frac = partition.assert_params_sufficiently_sharded(variables, abstract, threshold=0.9)
  np.testing.assert_allclose(frac, expected)
  frac = partition.assert_params_sufficiently_sharded(shardings, abstract, threshold=0.9)
  np.testing.assert_allclose(frac, expected)
  with pytest.raises(ValueError, match=r"LayerNorm_0/scale \(64,\)"):
    partition.assert_params_sufficiently_sharded(shardings, abstract, threshold=0.98)


def test_pure_data_parallel_counts_as_unsharded():
  mesh = mesh_lib.make_mesh(_mesh_config(data=-1, fsdp=1, tensor=1))
  init_fn, _ = _init_fn()
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  shardings = partition.mesh_shardings(abstract, mesh, rules_lib.default_rules())
  frac, unsharded = partition.sharded_fraction(shardings, abstract)
  assert frac == 0.0 and len(unsharded) == 3
  assert partition.assert_params_sufficiently_sharded(shardings, abstract, threshold=0.0) == 0.0


def test_single_device_passes_trivially():
  mesh = mesh_lib.make_mesh(_mesh_config(), jax.devices()[:1])
  init_fn, _ = _init_fn()
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  shardings = partition.mesh_shardings(abstract, mesh, rules_lib.default_rules())
  assert partition.assert_params_sufficiently_sharded(shardings, abstract) == 1.0


def test_apply_under_mesh_with_constraints():
  mesh = mesh_lib.make_mesh(_mesh_config(data=2, fsdp=2, tensor=2))
  rules = rules_lib.default_rules()
  init_fn, x = _init_fn()
  variables, _ = testing.init_sharded(init_fn, mesh, rules, jax.random.key(0))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    y = jax.jit(_Toy().apply)(variables, x)
  ref = _Toy().apply(jax.device_get(variables), np.asarray(x))
  assert float(jnp.abs(ref).max()) > 0
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_opt_state_shardings_follow_params():
  mesh = mesh_lib.make_mesh(_mesh_config(data=1, fsdp=4, tensor=2))
  rules = rules_lib.default_rules()
  init_fn, _ = _init_fn()
  variables, _ = testing.init_sharded(init_fn, mesh, rules, jax.random.key(0))
  abstract = jax.eval_shape(init_fn, jax.random.key(0))["params"]
  cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, freeze=("LayerNorm_0/.*",)))
  tx, _ = optim.make_optimizer(cfg, nn.unbox(abstract))
  state_sh = partition.mesh_shardings(jax.eval_shape(tx.init, abstract), mesh, rules)
  state = jax.jit(tx.init, out_shardings=state_sh)(variables["params"])
  mu = optax.tree_utils.tree_get(state, "mu")
  assert mu["Dense_1"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert isinstance(mu["LayerNorm_0"]["scale"], optax.MaskedNode)


def test_train_state_shardings_follow_params_with_frozen_towers():
  """Adam's moments shard exactly like their (trainable) parameters, frozen parameters
  have none, counts are replicated and the EMA shards like the parameters."""
  config = config_defaults.base_config()
  config.stage = 1  # the LLM and SigLIP frozen
  model = janusflow.JanusFlow(model_config.from_config_dict(config.model))
  mesh = mesh_lib.make_mesh(_mesh_config(data=1, fsdp=4, tensor=2))
  rules = rules_lib.default_rules()
  boxed = janusflow.abstract_params(model)["params"]
  tx, mask = optim.make_optimizer(optim.from_config(config), nn.unbox(boxed))
  abstract, sh = state_lib.state_shardings(tx, boxed, mesh, rules, use_ema=True)
  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  trainable = jax.tree.leaves(mask)
  assert any(trainable) and not all(trainable)
  for name in ("mu", "nu"):
    moments = jax.tree.leaves(optax.tree_utils.tree_get(sh.opt_state, name), is_leaf=is_masked)
    assert len(moments) == len(trainable)
    for param_sh, moment_sh, train in zip(jax.tree.leaves(sh.params), moments, trainable):
      assert (moment_sh == param_sh) if train else is_masked(moment_sh)
  sharded = [s for s, t in zip(jax.tree.leaves(sh.params), trainable)
             if t and "fsdp" in jax.tree.leaves(tuple(s.spec))]
  assert sharded  # the check above compared real layouts, not only replication
  for leaf, leaf_sh in zip(jax.tree.leaves(abstract.opt_state), jax.tree.leaves(sh.opt_state)):
    if leaf.ndim == 0:
      assert leaf_sh.spec == jax.sharding.PartitionSpec()
  assert sh.ema_params == sh.params
