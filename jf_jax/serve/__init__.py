"""`python -m jf_jax.serve`: an OpenAI-compatible HTTP server on the inference engine.

`config` (settings and limits), `schemas` (request bodies), `errors` (OpenAI-style error
bodies), `media` (data: URLs and PNG encoding), `batcher` (the queue that merges requests
into device calls), `metrics` (Prometheus), `handlers` (request -> rows -> response),
`app` (FastAPI routes, the demo page in static/), `__main__` (the command line).
"""
