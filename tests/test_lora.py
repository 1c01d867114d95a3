"""LoRA / QLoRA fine-tuning through Qwix on the tiny model (`jf_jax/lora/`).

One module-scoped LoRA run (8 steps from a params directory of random tiny weights, on
the synthetic mixture) feeds most tests: its loss, which params it trained, its optimizer
state, exact resume, and merged params (in our layout and, reversed, in transformers').
"""

import base64
import json
import os
import subprocess
import sys

import chex
import flax
import httpx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM

import serve_helpers
import tiny_checkpoint
from jf_jax import config_defaults
from jf_jax.checkpoint import params_io
from jf_jax.lora import base as lora_base
from jf_jax.lora import model as lora_model
from jf_jax.lora import params as lora_params
from jf_jax.models import config as model_config
from jf_jax.models import janusflow
from jf_jax.train import loop
from jf_jax.train import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


def lora_config(base_dir: str, num_steps: int = STEPS, **lora):
  config = config_defaults.base_config()
  config.stage = 3
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.batch.update(dict(und_rows=2, text_rows=2, gen_rows=4, und_seq_len=32,
                           text_seq_len=16, gen_prompt_len=8))
  config.optim.update(dict(learning_rate=3e-3, warmup_steps=0))
  config.train.update(dict(num_steps=num_steps, log_every=1, checkpoint_every=4,
                           init_params_from=base_dir))
  config.lora.update({**dict(rank=4, alpha=8.0), **lora})
  return config


