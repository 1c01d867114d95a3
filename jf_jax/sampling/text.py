"""Image understanding / text decoding: prefill into a KV cache, then a jitted while loop.

Prompts are left-padded (pad positions masked out as keys), so every row's last prompt
token sits in the same column and the generated tokens of all rows share cache slots.
RoPE positions follow HF `generate`: cumsum(mask) - 1 over the prompt (so a padded row
counts from its BOS), then one more per generated token. Decoding is greedy at
temperature 0, otherwise softmax sampling at `temperature` restricted to the top-p
nucleus (HF's warper order: temperature, then top-p). A row stops at its first EOS; the
loop stops when every row has, or after `max_new_tokens`.
"""

import flax
import jax
import jax.numpy as jnp

from jf_jax.models import janusflow
from jf_jax.sampling import common


@flax.struct.dataclass
class DecodeState:
  """Carry of the decoding loop.

  step: number of tokens generated so far (all rows); tokens: [B, max_new] int32 (pad after
  a row's EOS); cache: the LLM KV cache; done: [B] bool (EOS seen); lengths: [B] int32
  tokens generated up to and including EOS; positions: [B] RoPE position of the next token
  to feed; rng: PRNG key (folded with the step for each draw).
  """
  step: jax.Array
  tokens: jax.Array
  cache: dict
  done: jax.Array
  lengths: jax.Array
  positions: jax.Array
  rng: jax.Array


def prompt_positions(mask: jax.Array) -> jax.Array:
  """HF generate's position ids for left padding: cumsum(mask) - 1, pads clipped to 0."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def top_p_filter(logits: jax.Array, top_p) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose probability reaches `top_p`.

  A token is kept when the probability mass of the tokens more likely than it is below
  `top_p` (so the most likely token always stays); the rest get -inf. top_p >= 1 keeps all.
  """
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  num_keep = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)
  threshold = jnp.take_along_axis(sorted_logits, jnp.maximum(num_keep - 1, 0), axis=-1)
  filtered = jnp.where(logits >= threshold, logits, -jnp.inf)
  return jnp.where(top_p >= 1.0, logits, filtered)


def sample_token(logits: jax.Array, rng: jax.Array, temperature, top_p) -> jax.Array:
  """[B, vocab] float32 logits -> [B] int32; greedy where temperature <= 0.

  `rng` is one key (all rows drawn together) or [B] keys, one per row; `temperature` and
  `top_p` are scalars or [B] (per-row settings: rows of different requests share a batch
  without changing each other's draws).
  """
  temperature, top_p = jnp.asarray(temperature), jnp.asarray(top_p)
  if temperature.ndim == 0 and top_p.ndim == 0 and jnp.ndim(rng) == 0:
    def greedy():
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def sample():
      scaled = logits / jnp.maximum(temperature, 1e-6)
      return jax.random.categorical(rng, top_p_filter(scaled, top_p)).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, sample, greedy)
  b = logits.shape[0]
  temperature = jnp.broadcast_to(temperature, (b,))[:, None]
  top_p = jnp.broadcast_to(top_p, (b,))[:, None]
  scaled = top_p_filter(logits / jnp.maximum(temperature, 1e-6), top_p)
  keys = rng if jnp.ndim(rng) == 1 else jax.random.split(rng, b)
  sampled = jax.vmap(jax.random.categorical)(keys, scaled)
  greedy = jnp.argmax(logits, axis=-1)
  return jnp.where(temperature[:, 0] > 0, sampled, greedy).astype(jnp.int32)


def step_keys(rng: jax.Array, step) -> jax.Array:
  """The draw keys of decoding step `step`: fold_in of one key, or of each row's key."""
  if jnp.ndim(rng) == 0:
    return jax.random.fold_in(rng, step)
  return jax.vmap(lambda k: jax.random.fold_in(k, step))(rng)


def _prefill(module: janusflow.JanusFlow, input_ids, attention_mask, images, image_mask,
             cache_len: int):
  """(Module method) Prompt (+ images) into a cache -> (last-position logits, cache)."""
  b, seq = input_ids.shape
  if images is None:
    x = module.embed_tokens(jnp.maximum(input_ids, 0))
  else:
    x = module.embed_understanding(input_ids, images, image_mask)
  cache = common.init_cache(module.cfg, b, cache_len)
  key_valid = jnp.concatenate(
      [attention_mask, jnp.ones((b, cache_len - seq), bool)], axis=1)
  hidden, _, cache = module.llm(x, prompt_positions(attention_mask), key_valid=key_valid,
                                cache=cache, cache_index=0)
  return module.llm_logits(hidden[:, -1:])[:, 0], cache


