"""SDXL-VAE: parity with diffusers `AutoencoderKL`, the name table, loading, helpers.

The reference is diffusers' own `AutoencoderKL` on a tiny config with every tensor random
(GroupNorm affines included); its `state_dict()` goes through `vae_map.to_params`, the same
code that loads `stabilityai/sdxl-vae`. Comparisons are float32 on both sides with
max |ours - torch| <= 1e-4 (JAX matmuls at 'highest' precision from conftest). The full-size
check builds the SDXL config on torch's meta device (no memory, no weights).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

from jf_jax.checkpoint import convert_hf
from jf_jax.checkpoint import vae_map
from jf_jax import config_defaults
from jf_jax.models import config as model_config
from jf_jax.models import latent_space
from jf_jax.models import vae
from jf_jax.sampling import image as image_sampling

ATOL = 1e-4
# A ~0.3M-parameter AutoencoderKL (2 levels, downsample 2).
TINY = vae.VAEConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)


def _torch_vae(cfg: vae.VAEConfig) -> TorchAutoencoderKL:
  n = len(cfg.block_out_channels)
  return TorchAutoencoderKL(
      in_channels=cfg.in_channels, out_channels=cfg.out_channels,
      down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
      block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
      latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
      scaling_factor=cfg.scaling_factor)


@pytest.fixture(scope="module")
def torch_tiny():
  torch.manual_seed(0)
  model = _torch_vae(TINY).eval()
  with torch.no_grad():  # convs/linears are randomly initialised already; norms are not
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def tiny_state(torch_tiny):
  return {k: v.numpy().copy() for k, v in torch_tiny.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_params(tiny_state):
  return vae_map.to_params(tiny_state, TINY, source="torch")


def _report(name, ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
  err = float(np.abs(ours - ref).max())
  print(f"parity {name}: max abs diff {err:.3e} (max |ref| {np.abs(ref).max():.3g})")
  assert err <= ATOL, f"{name}: max abs diff {err:.3e} > {ATOL}"


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(x):
  return x.detach().permute(0, 2, 3, 1).numpy()


def _apply(module, params, x, method):
  return jax.jit(lambda p, x: module.apply({"params": p}, x, method=method))(params, x)


# ------------------------------------------------------------------------------ parity
def test_encode_and_decode_match_diffusers(torch_tiny, tiny_params):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)  # H != W catches swaps
  latents = rng.normal(size=(2, 8, 12, TINY.latent_channels)).astype(np.float32)
  model = vae.AutoencoderKL(TINY)
  # The generation space over this VAE: scaled latents in, scaled latents out.
  space = latent_space.LatentSpace("sdxl_vae", 16, 8, TINY.latent_channels,
                                   vae.SDXL_SCALING_FACTOR, "mean", model)

  @jax.jit
  def run(params):  # the raw methods and the scaled entry points, in one compile
    mean, logvar = model.apply({"params": params}, images, method="encode")
    return (mean, logvar, space.encode(params, images),
            space.decode(params, latents * vae.SDXL_SCALING_FACTOR))

  mean, logvar, scaled, decoded = run(tiny_params)
  with torch.no_grad():
    posterior = torch_tiny.encode(_nchw(images)).latent_dist
    ref_decoded = torch_tiny.decode(_nchw(latents)).sample
  assert mean.dtype == logvar.dtype == decoded.dtype == jnp.float32
  _report("encoder mean", mean, _nhwc(posterior.mean))
  _report("encoder logvar", logvar, _nhwc(posterior.logvar))
  _report("decoder", decoded, _nhwc(ref_decoded))
  np.testing.assert_allclose(scaled, 0.13025 * mean, rtol=1e-6)


def test_bfloat16_compute_tracks_float32():
  cfg = vae.VAEConfig(block_out_channels=(16,), layers_per_block=1, norm_num_groups=4)
  images = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  f32, bf16 = vae.make_vae(cfg, dtype=jnp.float32), vae.make_vae(cfg, dtype=jnp.bfloat16)
  rng = np.random.default_rng(2)  # numpy weights: compiling a random init costs seconds
  params = jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(s.dtype),
                        vae_map.abstract_params(cfg))
  run = jax.jit(lambda p: (f32.apply({"params": p}, images, method="encode"),
                           bf16.apply({"params": p}, images, method="encode")))
  (ref, _), (mean, logvar) = run(params)
  assert mean.dtype == logvar.dtype == jnp.float32
  assert float(jnp.abs(mean - ref).max()) < 0.05 * max(1.0, float(jnp.abs(ref).max()))


# ------------------------------------------------------------------- table and loading
def test_sdxl_table_and_parameter_count_match_diffusers():
  with torch.device("meta"):
    ref = _torch_vae(vae.VAEConfig())
  ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  expected = vae_map.expected_official_shapes(vae.VAEConfig())
  assert sorted(set(ref_shapes) - set(expected)) == []
  assert sorted(set(expected) - set(ref_shapes)) == []
  assert {k: v for k, v in expected.items() if ref_shapes[k] != v} == {}
  ours = sum(x.size for x in jax.tree.leaves(vae_map.abstract_params(vae.VAEConfig())))
  count = sum(p.numel() for p in ref.parameters())
  print(f"SDXL-VAE parameters: ours {ours:,}, diffusers {count:,}")
  assert ours == count == 83_653_863


def test_every_parameter_has_logical_axis_names():
  boxed = vae.abstract_variables(vae.make_vae(TINY))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim, leaf


def test_round_trips_are_exact(tiny_state, tiny_params):
  back = vae_map.to_state_dict(tiny_params, TINY)
  assert sorted(back) == sorted(tiny_state)
  for k, v in tiny_state.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype),
                        vae_map.abstract_params(TINY))
  again = vae_map.to_params(vae_map.to_state_dict(params, TINY), TINY)
  assert jax.tree.structure(again) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_every_mismatch_is_reported_by_name(tiny_state):
  state = dict(tiny_state)
  missing = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
  unused = "encoder.down_blocks.0.resnets.0.conv_shortcut.weight"
  wrong = "encoder.mid_block.attentions.0.to_q.weight"
  del state[missing]
  state[unused] = np.zeros((32, 32, 1, 1), np.float32)
  state[wrong] = np.zeros((64, 32), np.float32)
  with pytest.raises(convert_hf.CheckpointMismatchError) as info:
    vae_map.to_params(state, TINY, source="vae.safetensors")
  message = str(info.value)
  assert f"missing key: {missing} (expected shape [32, 64, 1, 1])" in message
  assert f"unused key: {unused}" in message
  assert f"shape mismatch: {wrong}: vae.safetensors has [64, 32], model expects [64, 64]" \
      in message


def test_load_vae_reads_the_diffusers_file(tmp_path, tiny_state, tiny_params):
  # A repo directory like stabilityai/sdxl-vae: the diffusers file plus an LDM-named file.
  safetensors.numpy.save_file(tiny_state, str(tmp_path / vae_map.WEIGHTS_NAME))
  safetensors.numpy.save_file({"first_stage_model.x": np.zeros(2, np.float32)},
                              str(tmp_path / "sdxl_vae.safetensors"))
  for path in (tmp_path, tmp_path / vae_map.WEIGHTS_NAME):
    loaded = vae_map.load_vae(str(path), TINY)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(tiny_params)):
      np.testing.assert_array_equal(a, b)
  # Pre-0.14 diffusers attention names load too.
  legacy = {k.replace(".to_q.", ".query.").replace(".to_out.0.", ".proj_attn."): v
            for k, v in tiny_state.items()}
  other = tmp_path / "legacy"
  other.mkdir()
  safetensors.numpy.save_file(legacy, str(other / "vae.safetensors"))
  assert jax.tree.structure(vae_map.load_vae(str(other), TINY)) == \
      jax.tree.structure(tiny_params)
  with pytest.raises(FileNotFoundError):
    vae_map.load_vae(str(tmp_path / "nope"), TINY)


# -------------------------------------------------------------- configs and helpers
def test_configs_select_the_module_and_validate():
  assert isinstance(vae.make_vae(vae.VAEConfig()), vae.AutoencoderKL)
  assert vae.config_from_dict({"block_out_channels": [32, 64]}).downsample_factor == 2
  assert vae.VAEConfig().downsample_factor == 8
  with pytest.raises(ValueError, match="unknown keys for VAEConfig"):
    vae.config_from_dict({"chans": 3})
  with pytest.raises(ValueError, match="norm_num_groups"):
    vae.config_from_dict({"block_out_channels": [30], "norm_num_groups": 8})
  with pytest.raises(ValueError, match="multiples of 2"):
    vae.AutoencoderKL(TINY).init(jax.random.key(0), jnp.zeros((1, 15, 16, 3)))


def test_pixel_space_is_the_identity_without_params():
  config = config_defaults.base_config()
  cfg = model_config.from_config_dict(config.model)
  space = latent_space.from_config(config, cfg)
  assert (space.kind, space.pixel_size, space.latent_size, space.channels) == (
      "pixel", cfg.latent_size, cfg.latent_size, 3)
  assert not space.has_params and space.abstract_params() == {}
  images = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(space.encode({}, images), images)
  np.testing.assert_array_equal(space.decode({}, images), images)
  with pytest.raises(ValueError, match="gen_encoder.in_channels=3"):
    latent_space.pixel_space(model_config.from_config_dict(config_defaults.model_tiny()))


def test_latent_helpers():
  @jax.jit
  def run():
    mean = jnp.full((4, 64, 64, 4), 3.0)
    eps = jax.random.normal(jax.random.key(0), mean.shape)
    sample = vae.posterior_sample(mean, jnp.full_like(mean, np.log(4.0)), eps)
    images = jnp.array([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0, -0.998])
    assert sample.shape == mean.shape and sample.dtype == jnp.float32
    return sample.mean(), sample.std(), image_sampling.to_uint8(images)

  mean, std, pixels = run()
  assert abs(float(mean) - 3.0) < 0.05 and abs(float(std) - 2.0) < 0.05
  np.testing.assert_array_equal(pixels, [0, 0, 128, 191, 255, 255, 0])
  assert pixels.dtype == jnp.uint8
