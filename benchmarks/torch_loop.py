r"""Our jitted text-to-image sampler vs an official-style PyTorch loop, per ODE evaluation.

  python benchmarks/torch_loop.py                          # release shapes, 2 LLM layers
  python benchmarks/torch_loop.py --layers 24 --steps 30   # the whole LLM

Both run the release's shapes (2048-wide LLM, 768-channel ConvNeXt generation encoder
and decoder, 48x48x4 latents = 576 image tokens) with --layers LLM layers, float32, on
CPU, batch 1 + its CFG row, --steps Euler steps, random weights (speed only; the
numbers of each component are compared in tests/test_parity.py). The vocabulary is cut
to 1024 ids and the SigLIP tower to one layer: neither enters text-to-image.

The PyTorch loop mirrors the official demo's `generate` (demo/app_janusflow.py) built
from the parity tests' reference modules (transformers' Llama, the ConvNeXt generation
encoder/decoder written there): the CFG batch of 2 rows (the unconditional row keeps BOS
and masks the rest), then per step the generation encoder on [z, z], the LLM over
[t_emb, image tokens], the decoder, the guided Euler update. --torch_mode=cache runs the
LLM over the prompt once and gives each step a copy of its keys and values
(past_key_values): what the demo's cache means to do; --torch_mode=
recompute runs the whole [prompt, t_emb, image tokens] sequence every step, which is what
the demo does (its cache is always empty). Ours: `sampling/image.make_sampler` (prompt
K/V cached once, all steps in one jitted loop). Reported per ODE evaluation (a whole
generation, prompt prefill included, divided by the step count): the median wall time
and process CPU time over --repeats rounds, the two sides run in turn each round so that
both meet the same load on a shared machine, and the per-round ratio. --parts adds the
diagnostic: each part of one evaluation alone on both sides, and plain matmuls of its
shapes (is the loss in the dot itself, or around it?).
"""

import copy
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # gemm_vs_torch, trace_parts
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from jf_jax import config_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from jf_jax import testing  # pylint: disable=wrong-import-position
from jf_jax.models import config as model_config  # pylint: disable=wrong-import-position
from jf_jax.models import janusflow  # pylint: disable=wrong-import-position
from jf_jax.sampling import image  # pylint: disable=wrong-import-position
import gemm_vs_torch  # pylint: disable=wrong-import-position
import trace_parts  # pylint: disable=wrong-import-position
import test_parity  # pylint: disable=wrong-import-position  (the PyTorch references)
from transformers import LlamaConfig  # pylint: disable=wrong-import-position
from transformers import LlamaForCausalLM  # pylint: disable=wrong-import-position

