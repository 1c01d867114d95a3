r"""LoRA (or QLoRA) fine-tune of the released JanusFlow-1.3B on your data, on one chip.

The fine-tune recipe (`janusflow_1p3b_finetune.py`: stage 3 from the converted release,
your files, SDXL-VAE latents encoded in the step) with rank-16 Qwix adapters on the LLM's
attention and MLP projections instead of training its weights; the aligners and the
generation encoder/decoder still train in full (as in every stage of the release), SigLIP
and the rest of the LLM stay frozen. The frozen base is read from
`config.train.init_params_from` in bfloat16 (the release's own dtype, so exactly) and is
not part of the run's checkpoints. `--config.lora.base_quant=int8` (or nf4) quantizes it
(QLoRA). Learning rate 2e-4 (LoRA's usual 10x the full fine-tune's). One chip's batch:
4 rows (und : text : gen = 1 : 1 : 2), mesh 1x1x1; docs/benchmarks.md has the largest that
fits a 16 GiB v5e.

  python train.py --config configs/janusflow_1p3b_lora.py --workdir ~/runs/lora \
      --config.train.init_params_from=$HOME/jf_1p3b --config.data.tokenizer=$HOME/JanusFlow-1.3B \
      --config.vae.path=$HOME/sdxl-vae --config.data.gen_files="('$HOME/my_images',)" \
      --config.data.und_files="('$HOME/llava.json',)" --config.data.text_files="('$HOME/text.txt',)"
  python sample.py --checkpoint ~/runs/lora --prompt "a red fox in snow"   # merged at load
  python -m jf_jax.convert --merge_lora ~/runs/lora --dst ~/jf_1p3b_merged [--reverse]
"""

from jf_jax import config_defaults


def get_config():
  config = config_defaults.sibling_config(__file__, "janusflow_1p3b_finetune")
  config.lora.update(dict(rank=16, alpha=32.0, base_quant="", base_dtype="bfloat16"))
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.batch.update(dict(und_rows=1, text_rows=1, gen_rows=2))
  config.optim.update(dict(learning_rate=2e-4, warmup_steps=100))
  config.train.update(dict(ema_decay=0.0))  # an EMA of the adapters would add little
  return config
