r"""Tiny JanusFlow on the built-in shapes world (tfds, generated on first use), CPU.

  python train.py --config configs/tiny_shapes.py --workdir /tmp/shapes
  python -m jf_jax.shapes --checkpoint /tmp/shapes

Generation runs in PIXEL space: no SDXL-VAE exists offline for a tiny model, so the
"latents" are the 32x32 RGB images themselves in [-1, 1] (`gen_encoder.in_channels=3`,
`latent_size=32`, 4x4 patches -> 64 generation tokens). Stage 3 (everything trainable):
no pretrained SigLIP exists offline, so the tiny understanding encoder trains too.
Sequence lengths fit the longest shapes-world examples (und 86 with 65 image slots, text
49, prompt 23 tokens, edit prompt 82). configs/default.py builds on this file.
"""

from jf_jax import config_defaults
from jf_jax.shapes import config as shapes_config


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_tiny()
  # 32x32 RGB pixels (= data.image_size) as "latents", 4x4 patches on both sides: 64
  # generation tokens = 64 SigLIP patches (REPA aligns them position by position).
  config_defaults.use_pixel_space(config.model, image_size=32, patch_size=4)
  config.stage = 3
  shapes_config.add_world(config)  # the world's data keys, tokenizer and pre-training
  config.data.update(dict(system_prompt="", gen_space="pixel", image_size=32))
  config.batch.update(dict(und_rows=4, text_rows=2, gen_rows=10, und_seq_len=88,
                           text_seq_len=52, gen_prompt_len=24,
                           edit_prompt_len=88))  # edit rows are off; 82 tokens at most
  config.optim.update(dict(learning_rate=1e-3, warmup_steps=20))
  config.train.update(dict(num_steps=300, log_every=20, checkpoint_every=100,
                           keep_checkpoints=2))
  return config
