r"""Position probes: does an understanding tower's output say which object is in which column?

Fits linear probes (`jf_jax/shapes/probe.py`) on frozen features of training images and
scores them on the held-out test images, for each tower asked for:

  pixels      the raw 4x4 pixel patches (a baseline: colours and places, no shapes)
  random      the tower at initialisation (what position embeddings alone carry)
  pretrained  the tower after the config's object-presence pre-training (as train.py
              makes it for the default run; config.encoder_pretrain)
  checkpoint  the frozen tower of a training run (--checkpoint DIR, its latest step)

  python -m jf_jax.shapes.lab.position_probe                          # pixels, random, pretrained
  python -m jf_jax.shapes.lab.position_probe --towers=checkpoint --checkpoint=/tmp/run
  python -m jf_jax.shapes.lab.position_probe --config.encoder_pretrain.steps=3000 --num_train=4000
"""

import json
import os
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np
from ml_collections import config_flags


# pylint: disable=wrong-import-position
from jf_jax.inference import loader
from jf_jax.models import config as model_config
from jf_jax.models import siglip
from jf_jax.shapes import encoder_pretrain
from jf_jax.shapes import probe
# pylint: enable=wrong-import-position

TOWERS = ("pixels", "random", "pretrained", "checkpoint")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "configs",
                           "default.py"), "Config whose tower and shapes world are probed.")
_TOWERS = flags.DEFINE_list("towers", ["pixels", "random", "pretrained"],
                            f"Towers to probe, of {TOWERS}.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "train.py --workdir (tower 'checkpoint').")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 8000, "Training images the probes fit.")
_NUM_TEST = flags.DEFINE_integer("num_test", 1000, "Test images the probes are scored on.")
_L2 = flags.DEFINE_float("l2", 1e-3, "Ridge penalty (relative to the feature variance).")
_JSON = flags.DEFINE_string("json_out", None, "Also write the results here.")


def _encoder_params(tower: str, config):
  cfg = model_config.from_config_dict(config.model)
  if tower == "pixels":
    return None
  if tower == "random":
    dummy = np.zeros((1, cfg.und_encoder.image_size, cfg.und_encoder.image_size, 3),
                     np.float32)
    return nn.unbox(siglip.UnderstandingEncoder(cfg.und_encoder).init(
        jax.random.key(config.seed), dummy)["params"])
  if tower == "pretrained":
    return encoder_pretrain.pretrain(config, cfg)[0]
  if not _CHECKPOINT.value:
    raise app.UsageError("tower 'checkpoint' needs --checkpoint DIR")
  run_config, step = loader.load_config(_CHECKPOINT.value)
  run_cfg = model_config.from_config_dict(run_config.model)
  print(f"checkpoint {_CHECKPOINT.value}, step {step}")
  return loader.load_params(_CHECKPOINT.value, run_cfg, step)[encoder_pretrain.ENCODER]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  results = {}
  for tower in _TOWERS.value:
    if tower not in TOWERS:
      raise app.UsageError(f"unknown tower {tower!r}; expected one of {TOWERS}")
    start = time.time()
    params = _encoder_params(tower, config)
    results[tower] = probe.run(config, params, _NUM_TRAIN.value, _NUM_TEST.value, _L2.value)
    results[tower]["seconds"] = time.time() - start
  first = next(iter(results.values()))
  print(f"\nlinear probes: fit on {first['num_train']} training images, scored on "
        f"{first['num_test']} test images; {first['grid']} x {first['grid']} patches")
  print("tower      | patch column (train / test) | object column (train / test / "
        "within 1) | left-of pairs (test)")
  for tower, r in results.items():
    pc, oc = r["patch_column"], r["object_column"]
    print(f"{tower:10s} | {pc['train']:.3f} / {pc['test']:.3f}               | "
          f"{oc['train']:.3f} / {oc['test']:.3f} / {oc['test_within_1']:.3f}          | "
          f"{oc['left_of']:.3f} ({oc['num_pairs']} pairs)  [{r['seconds']:.0f} s]")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