_LAYERS = flags.DEFINE_integer("layers", 2, "LLM layers.")
_STEPS = flags.DEFINE_integer("steps", 4, "Euler steps per generation.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed generations per side.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 16, "Prompt tokens (BOS included).")
_GUIDANCE = flags.DEFINE_float("guidance", 2.0, "CFG weight.")
_TORCH_MODE = flags.DEFINE_enum("torch_mode", "cache", ["cache", "recompute"],
                                "PyTorch loop: prompt K/V cached, or the demo's recompute.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Only our sampler.")
_SKIP_JAX = flags.DEFINE_bool("skip_jax", False, "Only the PyTorch loop.")
_PARTS = flags.DEFINE_bool(
    "parts", False, "Also time one ODE evaluation's parts alone on both sides (generation "
    "encoder, LLM over the cached prompt, decoder) and plain matmuls of the LLM's and the "
    "ConvNeXt's shapes: which part loses, and whether by the dot itself.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "If set, trace one more generation of our sampler with jax.profiler "
    "there and print where its time went per model part and op category "
    "(benchmarks/trace_parts.py), per ODE evaluation.")
_DEPTHWISE = flags.DEFINE_enum("depthwise", None, list(model_config.DEPTHWISE),
                               "Our ConvNeXt depthwise convolution (default: the config's).")
PAD = 0


def model_cfg() -> model_config.JanusFlowConfig:
  model = config_defaults.model_1p3b()
  model.llm.update(dict(num_layers=_LAYERS.value, vocab_size=1024, remat_policy="none"))
  model.und_encoder.update(dict(depth=1, remat_policy="none"))
  model.repa.layer = min(model.repa.layer, _LAYERS.value)  # training only
  model.update(dict(dtype="float32", param_dtype="float32"))
  if _DEPTHWISE.value:
    model.gen_encoder.depthwise = model.gen_decoder.depthwise = _DEPTHWISE.value
  return model_config.from_config_dict(model)


def torch_modules(cfg):
  llm_cfg = cfg.llm
  llm = LlamaForCausalLM(LlamaConfig(
      vocab_size=llm_cfg.vocab_size, hidden_size=llm_cfg.embed_dim,
      intermediate_size=llm_cfg.mlp_dim, num_hidden_layers=llm_cfg.num_layers,
      num_attention_heads=llm_cfg.num_heads, num_key_value_heads=llm_cfg.num_kv_heads,
      head_dim=llm_cfg.head_dim, rms_norm_eps=llm_cfg.rms_norm_eps,
      rope_theta=llm_cfg.rope_theta, max_position_embeddings=4096, hidden_act="silu",
      tie_word_embeddings=False, attention_bias=False, mlp_bias=False))
  top = test_parity.RefTopLevel(cfg)
  return llm.eval().float(), top.eval().float()


@torch.no_grad()
def torch_generate(llm, top, cfg, prompt_ids: torch.Tensor, steps: int, guidance: float,
                   mode: str, generator: torch.Generator) -> torch.Tensor:
  """The demo's loop for one prompt [1, Lp] -> latents [1, C, L, L]."""
  tokens = prompt_ids.repeat(2, 1)
  tokens[1:, 1:] = PAD  # the unconditional row: BOS only
  prompt = llm.get_input_embeddings()(tokens)
  lp, n = prompt.shape[1], cfg.num_gen_tokens
  mask = torch.ones(2, lp + 1 + n, dtype=torch.long)
  mask[1:, 1:lp] = 0
  cache = None
  if mode == "cache":
    cache = llm.model(inputs_embeds=prompt, attention_mask=mask[:, :lp],
                      use_cache=True).past_key_values
  size, grid = cfg.latent_size, cfg.latent_size // cfg.gen_encoder.patch_size
  z = torch.randn(1, cfg.gen_encoder.in_channels, size, size, generator=generator)
  dt = 1.0 / steps
  for step in range(steps):
    z2 = torch.cat([z, z])
    t = torch.full((2,), step / steps * 1000.0)
    feats, t_emb, skips = top.vision_gen_enc_model(z2, t)
    latent_tokens = top.vision_gen_enc_aligner(feats.flatten(2).transpose(1, 2))
    x = torch.cat([t_emb[:, None], latent_tokens], dim=1)
    if mode == "cache":
      positions = torch.arange(lp, lp + 1 + n)[None].expand(2, -1)
      # a copy of the prompt's K/V each step (the step appends its own; a prompt's copy
      # is cheap, and `DynamicCache.crop`'s meaning differs between transformers versions)
      hidden = llm.model(inputs_embeds=x, attention_mask=mask,
                         past_key_values=copy.deepcopy(cache), position_ids=positions,
                         use_cache=True).last_hidden_state
    else:
      hidden = llm.model(inputs_embeds=torch.cat([prompt, x], dim=1),
                         attention_mask=mask).last_hidden_state[:, lp:]
    h = top.vision_gen_dec_aligner(top.vision_gen_dec_aligner_norm(hidden[:, 1:]))
    h = h.reshape(2, grid, grid, -1).permute(0, 3, 1, 2)
    v_cond, v_uncond = top.vision_gen_dec_model(h, skips, t_emb).chunk(2)
    z = z + dt * (guidance * v_cond - (guidance - 1.0) * v_uncond)
  return z


def _jax_llm_step(module, tokens, cache, key_valid):
  """(Module method) The LLM over [t_emb, latent tokens] after the cached prompt."""
  b, seq = tokens.shape[:2]
  prompt_len = key_valid.shape[1] - seq
  positions = prompt_len + jnp.broadcast_to(jnp.arange(seq), (b, seq))
  hidden, _, cache = module.llm(tokens, positions, key_valid=key_valid, cache=cache,
                                cache_index=prompt_len)
  return hidden, cache


def jax_parts(cfg, params, ids: np.ndarray) -> dict:
  """One ODE evaluation of our sampler cut into its parts, each jitted alone: name ->
  a call that runs it on the CFG batch of 2 rows (inputs made once, outside the timing)."""
  model = janusflow.JanusFlow(cfg)
  size, c = cfg.latent_size, cfg.gen_encoder.in_channels
  z, t = jnp.ones((2, size, size, c)), jnp.full((2,), 0.5)
  rows, mask = image.cfg_prompt_rows(jnp.asarray(ids, jnp.int32),
                                     jnp.ones(ids.shape, bool), PAD)
  cache, key_valid = jax.jit(image.prefill_prompt, static_argnums=0)(model, params, rows, mask)
  enc = jax.jit(lambda p, z, t: model.apply({"params": p}, z, t, method="encode_gen_inputs"))
  llm = jax.jit(lambda p, x, cache, kv: model.apply({"params": p}, x, cache, kv,
                                                    method=_jax_llm_step))
  dec = jax.jit(lambda p, h, skip, t_emb, z, t: model.apply(
      {"params": p}, h, skip, t_emb, z, t, method="decode_velocity"))
  tokens, skip, t_emb = enc(params, z, t)
  hidden = llm(params, tokens, cache, key_valid)[0][:, 1:]
  return {
      "gen_enc": lambda: jax.block_until_ready(enc(params, z, t)),
      "llm": lambda: jax.block_until_ready(llm(params, tokens, cache, key_valid)),
      "gen_dec": lambda: jax.block_until_ready(dec(params, hidden, skip, t_emb, z, t)),
  }


@torch.no_grad()
def torch_parts(llm, top, cfg, ids: np.ndarray) -> dict:
  """The same parts of the PyTorch loop's step (--torch_mode=cache), each alone."""
  tokens = torch.from_numpy(ids).repeat(2, 1)
  tokens[1:, 1:] = PAD
  lp, n = tokens.shape[1], cfg.num_gen_tokens
  mask = torch.ones(2, lp + 1 + n, dtype=torch.long)
  mask[1:, 1:lp] = 0
  cache = llm.model(inputs_embeds=llm.get_input_embeddings()(tokens),
                    attention_mask=mask[:, :lp], use_cache=True).past_key_values
  size, grid = cfg.latent_size, cfg.latent_size // cfg.gen_encoder.patch_size
  z2 = torch.ones(2, cfg.gen_encoder.in_channels, size, size)
  t = torch.full((2,), 500.0)
  positions = torch.arange(lp, lp + 1 + n)[None].expand(2, -1)

  def enc():
    feats, t_emb, skips = top.vision_gen_enc_model(z2, t)
    latent = top.vision_gen_enc_aligner(feats.flatten(2).transpose(1, 2))
    return torch.cat([t_emb[:, None], latent], dim=1), t_emb, skips

  def llm_step(x):
    return llm.model(inputs_embeds=x, attention_mask=mask, past_key_values=copy.deepcopy(cache),
                     position_ids=positions, use_cache=True).last_hidden_state

  def dec(hidden, skips, t_emb):
    h = top.vision_gen_dec_aligner(top.vision_gen_dec_aligner_norm(hidden[:, 1:]))
    h = h.reshape(2, grid, grid, -1).permute(0, 3, 1, 2)
    return top.vision_gen_dec_model(h, list(skips), t_emb)  # it pops the skips it uses

  x, t_emb, skips = enc()
  hidden = llm_step(x)
  return {"gen_enc": torch.no_grad()(enc), "llm": torch.no_grad()(lambda: llm_step(x)),
          "gen_dec": torch.no_grad()(lambda: dec(hidden, skips, t_emb))}


def report_parts(cfg, params, llm, top, ids: np.ndarray, repeats: int) -> None:
  """Prints each part's median wall time on both sides (alternating rounds) and the
  plain matmuls' GFLOP/s: the diagnostic that names the part that loses."""
  ours, theirs = jax_parts(cfg, params, ids), torch_parts(llm, top, cfg, ids)
  print("per part of one ODE evaluation (each alone; median wall ms over "
        f"{repeats} alternating rounds):")
  for name in ours:
    times = compare({"jax": ours[name], "torch": theirs[name]}, repeats)
    a, b = (statistics.median(times[k]["wall"]) * 1e3 for k in ("jax", "torch"))
    print(f"  {name:8s} jax {a:8.1f}  torch {b:8.1f}  torch/jax {b / a:5.2f}x", flush=True)
  for name, shape in gemm_vs_torch.gemm_shapes(cfg).items():
    flop, jfn, tfn = gemm_vs_torch.matmul_calls(*shape)
    times = compare({"jax": jfn, "torch": tfn}, repeats)
    a, b = (flop / statistics.median(times[k]["wall"]) / 1e9 for k in ("jax", "torch"))
    print(f"  matmul {name:28s} jax {a:6.0f}  torch {b:6.0f} GFLOP/s  jax/torch {a / b:5.2f}x",
          flush=True)


def _timed(fn) -> tuple[float, float]:
  """(wall seconds, this process's CPU seconds over all threads) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def compare(fns: dict, repeats: int) -> dict[str, dict[str, list[float]]]:
  """Times each fn once (compile / warm-up), then `repeats` rounds of one call each,
  the sides interleaved so that both see the same machine load."""
  times = {name: {"first": [_timed(fn)[0]], "wall": [], "cpu": []} for name, fn in fns.items()}
  for _ in range(repeats):
    for name, fn in fns.items():
      wall, cpu = _timed(fn)
      times[name]["wall"].append(wall)
      times[name]["cpu"].append(cpu)
  return times


def main(argv):
  del argv
  cfg = model_cfg()
  steps, lp = _STEPS.value, _PROMPT_LEN.value
  ids = np.random.default_rng(0).integers(8, cfg.llm.vocab_size, (1, lp))
  ids[0, 0] = 1
  print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), jax {jax.__version__}; release shapes, {cfg.llm.num_layers} LLM layers, "
        f"float32, batch 1 + CFG, prompt {lp}, {steps} Euler steps, {cfg.num_gen_tokens} "
        f"image tokens", flush=True)
  fns = {}
  if not _SKIP_JAX.value:
    params = testing.random_params(cfg)
    sampler = image.make_sampler(janusflow.JanusFlow(cfg), pad_id=PAD)
    jids, jmask = jnp.asarray(ids, jnp.int32), jnp.ones((1, lp), bool)
    keys = iter(range(10_000))
    fns["jax"] = lambda: jax.block_until_ready(sampler(
        params, jids, jmask, jax.random.key(next(keys)), steps, _GUIDANCE.value))
    if _PROFILE_DIR.value:
      text = sampler.lower(params, jids, jmask, jax.random.key(0), steps,
                           _GUIDANCE.value).compile().as_text()
      print(trace_parts.profile_cpu(fns["jax"], text, _PROFILE_DIR.value, 1, steps),
            flush=True)
  if not _SKIP_TORCH.value:
    torch.manual_seed(0)
    llm, top = torch_modules(cfg)
    gen = torch.Generator().manual_seed(0)
    tids = torch.from_numpy(ids)
    fns[f"torch ({_TORCH_MODE.value})"] = lambda: torch_generate(
        llm, top, cfg, tids, steps, _GUIDANCE.value, _TORCH_MODE.value, gen)
  times = compare(fns, _REPEATS.value)
  for name, t in times.items():
    wall = [x / steps * 1e3 for x in t["wall"]]
    cpu = [x / steps * 1e3 for x in t["cpu"]]
    print(f"{name:16s} first call {t['first'][0]:6.1f}s | per ODE evaluation: wall median "
          f"{statistics.median(wall):8.1f} ms (min {min(wall):.1f}, max {max(wall):.1f}), "
          f"CPU time median {statistics.median(cpu):8.1f} ms, {_REPEATS.value} runs",
          flush=True)
  if len(times) == 2:
    (_, a), (_, b) = times.items()
    ratios = [tb / ta for ta, tb in zip(a["wall"], b["wall"])]
    print(f"torch / jax wall time per round: {' '.join(f'{r:.2f}' for r in ratios)}; median "
          f"{statistics.median(ratios):.2f}x; CPU time median "
          f"{statistics.median(b['cpu']) / statistics.median(a['cpu']):.2f}x")
  if _PARTS.value and not (_SKIP_JAX.value or _SKIP_TORCH.value):
    report_parts(cfg, params, llm, top, ids, _REPEATS.value)


if __name__ == "__main__":
  app.run(main)
