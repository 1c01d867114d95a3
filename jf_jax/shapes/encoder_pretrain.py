"""Supervised pre-training of a tiny understanding encoder on the shapes world.

JanusFlow's SigLIP arrives pretrained and stays frozen while the rest trains (the
paper's stages 1-2; `optim.STAGE_PRESETS`), and REPA pulls the generation features towards it. No
pretrained tiny SigLIP exists offline, so a tiny run can make one first: `pretrain`
trains the understanding tower alone to say which of the world's 15 objects (colour x
shape) an image of the TRAIN split holds, then `initialise` writes it into a fresh train
state (optimizer reset), ready for a stage that keeps it frozen.

The head is a per-patch linear classifier with a max over patches (a multiple-instance
readout): each object has to be recognisable from the patches that show it, which carries
over to the held-out object pairs of the test split. A single attention-pooled vector per
image fits the training scenes too but learns pair-level shortcuts instead: with the
default run's tower, 2,000 steps, it gets the object set of 0.10 of the test images
exactly right against 0.78 for the per-patch readout, 0.88 and 0.96 of training images
(`jf_jax/shapes/lab/encoder_probe.py`, docs/experiments.md).

The presence objective is translation-invariant (a max over patches). The head is
pre-training only: `pretrain` returns the tower's params alone. (A per-patch position head
was tried and removed: the tokens then named their column, but the tiny LLM still
answered position questions at chance; docs/experiments.md.)

Config: `config.encoder_pretrain` (steps = 0 turns it off); only `data.source = "shapes"`
has the object labels it needs. train.py hands `initialise` to `loop.train`, which calls
it for a fresh run.
"""

import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jf_jax.data import preprocess
from jf_jax.shapes import scene as shapes_scene
from jf_jax.shapes import world as shapes_world
from jf_jax.models import config as model_config
from jf_jax.models import siglip
from jf_jax.train import state as state_lib

ENCODER = "vision_und_enc_model"  # the understanding tower's subtree in JanusFlow params
NUM_OBJECTS = len(shapes_scene.OBJECTS)


READOUTS = ("max", "pool")


class PresenceModel(nn.Module):
  """The understanding tower + object presence logits.

  readout "max": per-patch logits, max over patches (the default); "pool": logits of the
  tower's attention-pooled vector (`attn_pool`, the MAP head), for comparison.
  """
  cfg: model_config.SigLIPConfig
  readout: str = "max"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """[batch, H, W, 3] SigLIP-normalised -> [batch, NUM_OBJECTS] presence logits."""
    if self.readout not in READOUTS:
      raise ValueError(f"config.encoder_pretrain.readout must be one of {READOUTS}, got "
                       f"{self.readout!r}")
    encoder = siglip.UnderstandingEncoder(self.cfg, name=ENCODER)
    head = nn.Dense(NUM_OBJECTS, name="head")
    if self.readout == "pool":
      if not self.cfg.attn_pool:
        raise ValueError("readout 'pool' needs model.und_encoder.attn_pool=True")
      _, pooled = encoder(images, pool=True)
      return head(pooled)
    return head(encoder(images)).max(axis=1)


def presence_labels(example: dict) -> np.ndarray:
  """[NUM_OBJECTS] float32 multi-hot of the (colour, shape) objects of a stored example."""
  labels = np.zeros(NUM_OBJECTS, np.float32)
  for obj in shapes_world.scene_of(example):
    labels[shapes_scene.OBJECTS.index((obj.color, obj.shape))] = 1.0
  return labels