def to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def flat(tree):
  return {lora_params.path_str(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
  return tiny_checkpoint.write_params_dir(str(tmp_path_factory.mktemp("lora_base")))


@pytest.fixture(scope="module")
def run(base_dir, tmp_path_factory):
  """(config, workdir, train result, the run's Setup) of an 8-step LoRA run."""
  workdir = str(tmp_path_factory.mktemp("lora_run"))
  config = lora_config(base_dir)
  out = loop.train(config, workdir, devices=jax.devices()[:1])
  return config, workdir, out


@pytest.fixture(scope="module")
def base_params(base_dir):
  cfg = model_config.from_config_dict(config_defaults.model_tiny())
  return to_host(params_io.load_params(base_dir, params_io.abstract_params(cfg)))


def test_lora_run_lowers_the_loss(run):
  _, workdir, _ = run
  loss = losses(workdir)
  assert len(loss) == STEPS
  assert np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.1, loss


def test_only_adapters_and_modules_trained_in_full_change(run, base_params):
  config, _, out = run
  trained = flat(to_host(out["state"].params))
  base = flat(base_params)
  in_full = [p for p in trained if not lora_params.is_adapter(p)]
  adapters = [p for p in trained if lora_params.is_adapter(p)]
  # An A and a B factor for each of the 7 projections (stacked over layers).
  assert len(adapters) == 14
  assert all(p.startswith("language_model/model/layers/") for p in adapters)
  assert in_full and all(p.split("/")[0] in {r.split("/")[0] for r in
                                               config.lora.train_in_full} for p in in_full)
  # Trained leaves moved from where they started (B starts at zero).
  for p in adapters:
    if p.endswith("_lora_b"):
      assert np.abs(trained[p]).max() > 0, p
  assert all(not np.array_equal(trained[p], base[p]) for p in in_full if "kernel" in p)
  # Everything else is the base, which the run never writes: after training, the base the
  # step was given is still the checkpoint's, bit for bit; no LLM/SigLIP weight is trained.
  step_base = flat(to_host(out["base_params"]))
  assert set(step_base) == set(base) - set(in_full)
  for p, value in step_base.items():
    np.testing.assert_array_equal(value, base[p], err_msg=p)
  n_trained = sum(v.size for v in trained.values())
  n_base = sum(v.size for v in step_base.values())
  print(f"trained {n_trained:,} params ({len(adapters)} adapter leaves), frozen {n_base:,}")
  assert n_trained < n_base


def test_optimizer_state_holds_only_trained_params(run):
  _, _, out = run
  state = out["state"]
  n_trained = optim.count_params(state.params)
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  assert sum(x.size for x in moments) == 2 * n_trained  # Adam's mu and nu, nothing else


def test_resume_is_exact(run, base_dir, tmp_path):
  config, workdir, out = run
  interrupted = str(tmp_path / "interrupted")
  loop.train(lora_config(base_dir, num_steps=4), interrupted, devices=jax.devices()[:1])
  resumed = loop.train(config, interrupted, devices=jax.devices()[:1])
  assert resumed["final_step"] == STEPS
  assert losses(interrupted) == losses(workdir)  # bit for bit (floats via JSON repr)
  chex.assert_trees_all_equal(to_host(resumed["state"].params), to_host(out["state"].params))
  # The run checkpoints only what trains: no base weight in its checkpoints.
  with open(os.path.join(workdir, "checkpoints", str(STEPS), "state", "_METADATA")) as f:
    saved = f.read()
  assert "'kernel_lora_a')" in saved
  assert "embed_tokens" not in saved and "'q_proj', 'kernel')" not in saved


@pytest.fixture(scope="module")
def merged(run):
  config, workdir, _ = run
  cfg = model_config.from_config_dict(config.model)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return lora_base.load_merged(config, workdir, cfg, sharding)


def _inputs(cfg, seed=0):
  d = janusflow.dummy_inputs(cfg, batch=2, prompt_len=6)
  rng = np.random.default_rng(seed)
  return dict(d, input_ids=jnp.asarray(rng.integers(10, cfg.llm.vocab_size,
                                                     d["input_ids"].shape)),
              images=jnp.asarray(rng.normal(size=d["images"].shape), jnp.float32),
              prompt_ids=jnp.asarray(rng.integers(10, cfg.llm.vocab_size, (2, 6))),
              z_t=jnp.asarray(rng.normal(size=d["z_t"].shape), jnp.float32),
              t=jnp.asarray([0.2, 0.7], jnp.float32))


def test_merged_params_give_the_adapter_models_outputs(run, merged):
  config, _, out = run
  cfg = model_config.from_config_dict(config.model)
  wrapped, _ = lora_model.lora_model(janusflow.JanusFlow(cfg), config.lora)
  adapter_params = lora_params.combine(out["state"].params, out["base_params"])
  plain = janusflow.JanusFlow(cfg)
  x = _inputs(cfg)
  und = lambda m, p: m.apply({"params": p}, x["input_ids"], x["images"], x["image_mask"],
                             method="understand")[0]
  vel = lambda m, p: m.apply({"params": p}, x["prompt_ids"], x["z_t"], x["t"],
                             method="generate_velocity")
  base_only = lora_params.without_adapters(adapter_params)
  for f, name in ((und, "logits"), (vel, "velocity")):
    a, b = f(wrapped, adapter_params), f(plain, merged)
    scale = max(1.0, float(jnp.abs(a).max()))
    err = float(jnp.abs(a - b).max())
    print(f"{name}: merged vs adapters max abs diff {err:.2e} (scale {scale:.2f})")
    assert err <= 1e-5 * scale, name
    # The adapters matter: the base alone is far off.
    assert float(jnp.abs(a - f(plain, base_only)).max()) > 1e3 * max(err, 1e-7), name


def test_merge_lora_reverse_loads_into_transformers(run, merged, tmp_path):
  config, workdir, _ = run
  dst = str(tmp_path / "official")
  subprocess.run([sys.executable, "-m", "jf_jax.convert", "--merge_lora", workdir,
                  "--dst", dst, "--reverse"], cwd=REPO, check=True, capture_output=True)
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  files = [f for f in os.listdir(dst) if f.endswith(".safetensors")]
  state = {}
  for f in files:
    state.update(load_file(os.path.join(dst, f)))
  cfg = model_config.from_config_dict(config.model)
  llm = cfg.llm
  hf = LlamaForCausalLM(LlamaConfig(
      vocab_size=llm.vocab_size, hidden_size=llm.embed_dim, intermediate_size=llm.mlp_dim,
      num_hidden_layers=llm.num_layers, num_attention_heads=llm.num_heads,
      num_key_value_heads=llm.num_kv_heads, head_dim=llm.head_dim,
      rms_norm_eps=llm.rms_norm_eps, rope_theta=llm.rope_theta, max_position_embeddings=256,
      tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
      attn_implementation="eager")).eval().float()
  prefix = "language_model."
  hf.load_state_dict({k[len(prefix):]: torch.from_numpy(np.array(v, np.float32))
                      for k, v in state.items() if k.startswith(prefix)}, strict=True)
  ids = np.random.default_rng(3).integers(10, llm.vocab_size, (2, 9))
  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
  ours = np.asarray(janusflow.JanusFlow(cfg).apply({"params": merged}, jnp.asarray(ids),
                                                   method="text_logits"))
  np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_sample_py_and_the_server_load_the_lora_workdir(run, tmp_path):
  """sample.py and `python -m jf_jax.serve` take the LoRA workdir itself (adapters merged
  at load): the server's greedy answer is sample.py's, and the adapters changed it."""
  _, workdir, _ = run
  image = tmp_path / "q.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(image)
  question = "how many shapes are there?"

  def sample_py(checkpoint):
    proc = serve_helpers.sample_py(f"--checkpoint={checkpoint}", f"--image={image}",
                                   f"--question={question}", "--max_new_tokens=8")
    return proc.stdout.rstrip("\n").split("\n")[-1]

  want = sample_py(workdir)
  assert want != sample_py(run[0].train.init_params_from)  # the base alone answers otherwise
  flags = ["--no_images", "--config.engine.batch_buckets=(1,)",
           "--config.engine.und_prompt_buckets=(128,)",
           "--config.engine.max_tokens_buckets=(64,)"]
  with serve_helpers.serving(workdir, flags, tmp_path / "server.log") as (base, _):
    assert httpx.get(f"{base}/health").json()["step"] == STEPS
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    response = httpx.post(f"{base}/v1/chat/completions", timeout=600, json={
        "model": "lora", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": question}]}]})
  assert response.status_code == 200, response.text
  assert response.json()["choices"][0]["message"]["content"] == want


def test_qlora_int8_base_trains_only_adapters(base_dir, tmp_path):
  config = lora_config(base_dir, num_steps=2, base_quant="int8")
  out = loop.train(config, str(tmp_path / "qlora"), devices=jax.devices()[:1])
  base = out["base_params"]
  kernel = base["language_model"]["model"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert kernel.array.qvalue.dtype == jnp.int8
  # One scale per layer and output channel (the scan's layers axis kept).
  assert kernel.array.scale.shape == (config.model.llm.num_layers, 1,
                                      config.model.llm.num_heads, config.model.llm.head_dim)
  assert np.isfinite(losses(str(tmp_path / "qlora"))).all()
  trained = flat(out["state"].params)
  assert sum(lora_params.is_adapter(p) for p in trained) == 14
  assert not any(p.startswith(("language_model/", "vision_und_enc_model/"))
                 for p in trained if not lora_params.is_adapter(p))


@pytest.mark.parametrize("lora, message", [
    (dict(targets="language_model/no_such_module"), "config.lora.targets="),
    (dict(rank=40), "config.lora.rank=40 exceeds the width 32"),
    (dict(train_in_full=("no_such/.*",)), "config.lora.train_in_full regex 'no_such/.*'"),
    (dict(base_quant="int3"), "config.lora.base_quant='int3'"),
])
def test_bad_lora_config_names_the_value(base_dir, lora, message):
  with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(
      ".", r"\.").replace("*", r"\*")) as e:
    loop.plan(lora_config(base_dir, **lora), devices=jax.devices()[:1])
  assert "\n" not in str(e.value)


def test_lora_without_a_base_is_refused(tmp_path):
  with pytest.raises(ValueError, match="config.train.init_params_from"):
    loop.plan(lora_config(""), devices=jax.devices()[:1])


def test_merge_lora_on_a_full_run_names_the_workdir(base_dir, tmp_path):
  config = lora_config(base_dir, num_steps=1, rank=0)
  workdir = str(tmp_path / "full")
  loop.train(config, workdir, devices=jax.devices()[:1])
  out = subprocess.run([sys.executable, "-m", "jf_jax.convert", "--merge_lora", workdir,
                        "--dst", str(tmp_path / "merged")], cwd=REPO, capture_output=True,
                       text=True)
  assert out.returncode == 2  # a user error (jf_jax/entry_point.py): one line, no traceback
  assert f"error: {workdir} is not a LoRA run (its config.lora.rank is 0)" in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "merged")


def test_recipe_config_adapts_every_llm_projection():
  """configs/janusflow_1p3b_lora.py: the fine-tune recipe plus rank-16 adapters; its
  `config.lora` applied to the reduced release shapes adapts all 7 projections."""
  import config_files  # pylint: disable=g-import-not-at-top
  import release_fixtures  # pylint: disable=g-import-not-at-top
  config = config_files.load("janusflow_1p3b_lora")
  finetune = config_files.load("janusflow_1p3b_finetune")
  assert config.lora.rank == 16 and config.lora.base_dtype == "bfloat16"
  assert config.stage == 3 and config.data.to_dict() == finetune.data.to_dict()
  cfg = model_config.from_config_dict(release_fixtures.reduced_model())
  _, boxed = lora_model.lora_model(janusflow.JanusFlow(cfg), config.lora)
  adapters = [p for p in flat(boxed) if lora_params.is_adapter(p)]
  assert len(adapters) == 14
  assert all(flat(boxed)[p].value.shape[-1 if p.endswith("_a") else -2] == 16
             for p in adapters)


@pytest.mark.parametrize("base_quant", ["", "int8", "nf4"])
def test_lora_forward_in_bfloat16_compute(base_quant):
  """bf16 compute with float32 adapters (the 1.3B recipe): layer outputs stay bf16 (the
  scanned layers' carry), for a float, int8 or nf4 base. Shapes only."""
  model = config_defaults.model_tiny()
  model.dtype = "bfloat16"
  cfg = model_config.from_config_dict(model)
  lora = config_defaults.lora_defaults()
  lora.update(dict(rank=4, base_quant=base_quant))
  if base_quant == "nf4":  # 64-element blocks along the contraction: inputs of width 64
    lora.targets = r"language_model/model/layers/(self_attn/[qkv]_proj|mlp/(gate|up)_proj)"
  wrapped, boxed = lora_model.lora_model(janusflow.JanusFlow(cfg), lora)
  x = janusflow.dummy_inputs(cfg)
  out = jax.eval_shape(lambda p: wrapped.apply(
      {"params": p}, x["prompt_ids"], x["z_t"], x["t"], method="generate_velocity"),
                       flax.linen.unbox(boxed))
  assert out.dtype == jnp.bfloat16 and out.shape == x["z_t"].shape
