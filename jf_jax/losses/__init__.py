"""Training objectives of JanusFlow (the paper's three losses).

Every loss returns `(sum, weight)` in float32: the step divides once, after summing over
micro-batches, so gradient accumulation is exactly equivalent to one large batch.
"""

from jf_jax.losses.flow import flow_loss
from jf_jax.losses.flow import interpolate
from jf_jax.losses.flow import sample_t
from jf_jax.losses.flow import velocity_target
from jf_jax.losses.next_token import next_token_loss
from jf_jax.losses.repa import repa_loss

__all__ = [
    "flow_loss", "interpolate", "next_token_loss", "repa_loss", "sample_t",
    "velocity_target",
]
