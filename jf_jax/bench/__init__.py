"""Benchmark sample sets from one command: `python -m jf_jax.bench TASK ...` (`cli.py`).

Tasks write the files the official scorers read (GenEval, DPG-Bench, MJHQ-30K FID,
LLaVA's VQA scripts): `geneval.py`, `dpg.py`, `mjhq.py`, `vqa.py`. Shared pieces:
`devices.py` (the local-device mesh and this process's share of the work), `images.py`
(per-image noise keys, batching, resume), `record.py` (OUT/run.json), `inputs_io.py`
(input files, bad-line messages). See docs/evaluation.md.
"""
