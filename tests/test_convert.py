"""Checkpoint conversion: official key set, exact round trips, error paths and the CLI.

Nothing here needs the released weights: the 1.3B key list is checked against
`tests/data/official_keys_janusflow_1p3b.tsv` from shapes alone (`jax.eval_shape`), and the
round trips use random state dicts of the tiny config in the official layout.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest

from jf_jax import convert
from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import param_map
from jf_jax.checkpoint import params_io
from jf_jax.models import config as model_config
import config_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL_KEYS = REPO_ROOT / "tests" / "data" / "official_keys_janusflow_1p3b.tsv"
# The model of configs/tiny.py (the CLI tests convert with that file): tiny, pixel space.
TINY = model_config.from_config_dict(config_files.load("tiny").model)

LLM_LAYERS = ("language_model", "model", "layers")
VIT = ("vision_und_enc_model", "vision_tower")


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _random_state(expected, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return {name: rng.normal(size=shape).astype(np.float32).astype(dtype)
          for name, shape in sorted(expected.items())}


def _assert_state_dicts_equal(actual, expected):
  assert sorted(actual) == sorted(expected)
  for name in expected:
    assert actual[name].dtype == expected[name].dtype, name
    assert actual[name].shape == expected[name].shape, name
    np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def tiny_abstract():
  return params_io.abstract_params(TINY)


@pytest.fixture(scope="module")
def tiny_expected(tiny_abstract):
  return convert_hf.expected_official_shapes(TINY, tiny_abstract)


@pytest.fixture(scope="module")
def tiny_state(tiny_expected):
  return _random_state(tiny_expected)


# --------------------------------------------------------------------- official key set
def test_1p3b_expected_keys_and_shapes_match_the_release():
  cfg = model_config.from_config_dict(config_files.load("janusflow_1p3b").model)
  expected = convert_hf.expected_official_shapes(cfg, params_io.abstract_params(cfg))
  official = {}
  for line in OFFICIAL_KEYS.read_text().splitlines():
    name, shape = line.split("\t")
    official[name] = tuple(int(d) for d in shape.split("x"))
  assert len(official) == 587
  assert sorted(set(official) - set(expected)) == []  # missing from our table
  assert sorted(set(expected) - set(official)) == []  # not in the release
  wrong = {k: (expected[k], official[k]) for k in official if expected[k] != official[k]}
  assert not wrong
  assert sum(math.prod(s) for s in expected.values()) == 2_046_367_504


# ---------------------------------------------------------------------- round trips
def test_official_to_ours_to_official_is_exact(tiny_state, tiny_abstract):
  params = convert_hf.to_params(tiny_state, TINY, tiny_abstract)
  # Every official tensor lands in our tree with the model's shape and storage dtype;
  # only the training-only REPA projector is absent.
  official_part = {k: v for k, v in tiny_abstract.items() if k != "repa_projector"}
  assert jax.tree.structure(params) == jax.tree.structure(official_part)
  for leaf, ref in zip(jax.tree.leaves(params), jax.tree.leaves(official_part)):
    assert (leaf.shape, leaf.dtype) == (ref.shape, ref.dtype)
  _assert_state_dicts_equal(convert_hf.to_state_dict(params, TINY), tiny_state)


def test_bfloat16_checkpoint_round_trip_is_exact(tiny_state, tiny_abstract):
  state = {k: v.astype(ml_dtypes.bfloat16) for k, v in tiny_state.items()}
  params = convert_hf.to_params(state, TINY, tiny_abstract)  # stored in param_dtype
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  back = convert_hf.to_state_dict(params, TINY, dtype=ml_dtypes.bfloat16)
  _assert_state_dicts_equal(back, state)
  params = convert_hf.to_params(state, TINY, tiny_abstract, dtype=ml_dtypes.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(ml_dtypes.bfloat16)}
  _assert_state_dicts_equal(convert_hf.to_state_dict(params, TINY), state)


def test_ours_to_official_to_ours_is_exact(tiny_abstract):
  rng = np.random.default_rng(1)
  params = {k: jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), v)
            for k, v in tiny_abstract.items() if k != "repa_projector"}
  state = convert_hf.to_state_dict(params, TINY)
  back = convert_hf.to_params(state, TINY, tiny_abstract)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_stacked_layers_and_layouts_land_where_documented(tiny_state, tiny_abstract):
  p = convert_hf.to_params(tiny_state, TINY, tiny_abstract)
  s = tiny_state
  llm, und = TINY.llm, TINY.und_encoder
  e, hd = llm.embed_dim, llm.num_heads * llm.head_dim
  kv = llm.num_kv_heads * llm.head_dim
  attn = _get(p, LLM_LAYERS + ("self_attn",))
  for i in range(llm.num_layers):  # Linear [out, in] -> kernel [in, heads, head_dim]
    pre = f"language_model.model.layers.{i}"
    np.testing.assert_array_equal(s[f"{pre}.self_attn.q_proj.weight"],
                                  attn["q_proj"]["kernel"][i].reshape(e, hd).T)
    np.testing.assert_array_equal(s[f"{pre}.self_attn.k_proj.weight"],
                                  attn["k_proj"]["kernel"][i].reshape(e, kv).T)
    np.testing.assert_array_equal(s[f"{pre}.self_attn.o_proj.weight"],
                                  attn["o_proj"]["kernel"][i].reshape(hd, e).T)
    np.testing.assert_array_equal(s[f"{pre}.mlp.down_proj.weight"],
                                  _get(p, LLM_LAYERS + ("mlp", "down_proj", "kernel"))[i].T)
    np.testing.assert_array_equal(s[f"{pre}.post_attention_layernorm.weight"],
                                  _get(p, LLM_LAYERS + ("post_attention_layernorm",
                                                        "scale"))[i])
  np.testing.assert_array_equal(s["language_model.model.embed_tokens.weight"],
                                p["language_model"]["model"]["embed_tokens"]["embedding"])
  np.testing.assert_array_equal(s["language_model.lm_head.weight"],
                                p["language_model"]["lm_head"]["kernel"].T)

  w = und.width
  qkv = _get(p, VIT + ("blocks", "attn", "qkv"))
  blk = "vision_und_enc_model.vision_tower.blocks.1"
  # Fused qkv [3W, W]: outputs split as (q|k|v, heads, head_dim).
  np.testing.assert_array_equal(s[f"{blk}.attn.qkv.weight"], qkv["kernel"][1].reshape(w, 3 * w).T)
  np.testing.assert_array_equal(s[f"{blk}.attn.qkv.weight"][w:2 * w].T.reshape(
      w, und.num_heads, -1), qkv["kernel"][1, :, 1])  # the k block
  np.testing.assert_array_equal(s[f"{blk}.attn.qkv.bias"], qkv["bias"][1].reshape(-1))
  np.testing.assert_array_equal(s[f"{blk}.norm2.bias"], _get(p, VIT + ("blocks", "norm2",
                                                                      "bias"))[1])
  vit = "vision_und_enc_model.vision_tower"
  np.testing.assert_array_equal(  # Conv2d OIHW -> HWIO
      s[f"{vit}.patch_embed.proj.weight"],
      _get(p, VIT + ("patch_embed", "proj", "kernel")).transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(s[f"{vit}.pos_embed"], _get(p, VIT + ("pos_embed",)))
  np.testing.assert_array_equal(s[f"{vit}.attn_pool.kv.bias"],
                                _get(p, VIT + ("attn_pool", "kv", "bias")).reshape(-1))

  blk = "vision_gen_dec_model.mid_block.res_blocks.1"
  ours = p["vision_gen_dec_model"]["mid_block"]["res_blocks_1"]
  np.testing.assert_array_equal(s[f"{blk}.depthwise.weight"],  # [C,1,7,7] -> [7,7,1,C]
                                ours["depthwise"]["kernel"].transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(s[f"{blk}.channelwise_norm.weight"],  # [1,1,1,D] as is
                                ours["channelwise_norm"]["weight"])
  np.testing.assert_array_equal(s[f"{blk}.cond_embeds_mapper.weight"],
                                ours["cond_embeds_mapper"]["kernel"].T)
  np.testing.assert_array_equal(
      s["vision_gen_dec_model.out_convs.0.unpatch_conv.weight"],
      p["vision_gen_dec_model"]["out_convs_0"]["unpatch_conv"]["kernel"].transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(s["vision_gen_enc_model.in_conv.weight"],
                                p["vision_gen_enc_model"]["in_conv"]["kernel"].transpose(
                                    3, 2, 0, 1))
  np.testing.assert_array_equal(s["beg_of_und_embed"], p["beg_of_und_embed"])


def test_streamed_read_reads_each_tensor_once_into_its_final_layout(tiny_state,
                                                                    tiny_abstract):
  reads = []

  def read(name):
    reads.append(name)
    return tiny_state[name]

  shapes = {k: v.shape for k, v in tiny_state.items()}
  params = convert_hf.params_from_tensors(read, shapes, param_map.rules(TINY), tiny_abstract,
                                          np.float32)
  assert sorted(reads) == sorted(tiny_state)  # once each, nothing else
  expected = convert_hf.to_params(tiny_state, TINY, tiny_abstract)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
  # A mismatch is found from the shapes alone, before any tensor is read.
  reads.clear()
  with pytest.raises(convert_hf.CheckpointMismatchError, match="beg_of_und_embed"):
    convert_hf.params_from_tensors(read, {**shapes, "beg_of_und_embed": (1, 3)},
                                   param_map.rules(TINY), tiny_abstract, np.float32)
  assert not reads


def test_bfloat16_release_is_stored_exactly_in_bfloat16(tmp_path, tiny_state, tiny_abstract):
  state = {k: v.astype(ml_dtypes.bfloat16) for k, v in tiny_state.items()}
  names = sorted(state)
  for i, part in enumerate((names[::2], names[1::2])):  # a sharded release
    convert_hf.save_state_dict({k: state[k] for k in part}, str(tmp_path / "src"),
                               f"model-{i:05d}.safetensors")
  convert.official_to_ours(str(tmp_path / "src"), str(tmp_path / "dst"),
                           config_files.load("tiny"))
  stored = params_io.load_params(str(tmp_path / "dst"))  # no target: the stored dtypes
  official = {k: v for k, v in stored.items() if k != "repa_projector"}
  assert {x.dtype for x in jax.tree.leaves(official)} == {np.dtype(ml_dtypes.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(stored["repa_projector"])} == {np.dtype("float32")}
  restored = params_io.load_params(str(tmp_path / "dst"), tiny_abstract)  # float32 target
  expected = convert_hf.to_params(state, TINY, tiny_abstract)
  assert {x.dtype for x in jax.tree.leaves(restored)} == {np.dtype("float32")}
  for a, b in zip(jax.tree.leaves({k: v for k, v in restored.items()
                                   if k != "repa_projector"}), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)


# ---------------------------------------------------------------------------- errors
def test_every_mismatch_is_reported_by_name(tiny_state, tiny_abstract):
  state = dict(tiny_state)
  missing = "language_model.model.layers.1.mlp.up_proj.weight"
  extra_layer = f"language_model.model.layers.{TINY.llm.num_layers}.mlp.up_proj.weight"
  unused = "vision_und_enc_model.vision_tower.head.weight"
  wrong = "vision_gen_dec_model.input_norm.weight"
  state[extra_layer] = state.pop(missing)
  state[unused] = np.zeros((3, 4), np.float32)
  state[wrong] = np.zeros((7,), np.float32)
  with pytest.raises(convert_hf.CheckpointMismatchError) as info:
    convert_hf.to_params(state, TINY, tiny_abstract, source="ckpt")
  message = str(info.value)
  for key in (missing, extra_layer, unused, wrong):
    assert key in message, message
  assert "missing key: " + missing in message
  assert "unused key: " + unused in message
  assert f"shape mismatch: {wrong}" in message and "[7]" in message


def test_layer_count_mismatch_when_exporting(tiny_state, tiny_abstract):
  params = convert_hf.to_params(tiny_state, TINY, tiny_abstract)
  fewer = jax.tree.map(lambda x: x[:-1], params["language_model"]["model"]["layers"])
  params["language_model"]["model"]["layers"] = fewer
  with pytest.raises(convert_hf.CheckpointMismatchError, match="language_model/model/layers"):
    convert_hf.to_state_dict(params, TINY)


def test_missing_and_empty_checkpoint_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    convert_hf.load_state_dict(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    convert_hf.load_state_dict(str(tmp_path / "empty"))
  config = config_files.load("tiny")
  dst = tmp_path / "dst"
  with pytest.raises(FileNotFoundError):
    convert.official_to_ours(str(tmp_path / "empty"), str(dst), config)
  with pytest.raises(FileNotFoundError, match="no params checkpoint"):
    convert.ours_to_official(str(tmp_path / "nope"), str(dst), config)
  assert not dst.exists()


def test_mismatched_checkpoint_writes_nothing(tmp_path, tiny_state):
  state = dict(tiny_state)
  del state["beg_of_und_embed"]
  src = tmp_path / "src"
  convert_hf.save_state_dict(state, str(src))
  dst = tmp_path / "dst"
  with pytest.raises(convert_hf.CheckpointMismatchError, match="beg_of_und_embed"):
    convert.official_to_ours(str(src), str(dst), config_files.load("tiny"))
  assert not dst.exists()


def test_sharded_checkpoints_and_duplicate_keys(tmp_path, tiny_state):
  names = sorted(tiny_state)
  half = len(names) // 2
  convert_hf.save_state_dict({k: tiny_state[k] for k in names[:half]}, str(tmp_path),
                             "model-00001-of-00002.safetensors")
  convert_hf.save_state_dict({k: tiny_state[k] for k in names[half:]}, str(tmp_path),
                             "model-00002-of-00002.safetensors")
  _assert_state_dicts_equal(convert_hf.load_state_dict(str(tmp_path)), tiny_state)
  convert_hf.save_state_dict({names[0]: tiny_state[names[0]]}, str(tmp_path),
                             "model-extra.safetensors")
  with pytest.raises(convert_hf.CheckpointMismatchError, match=f"duplicate key {names[0]}"):
    convert_hf.load_state_dict(str(tmp_path))


def _snapshot(directory: pathlib.Path) -> dict:
  return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("reverse", [False, True], ids=["official_to_ours", "ours_to_official"])
def test_non_empty_destination_is_refused_without_overwrite(tmp_path, reverse):
  dst = tmp_path / "dst"
  dst.mkdir()
  (dst / "keep.txt").write_text("precious")
  (dst / "model.safetensors").write_bytes(b"not a checkpoint")
  before = _snapshot(dst)
  config = config_files.load("tiny")
  src = str(tmp_path / "src")  # never read: the refusal comes first
  with pytest.raises(FileExistsError, match="--overwrite"):
    if reverse:
      convert.ours_to_official(src, str(dst), config)
    else:
      convert.official_to_ours(src, str(dst), config)
  assert _snapshot(dst) == before
  with pytest.raises(FileExistsError, match="--overwrite"):
    params_io.save_params(str(dst), {"a": np.zeros(2)}, {})
  assert _snapshot(dst) == before


# ------------------------------------------------------------------------------- CLI
def _run_cli(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "jf_jax.convert", *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, f"convert {args} failed:\n{proc.stdout}\n{proc.stderr}"
  return proc


@pytest.fixture(scope="module")
def cli_round_trip(tmp_path_factory, tiny_state):
  """official safetensors -> (CLI) orbax params -> (CLI --reverse) safetensors."""
  root = tmp_path_factory.mktemp("cli")
  src, ours, back = root / "official", root / "ours", root / "back"
  convert_hf.save_state_dict(tiny_state, str(src))
  _run_cli("--src", str(src), "--dst", str(ours), "--config", "configs/tiny.py")
  back.mkdir()  # a stale file that --overwrite must replace
  (back / "model.safetensors").write_bytes(b"stale")
  _run_cli("--reverse", "--overwrite", "--src", str(ours), "--dst", str(back), "--config",
           "configs/tiny.py")
  return src, ours, back


def test_cli_round_trip_is_exact(cli_round_trip, tiny_state):
  _, _, back = cli_round_trip
  assert sorted(os.listdir(back)) == ["model.safetensors"]
  _assert_state_dicts_equal(convert_hf.load_state_dict(str(back)), tiny_state)


def test_cli_writes_restorable_params_with_repa(cli_round_trip, tiny_state, tiny_abstract):
  _, ours, _ = cli_round_trip
  model_json = json.loads((ours / "model.json").read_text())
  assert model_config.from_config_dict(model_json) == TINY
  # The generation space travels with the params (configs/tiny.py: pixel space).
  assert json.loads((ours / "generation.json").read_text()) == {"data": {"gen_space": "pixel"}}
  params = params_io.load_params(str(ours), tiny_abstract)
  assert jax.tree.structure(params) == jax.tree.structure(tiny_abstract)
  repa = params["repa_projector"]
  for leaf, ref in zip(jax.tree.leaves(repa), jax.tree.leaves(tiny_abstract["repa_projector"])):
    assert (leaf.shape, leaf.dtype) == (ref.shape, ref.dtype)
    assert np.all(np.isfinite(leaf))
  assert np.any(np.asarray(repa["dense_0"]["kernel"]) != 0)  # freshly initialised
  expected = convert_hf.to_params(tiny_state, TINY, tiny_abstract)
  restored = {k: v for k, v in params.items() if k != "repa_projector"}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)
