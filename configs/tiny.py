r"""Tiny JanusFlow (every component) in pixel space on built-in synthetic data, CPU.

  python train.py --config configs/tiny.py --workdir /tmp/tiny --config.train.num_steps=50

The quickest end-to-end run (tests use it); `python train.py` without --config runs
configs/default.py instead. Stage 3 (everything trainable): no pretrained SigLIP exists
offline, so the tiny understanding encoder trains too.
"""

from jf_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_tiny()
  # Pixel space (no VAE exists offline for a tiny model): 32 px RGB images as latents, 8 px
  # patches on both towers (16 generation tokens = 16 SigLIP patches).
  config_defaults.use_pixel_space(config.model, image_size=32, patch_size=8)
  config.stage = 3
  config.optim.update(dict(learning_rate=1e-3, warmup_steps=20))
  config.train.update(dict(num_steps=300, log_every=20, checkpoint_every=100,
                           keep_checkpoints=2))
  return config
