"""Shapes-world evaluation: detector, scores, and `python -m jf_jax.eval --checkpoint DIR`."""
