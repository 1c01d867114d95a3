"""`python -m jf_jax.bench TASK ...` (see `cli.py`)."""

import sys

from jf_jax.bench import cli

if __name__ == "__main__":
  cli.run(sys.argv[1:])
