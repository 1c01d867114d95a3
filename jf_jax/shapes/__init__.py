"""The shapes world: a small synthetic world to train and score a tiny JanusFlow on CPU.

Project code kept apart from the core packages (which never import it), as big_vision
keeps projects under `proj/`:

  config.py            the world's config keys (`add_world`), added by configs/tiny_shapes.py
  scene.py             scenes of coloured shapes: rendering, captions, questions
  world.py             the tfds dataset of scenes (generated on first use)
  task_data.py         its und/gen/text tasks for the mixture (`config.data.source = "shapes"`)
  vocabulary.py        the word-level tokenizer (`config.data.tokenizer = "shapes"`)
  detector.py          reads a scene back from an image (generated or not)
  scores.py            GenEval-style generation score, understanding exact match
  evaluate.py          both scores of a run on a split (`python -m jf_jax.shapes`)
  encoder_pretrain.py  object-presence pre-training of the tiny understanding tower
                       (the `config.init` plug-in)
  main_job.py          the default job's evaluation after `python train.py`
                       (the `config.after_training` plug-in)
  probe.py             linear probes: does a tower's output say which object is where
  diagnostics.py       flow error and scores by time t (where along the flow it fails)
  lab/                 the command-line probes behind docs/experiments.md
"""

from jf_jax.shapes.vocabulary import tokenizer  # `config.data.tokenizer = "shapes"`
from jf_jax.shapes.task_data import tasks  # `config.data.source = "shapes"`