def _extend(module: janusflow.JanusFlow, token, position, key_valid, cache, cache_index):
  """(Module method) One token per row at `cache_index` -> (logits [B, vocab], cache)."""
  hidden, _, cache = module.llm(module.embed_tokens(token[:, None]), position[:, None],
                                key_valid=key_valid, cache=cache, cache_index=cache_index)
  return module.llm_logits(hidden)[:, 0], cache


def decode(model: janusflow.JanusFlow, params, input_ids, attention_mask, rng, *,
           max_new_tokens: int, eos_id, pad_id, temperature=0.0, top_p=1.0, images=None,
           image_mask=None, limits=None):
  """Generates up to `max_new_tokens` per row (pure; jit it, see `make_decoder`).

  Args:
    model: the JanusFlow module.
    params: its params.
    input_ids: [B, S] int, left-padded prompts (image positions hold placeholder ids).
    attention_mask: [B, S] bool, False on left padding.
    rng: PRNG key, or [B] keys (one per row: a row's draws then depend only on its own
      key); unused when greedy.
    max_new_tokens: static; sizes the cache and the output.
    eos_id: stop token id; pad_id: written after a row's EOS.
    temperature: 0 for greedy; top_p: nucleus mass (1: no filter). Both may be traced,
      scalars or [B] per row.
    images: optional [B, n_images, H, W, 3] SigLIP-normalised images.
    image_mask: [B, S] bool, True at `<begin_of_image>` + placeholder positions.
    limits: optional [B] int32, each row's own token limit (<= max_new_tokens): a row
      stops there as at EOS, so rows of different lengths share one compiled shape.
  Returns:
    (tokens [B, max_new_tokens] int32, lengths [B] int32). Row r's answer is
    tokens[r, :lengths[r]] (ending with EOS if it stopped).
  """
  b, seq = input_ids.shape
  mask = attention_mask.astype(bool)
  cache_len = seq + max(max_new_tokens - 1, 1)
  logits, cache = model.apply({"params": params}, input_ids, mask, images, image_mask,
                              cache_len, method=_prefill)
  key_valid = jnp.concatenate([mask, jnp.ones((b, cache_len - seq), bool)], axis=1)

  def emit(state: DecodeState, logits) -> DecodeState:
    token = sample_token(logits, step_keys(state.rng, state.step), temperature, top_p)
    token = jnp.where(state.done, pad_id, token).astype(jnp.int32)
    lengths = state.lengths + (~state.done).astype(jnp.int32)
    done = state.done | (token == eos_id)
    if limits is not None:
      done = done | (lengths >= limits)
    return state.replace(
        step=state.step + 1,
        tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], state.step,
                                                   axis=1),
        done=done, lengths=lengths)

  state = DecodeState(
      step=jnp.zeros((), jnp.int32), tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
      cache=cache, done=jnp.zeros((b,), bool), lengths=jnp.zeros((b,), jnp.int32),
      positions=jnp.sum(mask, axis=1).astype(jnp.int32), rng=rng)
  state = emit(state, logits)

  def cond(state: DecodeState):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  def body(state: DecodeState) -> DecodeState:
    last = jax.lax.dynamic_index_in_dim(state.tokens, state.step - 1, axis=1,
                                        keepdims=False)
    logits, cache = model.apply({"params": params}, last, state.positions, key_valid,
                                state.cache, seq + state.step - 1, method=_extend)
    return emit(state.replace(cache=cache, positions=state.positions + 1), logits)

  state = jax.lax.while_loop(cond, body, state)
  return state.tokens, state.lengths


def make_decode_fn(model: janusflow.JanusFlow, *, max_new_tokens: int):
  """Pure fn(params, input_ids, attention_mask, rng, eos_id, pad_id, temperature, top_p,
  images=None, image_mask=None, limits=None) -> (tokens, lengths); see `decode`. Under
  `jax.jit` only shapes and `max_new_tokens` compile anew; ids, sampling settings and keys
  are traced."""
  def fn(params, input_ids, attention_mask, rng, eos_id, pad_id, temperature, top_p,
         images=None, image_mask=None, limits=None):
    return decode(model, params, input_ids, attention_mask, rng,
                  max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                  temperature=jnp.asarray(temperature, jnp.float32),
                  top_p=jnp.asarray(top_p, jnp.float32), images=images,
                  image_mask=image_mask, limits=limits)
  return fn


def make_decoder(model: janusflow.JanusFlow, *, max_new_tokens: int):
  """`jax.jit` of `make_decode_fn` (see there for the signature)."""
  return jax.jit(make_decode_fn(model, max_new_tokens=max_new_tokens))
