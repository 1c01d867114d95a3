r"""The default run: tiny JanusFlow on the built-in shapes world, 2 CPU cores, ~14 min.

  python train.py                       # this config; trains, then evaluates (below)
  python train.py --workdir /tmp/run --config.train.num_steps=100 --config.eval.num_gen=16

configs/tiny_shapes.py's model and data with a batch mixture and schedule sized for a
15-minute budget on 2 CPU cores (imports, compilation and evaluation included), plus the
post-training job (`config.eval`, run by train.py through `jf_jax/shapes/main_job.py`): a
PNG grid of samples for test captions (`workdir/samples_test.png`), a few test questions
printed with the model's answers, and both scores on the held-out test split
(GenEval-style generation score, understanding exact match) in `workdir/main_job.json`.
Scores, times and the experiments behind each setting: docs/benchmarks.md and
docs/experiments.md. A longer run: `--config.train.num_steps=N` (the cosine schedule
follows it).

What differs from the paper's recipe, and why:
  * generation runs in PIXEL space (no SDXL-VAE exists offline for a tiny model);
  * no pretrained tiny SigLIP exists offline, so the run first pre-trains the tiny
    understanding tower on object presence in the training images (~1 min,
    `jf_jax/shapes/encoder_pretrain.py`), then trains stage 2 with it frozen, as the
    paper keeps SigLIP frozen (and it is the target REPA aligns to, when REPA is on);
  * the mixture: understanding rows only for the first 200 steps, then 5 understanding +
    16 generation rows, and no text rows (the shapes world's scene descriptions teach which
    objects occur together; see the batch settings below);
  * the generation decoder predicts the clean image (x-prediction, turned into the
    velocity the loss and sampler use), the flow loss is weighted 8x and its times are
    drawn towards noise, and REPA is off (it cost generation here; see below).
"""

import ml_collections

from jf_jax import config_defaults


def get_config():
  config = config_defaults.sibling_config(__file__, "tiny_shapes")
  # 64 stem channels >= the 48 values of a 4x4x3 pixel patch: with fewer the patchify
  # conv has a null space whose noise is never removed (a residual noise floor).
  config.model.gen_encoder.channels = 64
  # Stage 2: the understanding tower is frozen, as in the paper, after a supervised
  # object-presence pre-training on the training images (config.init).
  config.stage = 2
  config.encoder_pretrain.update(dict(steps=1500, batch_size=32, learning_rate=1.5e-3))
  # Question/answer turns per understanding row, and the row length that holds them
  # (65 image slots + ~12 tokens per turn).
  config.data.und_turns = 6
  config.batch.und_seq_len = 160
  # Understanding rows only for the first 200 steps, then mostly generation rows (a row of
  # either task costs the same; the flow needs far more images than understanding needs
  # rows); no text rows (scene descriptions teach object co-occurrence the test pairs
  # break). Why, with the runs: docs/experiments.md ("The default's settings").
  config.batch.update(dict(und_rows=16, text_rows=0, gen_rows=0))
  config.batch.switch.update(dict(step=200, und_rows=5, text_rows=0, gen_rows=16))
  # Generation: x-prediction, times drawn towards noise (logit-normal around t = 0.27), the
  # flow loss weighted 8x against the next-token loss, REPA off.
  config.model.gen_decoder.prediction = "data"
  config.loss.update(dict(t_loc=-1.0, flow_weight=8.0, repa_weight=0.0))
  config.optim.update(dict(learning_rate=1.5e-3, warmup_steps=100, schedule="cosine",
                           end_learning_rate=1e-5))
  # 3,300 steps keep the whole job near 13 minutes on 2 cores, with room for a slower machine.
  config.train.update(dict(num_steps=3300, log_every=300, checkpoint_every=825,
                           keep_checkpoints=1))
  config.after_training = "jf_jax.shapes.main_job"  # train.py runs its evaluation at the end
  config.eval = ml_collections.ConfigDict(dict(
      split="test",
      num_gen=200,          # test captions to draw (GenEval-style score)
      num_und=500,          # test questions to answer (exact match)
      steps=20,             # ODE steps per image
      cfg=2.0,              # classifier-free guidance weight
      seed=0,
      batch_size=50,
      grid_size=16,         # samples in the PNG grid
      show_questions=6,     # questions printed with the model's answers
  ))
  return config
