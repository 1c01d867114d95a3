"""Lab probes of the shapes world (not speed benchmarks; those are in benchmarks/).

  encoder_probe.py   object-presence pre-training readouts of the understanding tower
  position_probe.py  linear probes: does a tower's output say where each object is
  flow_by_time.py    flow error and scores by time t of a trained run
  gen_curve.py       the generation score along a run's kept checkpoints
  solver_match.py    Heun vs Euler: how many Heun steps match Euler at N

Run as `python -m jf_jax.shapes.lab.NAME --help`; results are in docs/experiments.md.
"""
