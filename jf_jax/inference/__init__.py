"""Inference on a checkpoint: `loader.load` (config, params, tokenizer, image decoder),
`inputs` (prompt rows), `engine` (batched images and answers on a mesh, one per
checkpoint), `grid` (PNG sheets)."""
