"""Command-line tools that plan runs without running them (e.g. `python -m jf_jax.tools.aot`)."""
