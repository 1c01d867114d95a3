r"""JanusFlow-1.3B with the released checkpoint's exact sizes and the paper's stage-2 batch.

Parameter count (`jax.eval_shape`): 2,046,367,504 official tensors + the REPA projector.
  python -m jf_jax.convert --src /path/to/JanusFlow-1.3B --dst /tmp/jf_1p3b \
      --config configs/janusflow_1p3b.py
  python -m jf_jax.tools.aot --config configs/janusflow_1p3b.py --topology v5p:4x4x4

Defaults suit TPU (XLA attention, full remat for 16 GiB v5e chips; docs/scaling.md). On a
large-memory GPU (H200, bf16): `--config.model.llm.attention_impl=cudnn
--config.model.llm.remat_policy=minimal` (measured figures: docs/benchmarks.md).
Stages 1 and 3 use other batches and mixtures: pass `--config.stage` and the
`--config.batch.*` keys (docs/scaling.md lists them per stage).
"""

from jf_jax import config_defaults
from jf_jax.data import templates


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_1p3b()
  # DeepSeek tokenizer ids (checked against the checkpoint's tokenizer.json when a
  # tokenizer is loaded: set config.data.tokenizer to the checkpoint directory).
  config.tokens = config_defaults.tokens_deepseek()
  config.data.update(dict(tokenizer="", system_prompt=templates.SYSTEM_PROMPT,
                          gen_space="sdxl_vae"))
  # The SDXL-VAE encodes the generation images inside the step: set config.vae.path
  # (stabilityai/sdxl-vae, diffusers layout) to train; plans and AOT compiles need none.
  config.vae = config_defaults.vae_defaults()
  # Stage 2 (unified pre-training; base_config's learning rate, warmup and 390,000 steps).
  # The paper's global batch of 512 rows mixes und:gen:text 30:50:20 for the first 10,000
  # steps, then 14:80:6. Rows per task are rounded to multiples of 64, so that they split
  # over the 64 batch shards of a v5p:4x4x4 slice (pure FSDP): 128/128/256 und/text/gen,
  # then 64/64/384 (6% text would round to no text rows at all).
  config.stage = 2
  config.batch.update(dict(und_rows=128, text_rows=128, gen_rows=256))
  config.batch.switch.update(dict(step=10_000, und_rows=64, text_rows=64, gen_rows=384))
  # Row lengths for 384 px images (576 image tokens), multiples of 64 (faster attention
  # tiles). An understanding row holds BOS, the system prompt (~40 tokens), the 577 image
  # embeddings, <end_of_image> and ~150 tokens of conversation (longer ones are skipped
  # as bad examples: raise und_seq_len for long captions); a generation row is a
  # 63-token prompt, the time embedding and 576 latent tokens = 640.
  config.batch.update(dict(und_seq_len=768, text_seq_len=640, gen_prompt_len=63))
  return config
