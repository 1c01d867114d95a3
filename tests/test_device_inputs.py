"""uint8 images in the batch, normalised on the devices: the values are the host-side
float32 preprocessing's to float rounding, and the train step applies it."""

import jax
import numpy as np

from jf_jax import config_defaults
from jf_jax.data import device_inputs
from jf_jax.data import layout
from jf_jax.data import pipeline
from jf_jax.data import preprocess
from jf_jax.data import synthetic
from jf_jax.models import config as model_config
from jf_jax.train import loop


def _pixel_config(rows: int = 4):
  """Tiny pixel-space model (32-px images, 3-channel latents) reading in-memory records."""
  config = config_defaults.base_config()
  config.stage = 3
  config_defaults.use_pixel_space(config.model, image_size=32, patch_size=8)
  config.data.update(dict(resize_images=True, shuffle=False, tokenizer="shapes"))
  config.batch.update(dict(und_rows=rows, text_rows=0, gen_rows=rows, und_seq_len=40,
                           text_seq_len=16, gen_prompt_len=24))
  return config, model_config.from_config_dict(config.model)


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
  """Random uint8 images of mixed sizes (the preprocessing pads, resizes and crops)."""
  rng = np.random.default_rng(seed)
  sizes = [(32, 32), (40, 56), (64, 48), (21, 90), (50, 50), (33, 17)]
  return [rng.integers(0, 256, sizes[i % len(sizes)] + (3,), dtype=np.uint8)
          for i in range(count)]


def test_pipeline_ships_uint8_and_device_normalisation_equals_host_float32():
  config, cfg = _pixel_config()
  images = _images(4)
  ident = lambda item, rng: item
  tasks = {"und": ([{"image": im, "turns": [("how many shapes are there?", "one")]}
                    for im in images], ident),
           "gen": ([{"image": im, "caption": "a red circle"} for im in images], ident)}
  source = pipeline.make_source(config, cfg, tasks=tasks)
  batch = next(source)
  source.close()
  layout.check_batch(batch, config.batch, cfg, cfg.latent_size)  # pixel space: P = L
  for key in ("und_images", "gen_pixels"):
    assert batch[key].dtype == np.uint8, key
  # The float32 arrays the host would build: SigLIP inputs, [-1, 1] generation pixels.
  want = {
      "und_images": np.stack([preprocess.und_image(im, 32)[None] for im in images]),
      "gen_pixels": np.stack([preprocess.to_pixel_latent(preprocess.center_crop(im, 32))
                              for im in images]),
  }
  mesh = jax.make_mesh((len(jax.devices()) // 2,), ("data",), devices=jax.devices()[:4])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  placed = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  got = jax.device_get(jax.jit(device_inputs.normalize)(placed))
  for key, value in want.items():
    assert got[key].dtype == np.float32 and got[key].shape == value.shape, key
    # XLA may divide by 255 as a multiply by 1/255: one float32 rounding step at most.
    np.testing.assert_allclose(got[key], value, rtol=0, atol=np.finfo(np.float32).eps,
                               err_msg=key)
  for key in set(batch) - set(want):  # tokens, masks, weights: untouched
    np.testing.assert_array_equal(got[key], batch[key], err_msg=key)


def test_float_keys_pass_through():
  pixels = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  images = np.full((2, 1, 32, 32, 3), 255, np.uint8)
  out = device_inputs.normalize({"gen_pixels": pixels, "und_images": images})
  assert out["gen_pixels"] is pixels
  np.testing.assert_array_equal(out["und_images"], np.ones((2, 1, 32, 32, 3), np.float32))


def test_train_step_normalises_uint8_images():
  """One step on a uint8 batch equals one step on the same batch normalised on the host."""
  config, _ = _pixel_config(rows=2)
  config.batch.text_rows = 2
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  s = loop.setup(config, devices=jax.devices()[:1])
  batch = synthetic.make_batch(config.batch, config.tokens, s.cfg, config.seed, 0,
                               s.space.pixel_size)
  assert batch["gen_pixels"].dtype == np.uint8 and batch["und_images"].dtype == np.uint8
  host_float = {k: np.asarray(v) for k, v in device_inputs.normalize(batch).items()}
  assert host_float["gen_pixels"].dtype == np.float32
  start = jax.device_get(s.state)
  metrics = []
  for b in (batch, host_float):
    state = jax.device_put(start, s.shardings)
    metrics.append(jax.device_get(s.step(state, b)[1]))
  for key in ("loss", "und_loss", "rf_loss", "repa_loss", "grad_norm"):
    np.testing.assert_allclose(metrics[0][key], metrics[1][key], rtol=1e-5, err_msg=key)
  assert metrics[0]["nonfinite"] == 0
