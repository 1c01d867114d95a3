"""Latent-space generation rows: the frozen SDXL-layout VAE encodes inside the train step.

The reference is diffusers' `AutoencoderKL` with every tensor random, written to disk with
`save_pretrained` (the diffusers layout of `stabilityai/sdxl-vae`) and read back through the
loader training uses (`train/latents.load_params` -> `checkpoint/vae_map`). It has the
SDXL layout (4 levels, 2 resnets per level, 8x downsampling), only narrower.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jf_jax import config_defaults
from jf_jax.data import layout
from jf_jax.data import preprocess
from jf_jax.data import processor
from jf_jax.data import synthetic
from jf_jax.data import tokenizer as tok_lib
from jf_jax.models import config as model_config
from jf_jax.models import latent_space
from jf_jax.parallel import mesh as mesh_lib
from jf_jax.parallel import rules as rules_lib
from jf_jax.train import latents
from jf_jax.train import loop
import config_files
from release_fixtures import SMALL_SDXL
from release_fixtures import write_diffusers_vae

ATOL = 1e-4


def latent_config(vae_path: str, **batch):
  """The tiny model in latent space: 8x8x4 latents from 64 px images, SigLIP at 32 px."""
  config = config_defaults.base_config()
  config.model = config_defaults.model_tiny()  # 4-channel 8x8 latents
  config.stage = 3
  config.batch.update({**dict(und_rows=4, text_rows=4, gen_rows=4, und_seq_len=32,
                              text_seq_len=16, gen_prompt_len=8), **batch})
  config.optim.update(dict(learning_rate=1e-3, warmup_steps=0))
  config.data.gen_space = "sdxl_vae"
  config.vae = config_defaults.vae_defaults()
  config.vae.update(dict(path=vae_path, **SMALL_SDXL))
  return config


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(x):
  return x.detach().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("sdxl_vae")
  model = write_diffusers_vae(directory)
  return directory, model


def _space_and_params(config):
  cfg = model_config.from_config_dict(config.model)
  space = latent_space.from_config(config, cfg)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  rules = rules_lib.default_rules()
  params = latents.load_frozen(config, space, latents.frozen_shardings(space, mesh, rules))
  return cfg, space, params


def test_encode_equals_diffusers_posterior_times_scaling_factor(vae_dir):
  directory, torch_vae = vae_dir
  assert sorted(os.listdir(directory)) == ["config.json", "diffusion_pytorch_model.safetensors"]
  config = latent_config(str(directory))
  cfg, space, params = _space_and_params(config)
  assert space.pixel_size == 64 and cfg.dtype == jnp.float32
  pixels = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    posterior = torch_vae.encode(_nchw(pixels)).latent_dist
    ref_mean = _nhwc(posterior.mean)
    ref_sample = _nhwc(posterior.sample(generator=torch.Generator().manual_seed(7)))
  # diffusers draws the sample's noise as randn(mean.shape) from the generator: same noise.
  eps = _nhwc(torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7)))
  run = jax.jit(lambda p, x, e: (space.encode(p, x), space.encode(p, x, e)))
  mean, sample = run(params, pixels, eps)
  assert mean.shape == sample.shape == (2, 8, 8, 4) and mean.dtype == sample.dtype == jnp.float32
  for name, ours, ref in (("mean", mean, ref_mean), ("sample", sample, ref_sample)):
    err = float(np.abs(np.asarray(ours) - 0.13025 * ref).max())
    print(f"latent {name}: max abs diff {err:.2e} (max |ref| {np.abs(0.13025 * ref).max():.3g})")
    assert err <= ATOL, (name, err)
  assert float(np.abs(ref_sample - ref_mean).max()) > 10 * ATOL / 0.13025  # sampling shows


def test_missing_vae_directory_is_a_startup_error_naming_the_key(tmp_path):
  config = latent_config(str(tmp_path / "no_vae_here"))
  with pytest.raises(FileNotFoundError, match=r"config\.vae\.path=.*no_vae_here"):
    loop.setup(config, devices=jax.devices()[:1])
  config.vae.path = ""
  with pytest.raises(FileNotFoundError, match=r"config\.vae\.path=''"):
    _space_and_params(config)
  del config.vae
  with pytest.raises(ValueError, match="needs config.vae"):
    latent_space.from_config(config, model_config.from_config_dict(config.model))


def test_bad_keys_are_named(vae_dir):
  config = latent_config(str(vae_dir[0]))
  cfg = model_config.from_config_dict(config.model)
  config.vae.latent_mode = "mode"
  with pytest.raises(ValueError, match="config.vae.latent_mode='mode'"):
    latent_space.from_config(config, cfg)
  config.vae.latent_mode = "mean"
  config.data.gen_space = "sdxl"
  with pytest.raises(ValueError, match="config.data.gen_space='sdxl'"):
    latent_space.from_config(config, cfg)
  config.data.gen_space = "pixel"  # the 4-channel model cannot have RGB latents
  with pytest.raises(ValueError, match="gen_encoder.in_channels=3"):
    latent_space.from_config(config, cfg)


def test_rows_carry_the_centre_crop_and_its_siglip_view_is_the_same_crop(vae_dir):
  config = latent_config(str(vae_dir[0]))
  config.data.resize_images = True
  cfg = model_config.from_config_dict(config.model)
  builder = processor.RowBuilder(tok_lib.load("shapes", config.tokens), config, cfg,
                                 latent_space.from_config(config, cfg).pixel_size)
  rng = np.random.default_rng(1)
  # Mixed size (upscaled to a 64 px short side), smooth so resampling differences stay small.
  yy, xx = np.mgrid[0:50, 0:90]
  wide = np.stack([xx * 2.8, yy * 5, (xx + yy) * 1.8], -1).astype(np.uint8)
  wide[10:20, 30:60] = rng.integers(0, 256, 3, np.uint8)
  row = builder.build("gen", {"caption": "circle", "image": wide})
  assert sorted(row) == ["pixels", "prompt_ids", "prompt_mask"]
  # uint8 on the host; the step normalises to [-1, 1] on the devices (device_inputs).
  np.testing.assert_array_equal(row["pixels"], preprocess.center_crop(wide, 64))
  assert builder.padding("gen")["pixels"].shape == (64, 64, 3)
  pixels = preprocess.to_pixel_latent(row["pixels"])[None]
  # At P == S (the release: 384 both) the REPA input is exactly what the pixel-space path
  # feeds SigLIP for the same image; here (P=64, S=32) it is that crop resized.
  crop = preprocess.center_crop(wide, 64)
  np.testing.assert_array_equal(latents.resize_for_siglip(pixels, 64)[0],
                                preprocess.siglip_normalize(crop))
  small = np.asarray(latents.resize_for_siglip(pixels, 32)[0])
  host = preprocess.siglip_normalize(preprocess.center_crop(wide, 32))
  assert small.shape == (32, 32, 3) and np.abs(small - host).mean() < 0.05


def test_pixel_and_latent_space_batches_have_one_schema(vae_dir):
  """Both generation spaces send the same keys and dtypes; only P differs (the pixel
  space's latent side, or the latent side x the VAE's downsample factor)."""
  latent = latent_config(str(vae_dir[0]))
  pixel = config_files.load("tiny")
  pixel.batch.update(latent.batch.to_dict())
  schemas = {}
  for name, config in (("latent", latent), ("pixel", pixel)):
    cfg = model_config.from_config_dict(config.model)
    space = latent_space.from_config(config, cfg)
    batch = synthetic.make_batch(config.batch, config.tokens, cfg, 0, 0, space.pixel_size)
    layout.check_batch(batch, config.batch, cfg, space.pixel_size)
    schemas[name] = {k: (v.dtype, v.shape[0]) for k, v in batch.items()}
    assert batch["gen_pixels"].shape == (4, space.pixel_size, space.pixel_size, 3), name
    assert batch["gen_pixels"].dtype == np.uint8  # normalised to [-1, 1] in the step
  assert schemas["latent"] == schemas["pixel"]
  assert {"gen_pixels", "gen_weights"} <= set(schemas["pixel"])
  assert not {"gen_latents", "gen_images"} & set(schemas["pixel"])


def test_the_same_batch_keys_reach_the_step_in_both_spaces(vae_dir, monkeypatch):
  """The jitted step of a pixel-space run and of a latent-space run receive the same batch
  keys (recorded at trace time inside the real step)."""
  from jf_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  seen = {}
  encode = latents.encode_generation_rows

  def recording(space, frozen, batch, *args, **kw):
    seen[space.kind] = sorted(batch)
    return encode(space, frozen, batch, *args, **kw)
  monkeypatch.setattr(step_lib.latents, "encode_generation_rows", recording)
  latent = latent_config(str(vae_dir[0]))
  pixel = config_files.load("tiny")
  pixel.batch.update(latent.batch.to_dict())
  for config in (latent, pixel):
    config.mesh.update(dict(data=1, fsdp=1, tensor=1))
    s = loop.plan(config, devices=jax.devices()[:1])
    batch = layout.abstract_batch(config.batch, s.cfg, s.space.pixel_size)
    s.jitted.lower(s.frozen, s.abstract, batch)
  assert seen["pixel"] == seen["sdxl_vae"] and "gen_pixels" in seen["pixel"]


@pytest.fixture(scope="module")
def latent_runs(vae_dir):
  """One step each of a latent-space run with 1 and with 2 microbatches (same batch)."""
  out = {}
  for micro in (1, 2):
    config = latent_config(str(vae_dir[0]))
    config.train.microbatches = micro
    config.mesh.update(dict(data=1, fsdp=2, tensor=1))
    s = loop.setup(config, devices=jax.devices()[:2])
    batch = synthetic.make_batch(config.batch, config.tokens, s.cfg, 0, 0, s.space.pixel_size)
    vae_before = jax.device_get(s.frozen)
    state, metrics = s.step(s.state, batch)
    out[micro] = (s, jax.device_get(state.params), jax.device_get(metrics), vae_before)
  return out


def test_latent_step_trains_the_model_and_never_the_vae(latent_runs):
  s, params, metrics, vae_before = latent_runs[1]
  for key in ("loss", "rf_loss", "repa_loss", "ar_loss"):
    assert np.isfinite(metrics[key]) and metrics[key] > 0, key
  # The VAE is an argument, not state: same arrays after the step, nothing of it in state.
  for a, b in zip(jax.tree.leaves(jax.device_get(s.frozen)), jax.tree.leaves(vae_before)):
    np.testing.assert_array_equal(a, b)
  assert "encoder" not in params and "decoder" not in params
  # The VAE params are laid out by the logical rules (conv kernels: replicated).
  leaf = jax.tree.leaves(s.frozen)[0]
  assert leaf.sharding.is_fully_replicated and leaf.dtype == jnp.float32


def test_microbatched_encoding_is_the_same_step(latent_runs):
  (_, p1, m1, _), (_, p2, m2, _) = latent_runs[1], latent_runs[2]
  for key in ("loss", "rf_loss", "repa_loss"):
    np.testing.assert_allclose(m1[key], m2[key], rtol=2e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(a, b, atol=0.05 * 1e-3)


def test_sample_and_mean_modes_differ_only_by_the_posterior_noise(vae_dir):
  config = latent_config(str(vae_dir[0]))
  cfg, space, params = _space_and_params(config)
  batch = {"gen_pixels": np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 3))
                         .astype(np.float32)}
  config.vae.latent_mode = "mean"
  mean_space = latent_space.from_config(config, cfg)
  rng, und_size = jax.random.key(0), cfg.und_encoder.image_size
  sampled = latents.encode_generation_rows(space, params, batch, rng, und_size)
  again = latents.encode_generation_rows(space, params, batch, rng, und_size)
  mean = latents.encode_generation_rows(mean_space, params, batch, rng, und_size)
  assert sorted(sampled) == ["gen_images", "gen_latents"]
  np.testing.assert_array_equal(sampled["gen_latents"], again["gen_latents"])  # seeded
  np.testing.assert_allclose(mean["gen_latents"], space.encode(params, batch["gen_pixels"]),
                             atol=1e-6)
  assert float(jnp.abs(sampled["gen_latents"] - mean["gen_latents"]).max()) > 1e-3
  assert mean["gen_images"].shape == (2, 32, 32, 3)


def test_vae_flops_count_matches_the_compiled_encoder():
  # The analytic count (tools/flops.py) against XLA's own count of the compiled encoder.
  from jf_jax.checkpoint import vae_map  # pylint: disable=g-import-not-at-top
  from jf_jax.models import vae  # pylint: disable=g-import-not-at-top
  from jf_jax.tools import flops  # pylint: disable=g-import-not-at-top
  vcfg = vae.config_from_dict(SMALL_SDXL)
  module = vae.make_vae(vcfg, dtype=jnp.float32)
  abstract = vae_map.abstract_params(vcfg)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  compiled = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode")).lower(
      abstract, images).compile()
  xla = float(compiled.cost_analysis()["flops"])
  ours = flops.vae_encode_flops(abstract, 64)
  print(f"VAE encoder FLOPs at 64 px: ours {ours:.4e}, XLA {xla:.4e}")
  assert abs(ours - xla) <= 0.03 * xla


def test_finetune_recipe_plans_at_full_size():
  config = config_files.load("janusflow_1p3b_finetune")
  assert (config.stage, config.data.source, config.data.gen_space) == (3, "files", "sdxl_vae")
  s = loop.plan(config)  # shapes only: the 1.3B model over the 8 fake devices
  # The SigLIP input of the REPA target is the VAE's own 384 px crop, unresized.
  assert s.space.pixel_size == s.cfg.und_encoder.image_size == 384
  assert s.space.latent_mode == "sample" and s.cfg.dtype == jnp.bfloat16
  abstract = s.space.abstract_params()
  assert {x.dtype for x in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
  # The encoder half only (the decoder is never read by the step).
  assert sorted(abstract) == ["encoder", "quant_conv"]
  print(f"VAE params in the step: {sum(x.size for x in jax.tree.leaves(abstract)):,}")
