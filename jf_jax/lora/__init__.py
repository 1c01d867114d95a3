"""LoRA / QLoRA fine-tuning and int8 weight-only inference, on Qwix.

  model.py     the Qwix-wrapped JanusFlow (LoRA adapters, optional quantized base)
  params.py    which leaves train (adapters + modules trained in full) and the frozen base
  base.py      loading the frozen base (from `config.train.init_params_from`)
  merge.py     adapters folded into the base kernels (`convert --merge_lora`, inference)
  quantize.py  Qwix post-training quantization (int8 inference, the QLoRA base)
"""
