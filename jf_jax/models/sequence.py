"""Static-shape sequence assembly: placing image embeddings into token sequences.

The official code uses boolean scatter (`embeds[mask] = image_embeds[...]`), which has a
data-dependent shape; here the k-th flagged position takes the k-th image embedding through
a cumsum index, a gather and a `where`, so shapes never depend on the data.
"""

import jax
import jax.numpy as jnp


def merge_embeddings(text_embeds: jax.Array, image_embeds: jax.Array,
                     image_mask: jax.Array) -> jax.Array:
  """Overwrites flagged positions with image embeddings, in order.

  Args:
    text_embeds: [batch, seq, embed] token embeddings.
    image_embeds: [batch, n_img_tokens, embed] image embeddings of the row, in order.
    image_mask: [batch, seq] bool, True where an image embedding goes. Positions beyond the
      available image embeddings are clamped to the last one (callers keep counts equal).
  Returns:
    [batch, seq, embed].
  """
  index = jnp.cumsum(image_mask.astype(jnp.int32), axis=1) - 1
  index = jnp.clip(index, 0, image_embeds.shape[1] - 1)
  gathered = jnp.take_along_axis(image_embeds, index[..., None], axis=1)
  return jnp.where(image_mask[..., None], gathered.astype(text_embeds.dtype), text_embeds)


def default_positions(batch: int, seq: int) -> jax.Array:
  """arange positions [batch, seq], as HF `LlamaModel` uses when given none."""
  return jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))
