"""Model FLOPs of one train step, counted analytically (the MFU numerator).

Convention (stated in every report): matmul FLOPs only, 2 per multiply-add, over the
padded static shapes the step really computes; remat recomputation is NOT counted (MFU, not
HFU). A tower costs forward x 3 when its weights train (forward + activation grads + weight
grads), x 2 when it is frozen but gradients flow through it to a trainable tower before it
(the LLM in stage 1), and x 1 when it is frozen behind a stop_gradient (SigLIP in stages
1-2, and the REPA target always).

  LLM, per token: 2 * (matmul params of the decoder layers) + 4 * L * seq * heads * head_dim
    (QK^T and AV over the full padded length, causal masking not subtracted), plus
    2 * embed * vocab for the lm_head on understanding/text rows only.
  SigLIP, per patch: 2 * (its params) + 4 * depth * patches * width.
  Conv towers / aligners / REPA projector: 2 * params per output position (exact for the
    1x1/pointwise layers that dominate them; the depthwise 7x7 is counted per position too).
  SDXL-VAE encoder (latent-space runs, frozen, forward only): every conv kernel counts
    2 * kh * kw * C_in * C_out per output pixel at its level's resolution (P at conv_in,
    P / 2^i in down block i, P / 8 from the mid block on), the mid-block attention
    2 * 4 * C^2 per position plus 4 * T * C (QK^T and AV over its T = (P/8)^2 positions).
"""

from typing import Any

import jax


def _size(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def _trainable(mask_tree) -> bool:
  return any(jax.tree.leaves(mask_tree))


def vae_encode_flops(vae_params: Any, pixel_size: int) -> float:
  """Forward FLOPs of the VAE encoder (+ quant_conv) for one P x P image.

  Args:
    vae_params: (abstract) params of `models/vae.AutoencoderKL` (only the encoder half and
      quant_conv are counted).
    pixel_size: P, the image side.
  """
  total = 0.0
  levels = [k for k in vae_params["encoder"] if k.startswith("down_blocks_")]
  bottom = pixel_size // 2 ** (len(levels) - 1)

  def side(path: tuple[str, ...]) -> int:
    if path[0] == "quant_conv" or path[1] in ("mid_block", "conv_norm_out", "conv_out"):
      return bottom
    if path[1].startswith("down_blocks_"):
      level = int(path[1].rsplit("_", 1)[1]) + (path[2] == "downsamplers_0")
      return pixel_size // 2 ** level
    return pixel_size  # conv_in

  for path, leaf in jax.tree_util.tree_flatten_with_path(
      {k: v for k, v in vae_params.items() if k in ("encoder", "quant_conv")})[0]:
    names = tuple(str(p.key) for p in path)
    if names[-1] != "kernel":
      continue
    positions = side(names) ** 2
    total += 2 * positions * leaf.size  # conv (kh kw C_in C_out) or dense (C_in C_out)
    if names[-2] == "to_q":  # the attention itself, once per attention block
      total += 4 * positions * positions * leaf.shape[-1]
  return total


def train_step_flops(config: Any, cfg: Any, params: Any, mask: Any, vae_params: Any = None,
                     pixel_size: int = 0) -> dict[str, float]:
  """{'total', per-component, 'llm_tokens'} model FLOPs of one global train step.

  Args:
    config: the ConfigDict (batch sizes and sequence lengths).
    cfg: the model config (`models.config.JanusFlowConfig`).
    params / mask: (abstract) params and the trainable mask of `optim.make_optimizer`.
    vae_params / pixel_size: the frozen VAE of a latent-space run and its image side P
      (`train/latents.py`): adds 'vae_encode', the encoder's forward on every gen row.
  """
  b, llm = config.batch, cfg.llm
  lm = params["language_model"]
  n_lm_head = _size(lm["lm_head"])
  n_embed = sum(_size(v) for k, v in lm["model"].items() if "embed" in k)
  n_layers = _size(lm["model"]) - n_embed - sum(
      _size(v) for k, v in lm["model"].items() if k.startswith("norm"))
  attn_width = llm.num_heads * llm.head_dim

  def llm_fwd(rows, seq, with_head):
    per_token = 2 * n_layers + 4 * llm.num_layers * seq * attn_width
    per_token += 2 * n_lm_head if with_head else 0
    return rows * seq * per_token

  ue = cfg.und_encoder
  patches = (ue.image_size // ue.patch_size) ** 2
  siglip = params["vision_und_enc_model"]
  n_siglip = _size(siglip) - sum(_size(v) for k, v in siglip["vision_tower"].items()
                                 if k == "attn_pool")
  siglip_fwd_per_image = patches * (2 * n_siglip + 4 * ue.depth * patches * ue.width)

  gen_tokens = cfg.num_gen_tokens
  gen_seq = b.gen_prompt_len + 1 + gen_tokens
  llm_train = _trainable(mask["language_model"])
  gen_side_train = _trainable(mask["vision_gen_enc_model"])
  siglip_train = _trainable(mask["vision_und_enc_model"])
  llm_mult = 3 if llm_train else (2 if gen_side_train else 1)

  towers = sum(_size(params[k]) for k in (
      "vision_gen_enc_model", "vision_gen_dec_model", "vision_gen_enc_aligner",
      "vision_gen_dec_aligner", "repa_projector"))
  out = {
      "llm": llm_mult * (llm_fwd(b.und_rows, b.und_seq_len, True)
                         + llm_fwd(b.text_rows, b.text_seq_len, True)
                         + llm_fwd(b.gen_rows, gen_seq, False)),
      "siglip_und": (3 if siglip_train else 1) * b.und_rows * siglip_fwd_per_image,
      "siglip_repa_target": b.gen_rows * siglip_fwd_per_image,
      "gen_towers": 3 * b.gen_rows * gen_tokens * 2 * towers,
      "und_aligner": 3 * b.und_rows * patches * 2 * _size(params["vision_und_enc_aligner"]),
  }
  if not config.loss.repa_weight:
    out["siglip_repa_target"] = 0
  if vae_params is not None:
    out["vae_encode"] = b.gen_rows * vae_encode_flops(vae_params, pixel_size)
  out["total"] = float(sum(out.values()))
  out["llm_tokens"] = (b.und_rows * b.und_seq_len + b.text_rows * b.text_seq_len
                       + b.gen_rows * gen_seq)
  return out
