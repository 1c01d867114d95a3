"""`python -m jf_jax.bench TASK ...` (see `cli.py`); user errors print one line and exit 2
(`jf_jax/entry_point.py`; --debug or JF_JAX_DEBUG=1 for the traceback)."""

import sys

from jf_jax import entry_point
from jf_jax.bench import cli

if __name__ == "__main__":
  entry_point.run_guarded(lambda: cli.run(sys.argv[1:]), "python -m jf_jax.bench",
                          entry_point.debug_requested(sys.argv[1:]))