def _batch(source, indices, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  examples = [source[int(i)] for i in indices]
  images = np.stack([preprocess.und_image(ex["image"], image_size) for ex in examples])
  return images, np.stack([presence_labels(ex) for ex in examples])


def _exact_set_accuracy(predict, params, source, image_size: int, limit: int = 1000):
  """Fraction of examples whose predicted object set is exactly right."""
  indices = np.arange(min(limit, len(source)))
  correct = 0
  for chunk in np.array_split(indices, max(1, len(indices) // 250)):
    images, labels = _batch(source, chunk, image_size)
    correct += int(np.all(np.asarray(predict(params, images)) == (labels > 0), -1).sum())
  return correct / len(indices)


def pretrain(config: Any, cfg: model_config.JanusFlowConfig,
             eval_splits: tuple[str, ...] = ("validation",)) -> tuple[dict, dict]:
  """Trains the understanding tower on object presence.

  Returns:
    (the tower's params subtree, {"first_loss", "last_loss", "exact_set/<split>"}): the
    losses are the presence losses of the first and last step; the exact-set
    accuracy is the fraction of a split's first 1,000 images whose predicted
    object set is exactly right, for each of `eval_splits`.
  """
  pcfg = config.encoder_pretrain
  if config.data.source != "shapes":
    raise ValueError("config.encoder_pretrain.steps > 0 needs the shapes world's object "
                     f"labels (config.data.source='shapes'), got {config.data.source!r}")
  splits = shapes_world.load(config.data.data_dir, **shapes_world.config_kwargs(config.data))
  train = splits["train"]
  size = cfg.und_encoder.image_size
  model = PresenceModel(cfg.und_encoder, pcfg.get("readout", "max"))
  rng = np.random.default_rng([config.seed, 11])
  params = nn.unbox(model.init(jax.random.key(config.seed),
                              _batch(train, [0], size)[0])["params"])
  warmup = min(pcfg.warmup_steps, pcfg.steps // 10)  # short smoke runs keep a decay phase
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(
      0.0, pcfg.learning_rate, warmup, pcfg.steps, pcfg.learning_rate * 0.01),
      weight_decay=pcfg.weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      presence = model.apply({"params": p}, images)
      losses = dict(presence=optax.sigmoid_binary_cross_entropy(presence, labels).mean())
      return losses["presence"], losses
    (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses

  predict = jax.jit(lambda p, x: model.apply({"params": p}, x) > 0)
  start = time.time()
  print(f"pre-training the understanding encoder on object presence: {pcfg.steps} steps "
        f"of {pcfg.batch_size} training images", flush=True)
  metrics = {}
  for i in range(1, pcfg.steps + 1):
    images, labels = _batch(train, rng.integers(0, len(train), pcfg.batch_size), size)
    params, opt_state, losses = step(params, opt_state, images, labels)
    for name, loss in losses.items():
      prefix = "" if name == "presence" else f"{name}_"
      if i == 1:
        metrics[f"first_{prefix}loss"] = float(loss)
      if i == pcfg.steps:
        metrics[f"last_{prefix}loss"] = float(loss)
    if i % pcfg.log_every == 0 or i == pcfg.steps:
      shown = " | ".join(f"{name} loss {float(loss):.4f}" for name, loss in losses.items())
      print(f"  encoder step {i}/{pcfg.steps} | {shown} | {time.time() - start:.0f} s",
            flush=True)
  for split in eval_splits:
    metrics[f"exact_set/{split}"] = _exact_set_accuracy(predict, params, splits[split], size)
  accuracies = ", ".join(f"{k[10:]} {v:.3f}" for k, v in metrics.items() if "/" in k)
  print(f"encoder pre-trained in {time.time() - start:.0f} s" + (
      f"; images with exactly the right objects: {accuracies}" if accuracies else ""),
        flush=True)
  return params[ENCODER], metrics


def initialise(setup: Any, config: Any) -> Any:
  """A fresh train state whose understanding tower is `pretrain`ed (optimizer reset); the
  `config.init` plug-in of the shapes configs (`shapes/config.py`). `setup.state`
  unchanged when `config.encoder_pretrain.steps` is 0."""
  if config.encoder_pretrain.steps <= 0:
    return setup.state
  encoder = jax.device_get(pretrain(config, setup.cfg)[0])  # host arrays: placed below
  # The model's params stay where they are (with several processes they are not all
  # addressable here); every process pre-trains the same tower (same seed and data), so
  # the host arrays agree across processes.
  params = setup.state.params
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  if shapes(params[ENCODER]) != shapes(encoder):
    raise ValueError(f"pre-trained encoder params do not match the model's {ENCODER} "
                     f"subtree: {shapes(encoder)} vs {shapes(params[ENCODER])}")
  params = {**params, ENCODER: encoder}
  return state_lib.with_params(setup.state, params, setup.tx, setup.shardings)
