"""The training loop's meter (jf_jax/train/meter.py) on a fake clock."""

import numpy as np
import pytest

from jf_jax.train import meter as meter_lib


class FakeClock:
  """Seconds that move only when the test says so."""

  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def test_throughput_data_wait_and_eta():
  clock = FakeClock()
  meter = meter_lib.Meter(total_steps=20, max_nonfinite_in_row=3, clock=clock)
  for wait, compute in [(0.003, 0.097), (0.001, 0.099)]:
    with meter.data_wait():
      clock.now += wait
    clock.now += compute  # the step itself: not data wait
    meter.step_done(tokens=1000, images=4)
  got = meter.summary(step=12)
  np.testing.assert_allclose(got["tokens_per_s"], 2000 / 0.2)
  np.testing.assert_allclose(got["images_per_s"], 8 / 0.2)
  np.testing.assert_allclose(got["step_ms"], 100.0)
  np.testing.assert_allclose(got["data_wait_ms_per_step"], 2.0)
  np.testing.assert_allclose(got["data_wait_fraction"], 0.004 / 0.2)
  np.testing.assert_allclose(got["eta_s"], 8 * 0.1)  # 8 steps left at 0.1 s each
  assert got["nonfinite_total"] == 0
  # A new window: one step that waited 50 ms of its 60 ms.
  with meter.data_wait():
    clock.now += 0.05
  clock.now += 0.01
  meter.step_done(tokens=10, images=0)
  got = meter.summary(step=13)
  np.testing.assert_allclose(got["data_wait_ms_per_step"], 50.0)
  np.testing.assert_allclose(got["data_wait_fraction"], 0.05 / 0.06)
  np.testing.assert_allclose(got["step_ms"], 60.0)
  np.testing.assert_allclose(got["tokens_per_s"], 10 / 0.06)
  np.testing.assert_allclose(got["eta_s"], 7 * 0.26 / 3)  # run mean: 3 steps in 0.26 s


def test_data_wait_counts_a_failing_fetch():
  clock = FakeClock()
  meter = meter_lib.Meter(10, 3, clock=clock)
  with pytest.raises(StopIteration):
    with meter.data_wait():
      clock.now += 0.5
      raise StopIteration
  meter.step_done(0, 0)
  assert meter.summary(1)["data_wait_ms_per_step"] == pytest.approx(500.0)


def test_nonfinite_is_read_one_step_late_and_stops_the_run():
  meter = meter_lib.Meter(100, max_nonfinite_in_row=3, clock=FakeClock())
  meter.nonfinite(np.int32(1), step=1)
  assert meter.nonfinite_total == 0  # not read yet: the host does not wait for it
  meter.nonfinite(np.int32(0), step=2)  # reads step 1's flag
  assert meter.nonfinite_total == 1
  assert meter.summary(2)["nonfinite_total"] == 1  # the summary reads the pending one
  meter.nonfinite(np.int32(1), step=3)
  meter.nonfinite(np.int32(1), step=4)
  meter.nonfinite(np.int32(0), step=5)  # a finite step resets the run of bad ones
  meter.nonfinite(np.int32(1), step=6)
  meter.nonfinite(np.int32(1), step=7)
  assert meter.nonfinite_total == 4  # steps 1, 3, 4 and 6 (7 is still pending)
  meter.nonfinite(np.int32(1), step=8)
  with pytest.raises(FloatingPointError, match="3 steps in a row.*step 8"):
    meter.nonfinite(np.int32(0), step=9)
