"""One "keep only BOS" rule: the train step's CFG dropout and the sampler's unconditional
rows build the same rows from the same prompts."""

import jax
import jax.numpy as jnp
import numpy as np

from jf_jax.models import sequence
from jf_jax.sampling import image
from jf_jax.train import step

PAD, BOS = 0, 1
# Left-padded prompts: unpadded, padded by two, padded by all but BOS.
IDS = np.array([[BOS, 7, 8, 9, 10],
                [PAD, PAD, BOS, 11, 12],
                [PAD, PAD, PAD, PAD, BOS]], np.int32)
MASK = IDS != PAD


def test_keep_only_bos_by_hand():
  ids, mask = sequence.keep_only_bos(jnp.asarray(IDS), jnp.asarray(MASK.astype(np.int32)),
                                     PAD)
  want_mask = np.zeros_like(MASK)
  want_mask[0, 0] = want_mask[1, 2] = want_mask[2, 4] = True
  np.testing.assert_array_equal(mask, want_mask)
  np.testing.assert_array_equal(ids, np.where(want_mask, BOS, PAD))
  assert ids.dtype == jnp.int32 and mask.dtype == jnp.bool_


def test_dropout_and_sampler_build_the_same_unconditional_rows():
  cfg_ids, cfg_mask = image.cfg_prompt_rows(jnp.asarray(IDS), jnp.asarray(MASK), PAD)
  uncond_ids, uncond_mask = np.asarray(cfg_ids[3:]), np.asarray(cfg_mask[3:])
  rng = jax.random.key(0)
  ids, mask = step.drop_prompts(rng, jnp.asarray(IDS), jnp.asarray(MASK), 1.0, PAD)
  np.testing.assert_array_equal(ids, uncond_ids)
  np.testing.assert_array_equal(mask, uncond_mask)
  ids, mask = step.drop_prompts(rng, jnp.asarray(IDS), jnp.asarray(MASK), 0.0, PAD)
  np.testing.assert_array_equal(ids, IDS)
  np.testing.assert_array_equal(mask, MASK)
  # At 50%, over many rows: each row is either its prompt or the sampler's row, both occur.
  many_ids, many_mask = np.tile(IDS, (20, 1)), np.tile(MASK, (20, 1))
  ids, mask = step.drop_prompts(rng, jnp.asarray(many_ids), jnp.asarray(many_mask), 0.5, PAD)
  dropped = np.all(np.asarray(ids) == np.tile(uncond_ids, (20, 1)), axis=1)
  kept = np.all(np.asarray(ids) == many_ids, axis=1)
  assert np.all(dropped | kept)
  # Row 2 holds only BOS, so dropping it changes nothing: count the others only.
  changeable = np.arange(len(many_ids)) % 3 != 2
  assert 0 < (dropped & changeable).sum() and 0 < (kept & changeable).sum()
  np.testing.assert_array_equal(np.asarray(mask)[dropped], np.tile(uncond_mask, (20, 1))[dropped])
  np.testing.assert_array_equal(np.asarray(mask)[kept & ~dropped], many_mask[kept & ~dropped])
