"""JanusFlow-1.3B with the released checkpoint's exact sizes.

Parameter count (`jax.eval_shape`): 2,046,367,504 official tensors + the REPA projector.
  python -m jf_jax.convert --src /path/to/JanusFlow-1.3B --dst /tmp/jf_1p3b \
      --config configs/janusflow_1p3b.py

Defaults suit TPU (XLA attention, full remat for 16 GiB v5e chips; docs/scaling.md). On a
large-memory GPU (H200, bf16): `--config.model.llm.attention_impl=cudnn
--config.model.llm.remat_policy=minimal` and row lengths that are multiples of 64 (e.g.
`--config.batch.gen_prompt_len=63` for 576 generation tokens) measured 48.9% MFU at
batch 128 vs 40.1% with XLA attention (docs/benchmarks.md).
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
