"""The serving queue's batching policy (`jf_jax/serve/batcher.py`) on the real `Batcher`
with real threads: closed-loop submitters, a device call that takes a while, batches that
overlap on the device.

Every assertion is about batch sizes or an upper bound far above the expected time, never
about how long a sleep took: the sleeps only give the simulated device and clients their
durations (a call of DEVICE_S, a client's round trip of CLIENT_S < DEVICE_S).
"""

import threading
import time

import pytest

from jf_jax.serve import batcher as batcher_lib

DEVICE_S, CLIENT_S = 0.06, 0.025  # one device call; a client between answer and resend
ROWS = 8  # the largest batch


def _echo(group, rows):
  return lambda: rows


def _closed_loop(rejoin_wait_s: float, batches: int = 12) -> list[int]:
  """Row counts of the first `batches` batches under two cohorts of ROWS // 2 closed-loop
  clients, the second starting while the first cohort's first batch runs."""
  sizes, started, stop = [], threading.Event(), threading.Event()

  device = threading.Lock()  # one simulated device: overlapping calls run in turn

  def run(group, rows):
    sizes.append(len(rows))
    started.set()
    if len(sizes) >= batches:
      stop.set()

    def fetch():
      with device:
        time.sleep(DEVICE_S)
      return [r * 2 for r in rows]
    return fetch

  queue = batcher_lib.Batcher(run, max_rows=ROWS, max_wait_s=0.001, max_queue=64,
                              rejoin_wait_s=rejoin_wait_s)

  def client(i):
    while not stop.is_set():
      assert queue.submit("g", [i]).result(timeout=60) == [2 * i]
      time.sleep(CLIENT_S)

  first = [threading.Thread(target=client, args=(i,)) for i in range(ROWS // 2)]
  second = [threading.Thread(target=client, args=(i,)) for i in range(ROWS // 2, ROWS)]
  for t in first:
    t.start()
  assert started.wait(30)
  for t in second:
    t.start()
  for t in first + second:
    t.join(60)
  queue.close(60)
  return sizes[:batches]


def test_two_cohorts_merge_into_full_batches_with_the_rejoin_wait():
  sizes = _closed_loop(rejoin_wait_s=5.0)  # a bound only: the wait ends when rows are back
  assert sizes[2:] == [ROWS] * (len(sizes) - 2), sizes


def test_without_the_rejoin_wait_the_cohorts_alternate_half_full():
  # The cause the rejoin wait fixes: rows queued during a call go as soon as it ends,
  # before the clients of that call are back.
  sizes = _closed_loop(rejoin_wait_s=0.0)
  assert max(sizes[2:]) < ROWS, sizes


def test_a_lone_client_does_not_wait_for_the_rejoin():
  """One closed-loop client is its own returning row: no request waits rejoin_wait_s."""
  queue = batcher_lib.Batcher(_echo, max_rows=ROWS, max_wait_s=0.001,
                              max_queue=64, rejoin_wait_s=30.0)
  t0 = time.monotonic()
  for i in range(5):
    assert queue.submit("g", [i]).result(timeout=60) == [i]
  assert time.monotonic() - t0 < 20.0  # five waits of the rejoin bound would take 150 s
  queue.close(10)


def test_another_group_does_not_wait_for_the_rejoin():
  """The rejoin wait holds only the group of the batch that just returned."""
  queue = batcher_lib.Batcher(_echo, max_rows=ROWS, max_wait_s=0.001,
                              max_queue=64, rejoin_wait_s=30.0)
  assert queue.submit("a", [0, 1]).result(timeout=60) == [0, 1]
  t0 = time.monotonic()
  assert queue.submit("b", [2]).result(timeout=60) == [2]
  assert time.monotonic() - t0 < 20.0
  queue.close(10)


def _gated(log: list):
  """run(group, rows) whose device call returns when its `release` event is set; `log`
  gets (group, rows, release) per dispatch."""
  def run(group, rows):
    release = threading.Event()
    log.append((group, list(rows), release))

    def fetch():
      assert release.wait(60)
      if rows == ["bad"]:
        raise ValueError("this batch fails")
      return rows
    return fetch
  return run


def _until(condition, timeout: float = 30.0) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.002)


def test_the_next_batch_is_dispatched_while_one_is_on_the_device():
  """A full batch of the group in flight and a batch of another group go at once; a
  partial batch of the group in flight waits for it; a third batch waits for a slot."""
  log = []
  queue = batcher_lib.Batcher(_gated(log), max_rows=2, max_wait_s=0.001, max_queue=64,
                              max_in_flight=2)
  a = queue.submit("a", [0, 1])
  _until(lambda: len(log) == 1)
  b = queue.submit("a", [2, 3])  # full: dispatched beside the first
  _until(lambda: len(log) == 2)
  c = queue.submit("b", [4])  # no slot left
  time.sleep(0.05)
  assert len(log) == 2
  log[0][2].set()
  assert a.result(30) == [0, 1]
  _until(lambda: len(log) == 3)
  assert log[2][:2] == ("b", [4])
  d = queue.submit("a", [5])  # partial, its group on the device: waits for that batch
  time.sleep(0.05)
  assert len(log) == 3
  log[1][2].set()
  assert b.result(30) == [2, 3]
  _until(lambda: len(log) == 4)
  assert log[3][:2] == ("a", [5])
  log[2][2].set()
  log[3][2].set()
  assert c.result(30) == [4] and d.result(30) == [5]
  queue.close(10)


def test_a_failing_call_fails_only_its_batch_and_close_drains():
  log = []
  queue = batcher_lib.Batcher(_gated(log), max_rows=4, max_wait_s=0.001, max_queue=64)
  bad = queue.submit("a", ["bad"])
  _until(lambda: len(log) == 1)
  good = queue.submit("b", ["ok"])
  _until(lambda: len(log) == 2)
  later = queue.submit("a", ["later"])  # queued behind the failing batch of its group
  closer = threading.Thread(target=queue.close, args=(30,))
  closer.start()
  for _, _, release in log:
    release.set()
  with pytest.raises(ValueError, match="this batch fails"):
    bad.result(30)
  assert good.result(30) == ["ok"]
  _until(lambda: len(log) == 3)
  log[2][2].set()
  assert later.result(30) == ["later"]
  closer.join(30)
  assert not closer.is_alive()
