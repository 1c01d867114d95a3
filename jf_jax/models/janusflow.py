"""The composite JanusFlow model: one LLM that understands and generates images.

Submodule names are the official checkpoint's top-level names. Two entry points:
  * `understand`: token ids + images + image-token positions -> logits (+ hidden states);
  * `generate_velocity`: prompt ids (+ mask) + z_t + t in [0, 1] -> velocity, with the
    official sampler's layout [prompt, t_emb, latent tokens].
Smaller methods (`encode_und_images`, `encode_gen_inputs`, `decode_velocity`, `llm`) are
the pieces samplers and the train step compose.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jf_jax.models import gen_decoder
from jf_jax.models import gen_encoder
from jf_jax.models import layers
from jf_jax.models import llama
from jf_jax.models import repa
from jf_jax.models import sequence
from jf_jax.models import siglip
from jf_jax.models.config import JanusFlowConfig

Dtype = Any
TIME_SCALE = 1000.0  # the official model embeds 1000 * t


class JanusFlow(nn.Module):
  """`MultiModalityCausalLM` plus the training-only REPA projector."""
  cfg: JanusFlowConfig

  def setup(self):
    cfg = self.cfg
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    embed = cfg.llm.embed_dim
    gen_width = cfg.gen_encoder.channels
    self.language_model = llama.LlamaForCausalLM(cfg.llm, **kw)
    self.vision_und_enc_model = siglip.UnderstandingEncoder(cfg.und_encoder, **kw)
    self.vision_und_enc_aligner = layers.dense(embed, ("vit_embed", "embed"), **kw)
    self.beg_of_und_embed = self.param(
        "beg_of_und_embed", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                         (None, "embed")),
        (1, embed), cfg.param_dtype)
    self.vision_gen_enc_model = gen_encoder.ShallowUViTEncoder(cfg.gen_encoder, embed, **kw)
    self.vision_gen_enc_aligner = layers.dense(embed, ("gen_embed", "embed"), **kw)
    self.vision_gen_dec_model = gen_decoder.ShallowUViTDecoder(cfg.gen_decoder, **kw)
    self.vision_gen_dec_aligner_norm = layers.RMSNorm(cfg.llm.rms_norm_eps, axis_name="embed",
                                                      **kw)
    self.vision_gen_dec_aligner = layers.dense(gen_width, ("embed", "gen_embed"), **kw)
    self.repa_projector = repa.RepaProjector(cfg.repa.hidden_dim, cfg.und_encoder.width,
                                             cfg.repa.num_layers, **kw)

  # ---------------------------------------------------------------- understanding pieces
  def und_features(self, images: jax.Array) -> jax.Array:
    """SigLIP features [batch, H, W, 3] -> [batch, num_patches, und_width] (REPA target)."""
    return self.vision_und_enc_model(images)

  def encode_und_images(self, images: jax.Array) -> jax.Array:
    """Images [batch, n_images, H, W, 3] -> [batch, n_images * (1 + patches), embed].

    Each image becomes [beg_of_und_embed, aligner(SigLIP(image))], the 577 vectors that
    overwrite `<begin_of_image>` and the 576 `<image_placeholder>` tokens.
    """
    b, n = images.shape[:2]
    feats = self.und_features(images.reshape((b * n,) + images.shape[2:]))
    tokens = self.vision_und_enc_aligner(feats)
    boi = jnp.broadcast_to(jnp.asarray(self.beg_of_und_embed, tokens.dtype)[None],
                           (b * n, 1, tokens.shape[-1]))
    tokens = jnp.concatenate([boi, tokens], axis=1)
    return tokens.reshape(b, n * tokens.shape[1], tokens.shape[-1])

  def embed_understanding(self, input_ids, images, image_mask):
    """Token embeddings with image embeddings merged in: [batch, seq, embed]."""
    text = self.language_model.embed(jnp.maximum(input_ids, 0))
    return sequence.merge_embeddings(text, self.encode_und_images(images), image_mask)

  def understand(self, input_ids, images, image_mask, attention_mask=None, positions=None,
                 capture_layer=None):
    """Understanding forward pass.

    Args:
      input_ids: [batch, seq] int.
      images: [batch, n_images, H, W, 3] SigLIP-normalised.
      image_mask: [batch, seq] bool, True at `<begin_of_image>` and placeholder positions
        (n_images * (1 + patches) per row).
      attention_mask: [batch, seq] bool key-padding mask (None: all valid).
      positions: [batch, seq] int (None: arange).
      capture_layer: optional LLM layer whose hidden states to return too.
    Returns:
      (logits [batch, seq, vocab] float32, hidden [batch, seq, embed], captured or None).
    """
    x = self.embed_understanding(input_ids, images, image_mask)
    if positions is None:
      positions = sequence.default_positions(*input_ids.shape)
    hidden, captured, _ = self.language_model(x, positions, key_valid=attention_mask,
                                              capture_layer=capture_layer)
    return self.language_model.logits(hidden), hidden, captured

  def text_logits(self, input_ids, attention_mask=None, positions=None):
    """Text-only forward: [batch, seq] -> logits [batch, seq, vocab] float32."""
    if positions is None:
      positions = sequence.default_positions(*input_ids.shape)
    hidden, _, _ = self.language_model(self.language_model.embed(input_ids), positions,
                                       key_valid=attention_mask)
    return self.language_model.logits(hidden)

  # ------------------------------------------------------------------- generation pieces
  def encode_gen_inputs(self, z_t: jax.Array, t: jax.Array):
    """Noisy latents [batch, h, w, c] and t [batch] in [0, 1] -> LLM inputs.

    Returns:
      (tokens [batch, 1 + (h/p)*(w/p), embed] = [t_emb, latent tokens], skip features
      [batch, h/p, w/p, gen_width], t_emb [batch, embed]).
    """
    feats, t_emb = self.vision_gen_enc_model(z_t, TIME_SCALE * t)
    b, hp, wp, c = feats.shape
    tokens = self.vision_gen_enc_aligner(feats.reshape(b, hp * wp, c))  # raster order
    tokens = jnp.concatenate([t_emb[:, None, :].astype(tokens.dtype), tokens], axis=1)
    return tokens, feats, t_emb

  def decode_velocity(self, latent_hidden, skip, t_emb, z_t, t):
    """LLM outputs at the latent positions [batch, n, embed] -> velocity [batch, h, w, c].

    z_t [batch, h, w, c] and t [batch] turn a data prediction into a velocity
    (`cfg.gen_decoder.prediction`); a velocity prediction does not use them.
    """
    x = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(latent_hidden))
    x = x.reshape(skip.shape[:3] + (x.shape[-1],))
    out = self.vision_gen_dec_model(x, skip, t_emb)
    dec = self.cfg.gen_decoder
    if dec.prediction == "velocity":
      return out
    # x-prediction: the straight path to the predicted data from z_t has velocity
    # (x - z_t) / (1 - t); the floor keeps it finite at t = 1.
    one_minus_t = jnp.maximum(1.0 - t.astype(jnp.float32), dec.min_one_minus_t)
    v = (out.astype(jnp.float32) - z_t.astype(jnp.float32)) / one_minus_t[:, None, None, None]
    return v.astype(out.dtype)

  def generate_velocity(self, prompt_ids, z_t, t, prompt_mask=None, capture_layer=None):
    """Velocity of the rectified flow at (z_t, t) given a prompt.

    Args:
      prompt_ids: [batch, prompt_len] int: BOS + prompt tokens, without the generation tag
        (t_emb takes its slot). CFG rows keep BOS and mask the rest (see `prompt_mask`).
      z_t: [batch, h, w, c] noisy latents (t=0 noise, t=1 data).
      t: [batch] float in [0, 1].
      prompt_mask: [batch, prompt_len] bool key mask (None: all valid).
      capture_layer: optional LLM layer to return at the latent positions (REPA).
    Returns:
      velocity [batch, h, w, c], and with `capture_layer` also the captured hidden states
      [batch, n_latent_tokens, embed].
    """
    return self._velocity_after(self.language_model.embed(prompt_ids), z_t, t, prompt_mask,
                                capture_layer)

  def edit_velocity(self, prompt_ids, images, image_mask, z_t, t, prompt_mask=None,
                    capture_layer=None):
    """Velocity given an edit prompt: the source image's understanding tokens (SigLIP +
    aligner, merged where `image_mask` says, as `understand` does) and the instruction.

    Args:
      prompt_ids: [batch, prompt_len] int, left-padded edit rows (`packing.pack_edit`).
      images: [batch, 1, H, W, 3] SigLIP-normalised source images.
      image_mask: [batch, prompt_len] bool, True at <begin_of_image> and the placeholders.
      z_t, t, prompt_mask, capture_layer: as `generate_velocity`.
    Returns:
      as `generate_velocity`.
    """
    prefix = self.embed_understanding(prompt_ids, images, image_mask)
    return self._velocity_after(prefix, z_t, t, prompt_mask, capture_layer)

  def _velocity_after(self, prefix, z_t, t, prompt_mask, capture_layer):
    """`generate_velocity` from prompt embeddings [batch, prompt_len, embed]."""
    tokens, skip, t_emb = self.encode_gen_inputs(z_t, t)
    x = jnp.concatenate([prefix, tokens.astype(prefix.dtype)], axis=1)
    b, seq = x.shape[:2]
    key_valid = None
    if prompt_mask is not None:
      key_valid = jnp.concatenate(
          [prompt_mask.astype(bool), jnp.ones((b, tokens.shape[1]), bool)], axis=1)
    hidden, captured, _ = self.language_model(
        x, sequence.default_positions(b, seq), key_valid=key_valid,
        capture_layer=capture_layer)
    n = tokens.shape[1] - 1
    velocity = self.decode_velocity(hidden[:, -n:], skip, t_emb, z_t, t)
    if capture_layer is None:
      return velocity
    return velocity, captured[:, -n:]

  def project_repa(self, hidden: jax.Array) -> jax.Array:
    """REPA projector: [batch, n, embed] -> [batch, n, und_width]."""
    return self.repa_projector(hidden)

  def llm(self, x, positions, **kwargs):
    """Raw LLM call over embeddings (see `LlamaModel.__call__`)."""
    return self.language_model(x, positions, **kwargs)

  def llm_logits(self, hidden):
    return self.language_model.logits(hidden)

  def embed_tokens(self, ids):
    return self.language_model.embed(ids)

  def __call__(self, input_ids, images, image_mask, prompt_ids, z_t, t):
    """Touches every submodule once (used by `init`); returns (logits, velocity, repa)."""
    logits, _, _ = self.understand(input_ids, images, image_mask)
    velocity, captured = self.generate_velocity(prompt_ids, z_t, t,
                                                capture_layer=self.cfg.repa.layer)
    return logits, velocity, self.project_repa(captured)


def dummy_inputs(cfg: JanusFlowConfig, batch: int = 1, prompt_len: int = 4):
  """Minimal inputs that touch every submodule, for `init` and `jax.eval_shape`."""
  und = cfg.und_encoder
  seq = cfg.num_und_tokens + 2
  image_mask = jnp.zeros((batch, seq), bool).at[:, 1:1 + cfg.num_und_tokens].set(True)
  return dict(
      input_ids=jnp.zeros((batch, seq), jnp.int32),
      images=jnp.zeros((batch, 1, und.image_size, und.image_size, 3), jnp.float32),
      image_mask=image_mask,
      prompt_ids=jnp.zeros((batch, prompt_len), jnp.int32),
      z_t=jnp.zeros((batch, cfg.latent_size, cfg.latent_size, cfg.gen_encoder.in_channels),
                    jnp.float32),
      t=jnp.zeros((batch,), jnp.float32))


def init_params(model: JanusFlow, rng: jax.Array):
  """Initialises all variables (boxed with logical axis metadata)."""
  return model.init(rng, **dummy_inputs(model.cfg))


def abstract_params(model: JanusFlow):
  """Shapes/dtypes of all variables without allocating them (`jax.eval_shape`)."""
  return jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
