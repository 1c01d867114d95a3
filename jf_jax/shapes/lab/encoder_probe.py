r"""Understanding-encoder probe: do the tiny tower's object features carry over to test pairs?

Pre-trains the understanding tower of a config (default: configs/default.py's, i.e. the
default run's) on object presence with `jf_jax/shapes/encoder_pretrain.py`, once per
readout, and prints the fraction of train / validation / test images (first 1,000 each)
whose predicted object set is exactly right. Test images all hold an object pair never
seen together in training, so the train-test gap measures pair-level shortcuts.

  python -m jf_jax.shapes.lab.encoder_probe                 # both readouts, the config's steps
  python -m jf_jax.shapes.lab.encoder_probe --readouts=max --config.encoder_pretrain.steps=3000
  python -m jf_jax.shapes.lab.encoder_probe --config.model.und_encoder.width=96 \
      --config.model.und_encoder.depth=4
"""

import copy
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags


from jf_jax.models import config as model_config
from jf_jax.shapes import encoder_pretrain

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "configs",
                           "default.py"), "Config whose understanding tower is probed.")
_READOUTS = flags.DEFINE_list("readouts", list(encoder_pretrain.READOUTS),
                              "Readouts to compare (max, pool).")


def main(argv):
  del argv
  results = []
  for readout in _READOUTS.value:
    config = copy.deepcopy(_CONFIG.value)
    config.encoder_pretrain.readout = readout
    cfg = model_config.from_config_dict(config.model)
    start = time.time()
    _, metrics = encoder_pretrain.pretrain(config, cfg, ("train", "validation", "test"))
    results.append((readout, metrics, time.time() - start))
  und = _CONFIG.value.model.und_encoder
  print(f"\ntower: width {und.width}, depth {und.depth}, patch {und.patch_size}, image "
        f"{und.image_size}; {_CONFIG.value.encoder_pretrain.steps} steps of "
        f"{_CONFIG.value.encoder_pretrain.batch_size}"
        " training images; exact-set accuracy (first 1,000 images of each split):")
  for readout, m, seconds in results:
    print(f"  readout {readout:4s}: train {m['exact_set/train']:.3f}  validation "
          f"{m['exact_set/validation']:.3f}  test {m['exact_set/test']:.3f}  "
          f"({seconds:.0f} s)")


if __name__ == "__main__":
  app.run(main)
