r"""Tiny JanusFlow (every component, 451,120 parameters) on built-in synthetic data, CPU.

  python train.py --config configs/tiny.py --workdir /tmp/tiny --config.train.num_steps=50

The quickest end-to-end run (tests use it); `python train.py` without --config runs
configs/default.py instead. Stage 3 (everything trainable): no pretrained SigLIP exists
offline, so the tiny understanding encoder trains too.
"""

from jf_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_tiny()
  config.stage = 3
  config.optim.update(dict(learning_rate=1e-3, warmup_steps=20))
  config.train.update(dict(num_steps=300, log_every=20, checkpoint_every=100,
                           keep_checkpoints=2))
  return config
