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


def keep_only_bos(ids: jax.Array, mask: jax.Array, pad_id: int
                  ) -> tuple[jax.Array, jax.Array]:
  """The unconditional version of left-padded prompt rows, as the official sampler builds it.

  Only BOS (each row's first valid position) stays: every other position becomes `pad_id`
  with mask False. The train step's classifier-free-guidance dropout and the sampler's
  unconditional rows both use this, so the model learns exactly the rows it is guided by.

  Args:
    ids: [batch, prompt_len] int, BOS + prompt tokens, left-padded.
    mask: [batch, prompt_len] bool (or 0/1), False on the left padding.
    pad_id: the tokenizer's pad id.
  Returns:
    (ids [batch, prompt_len] of ids' dtype, mask [batch, prompt_len] bool).
  """
  mask = mask.astype(bool)
  is_bos = mask & (jnp.cumsum(mask, axis=1) == 1)
  return jnp.where(is_bos, ids, pad_id).astype(ids.dtype), is_bos


def edit_condition_rows(ids: jax.Array, mask: jax.Array, image_mask: jax.Array,
                        keep_image: jax.Array, keep_text: jax.Array, pad_id: int,
                        eoi_id: int) -> tuple[jax.Array, jax.Array]:
  """Edit prompt rows with the source image and/or the instruction dropped, as both the
  train step's two-condition dropout and the sampler's guidance rows build them.

  The image block is <begin_of_image>, the placeholders (`image_mask`) and
  <end_of_image>; the text is every other valid position but BOS. A dropped part becomes
  `pad_id` with mask False (its positions keep their index: positions stay an arange, as
  for `keep_only_bos`); BOS always stays, so with both dropped a row is
  `keep_only_bos` of itself, the caption rows' unconditional row.

  Args:
    ids, mask, image_mask: [batch, prompt_len] left-padded edit rows (`packing.pack_edit`).
    keep_image, keep_text: [batch] bool (or scalars): which conditions each row keeps.
    pad_id, eoi_id: the tokenizer's pad and <end_of_image> ids.
  Returns:
    (ids [batch, prompt_len] of ids' dtype, mask [batch, prompt_len] bool); `image_mask`
    is unchanged (a dropped image's embeddings are merged but masked out).
  """
  mask = mask.astype(bool)
  is_bos = mask & (jnp.cumsum(mask, axis=1) == 1)
  image = mask & (image_mask.astype(bool) | (ids == eoi_id))
  text = mask & ~is_bos & ~image
  keep_image = jnp.broadcast_to(jnp.asarray(keep_image, bool), ids.shape[:1])[:, None]
  keep_text = jnp.broadcast_to(jnp.asarray(keep_text, bool), ids.shape[:1])[:, None]
  keep = is_bos | (image & keep_image) | (text & keep_text)
  return jnp.where(keep, ids, pad_id).astype(ids.dtype), keep
