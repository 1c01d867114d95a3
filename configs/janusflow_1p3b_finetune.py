r"""Fine-tune the released JanusFlow-1.3B on your own data (the paper's stage 3, SFT).

Starts from converted official weights and trains every part but the SDXL-VAE, with the
paper's stage-3 hyper-parameters: AdamW (0.9, 0.95), learning rate 2e-5, constant after
1,000 warm-up steps, no weight decay, gradient clip 1.0, 26,000 steps of 256 rows, EMA
0.99, und : gen : text rows 48 : 176 : 32 (the paper's 21 : 70 : 9, rounded so every task
splits over 16 devices). Generation rows are SDXL-VAE latents encoded on the accelerators
inside the train step (`data.gen_space = "sdxl_vae"`), the posterior sample x 0.13025.

  python -m jf_jax.convert --src ~/JanusFlow-1.3B --dst ~/jf_1p3b
  python train.py --config configs/janusflow_1p3b_finetune.py --workdir ~/runs/ft \
      --config.train.init_params_from=$HOME/jf_1p3b --config.data.tokenizer=$HOME/JanusFlow-1.3B \
      --config.vae.path=$HOME/sdxl-vae --config.data.gen_files="('$HOME/my_images',)" \
      --config.data.und_files="('$HOME/llava.json',)" \
      --config.data.text_files="('$HOME/text.txt',)"
  python sample.py --checkpoint ~/runs/ft --prompt "a red fox in snow"   # the run's VAE

Defaults suit TPU (XLA attention, full remat). On a large-memory GPU (bf16) the measured
best flags are `--config.model.llm.attention_impl=cudnn
--config.model.llm.remat_policy=minimal --config.batch.gen_prompt_len=63` (rows of
multiples of 64 tokens; docs/benchmarks.md). Fewer devices: lower the rows keeping the
ratio, or raise `config.train.microbatches` (the VAE then encodes one microbatch at a time).
"""

from jf_jax import config_defaults
from jf_jax.data import templates


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_1p3b()  # bf16 compute, float32 params
  config.tokens = config_defaults.tokens_deepseek()
  config.stage = 3  # everything trains but the VAE (SigLIP included)
  config.batch.update(dict(und_rows=48, text_rows=32, gen_rows=176, und_seq_len=640,
                           text_seq_len=640, gen_prompt_len=64))
  config.optim.update(dict(learning_rate=2e-5, warmup_steps=1000, schedule="constant",
                           total_steps=26_000, weight_decay=0.0, b1=0.9, b2=0.95,
                           grad_clip_norm=1.0))
  config.train.update(dict(num_steps=26_000, ema_decay=0.99, log_every=50,
                           checkpoint_every=1000, keep_checkpoints=3,
                           init_params_from=""))  # the `jf_jax.convert` output directory
  config.data.update(dict(
      source="files",
      tokenizer="",  # the release directory (its tokenizer.json, DeepSeek ids)
      system_prompt=templates.SYSTEM_PROMPT,
      gen_space="sdxl_vae",
      resize_images=True,  # your images come in any size
  ))
  config.vae = config_defaults.vae_defaults()  # set config.vae.path (stabilityai/sdxl-vae)
  return config
