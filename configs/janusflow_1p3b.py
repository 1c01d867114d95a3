"""JanusFlow-1.3B with the released checkpoint's exact sizes.

Parameter count (`jax.eval_shape`): 2,046,367,504 official tensors + the REPA projector.
  python -m jf_jax.convert --src /path/to/JanusFlow-1.3B --dst /tmp/jf_1p3b \
      --config configs/janusflow_1p3b.py
"""

from jf_jax import config_defaults
from jf_jax.data import templates


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_1p3b()
  # DeepSeek tokenizer ids (checked against the checkpoint's tokenizer.json when a
  # tokenizer is loaded: set config.data.tokenizer to the checkpoint directory).
  config.tokens = config_defaults.tokens_deepseek()
  config.data.update(dict(tokenizer="", system_prompt=templates.SYSTEM_PROMPT))
  return config
