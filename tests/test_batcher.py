"""The serving queue's batching policy (`jf_jax/serve/batcher.py`) on the real `Batcher`
with real threads: closed-loop submitters, a device call that takes a while.

Every assertion is about batch sizes or an upper bound far above the expected time, never
about how long a sleep took: the sleeps only give the simulated device and clients their
durations (a call of DEVICE_S, a client's round trip of CLIENT_S < DEVICE_S).
"""

import threading
import time

from jf_jax.serve import batcher as batcher_lib

DEVICE_S, CLIENT_S = 0.06, 0.025  # one device call; a client between answer and resend
ROWS = 8  # the largest batch


def _closed_loop(rejoin_wait_s: float, batches: int = 12) -> list[int]:
  """Row counts of the first `batches` batches under two cohorts of ROWS // 2 closed-loop
  clients, the second starting while the first cohort's first batch runs."""
  sizes, started, stop = [], threading.Event(), threading.Event()

  def run(group, rows):
    sizes.append(len(rows))
    started.set()
    if len(sizes) >= batches:
      stop.set()
    time.sleep(DEVICE_S)
    return [r * 2 for r in rows]

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
  queue = batcher_lib.Batcher(lambda g, rows: rows, max_rows=ROWS, max_wait_s=0.001,
                              max_queue=64, rejoin_wait_s=30.0)
  t0 = time.monotonic()
  for i in range(5):
    assert queue.submit("g", [i]).result(timeout=60) == [i]
  assert time.monotonic() - t0 < 20.0  # five waits of the rejoin bound would take 150 s
  queue.close(10)


def test_another_group_does_not_wait_for_the_rejoin():
  """The rejoin wait holds only the group of the batch that just returned."""
  queue = batcher_lib.Batcher(lambda g, rows: rows, max_rows=ROWS, max_wait_s=0.001,
                              max_queue=64, rejoin_wait_s=30.0)
  assert queue.submit("a", [0, 1]).result(timeout=60) == [0, 1]
  t0 = time.monotonic()
  assert queue.submit("b", [2]).result(timeout=60) == [2]
  assert time.monotonic() - t0 < 20.0
  queue.close(10)
