"""Inference on a checkpoint: `loader.load` (config, params, tokenizer, image decoder),
`inputs` (prompt rows), `runner` (batched images and answers), `grid` (PNG sheets)."""
