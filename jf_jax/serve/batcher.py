"""The queue that merges requests into device calls, and the two threads that run them.

Each request becomes a `Work` of one or more rows with a `group`: rows of equal groups
have the same bucketed shapes and static settings, so they may share one call. The
dispatching thread takes the oldest work, waits up to `max_wait_s` from its arrival for
more of its group (up to `max_rows`), and dispatches them as one batch: `run(group, rows)`
puts the call on the device and returns at once (JAX dispatches asynchronously) a
function that waits for it. The finishing thread waits for each call in dispatch order,
hands out its results and records it, while the dispatching thread already forms and
dispatches the next batch: up to `max_in_flight` batches are on the device at once, so
the device need not idle while a batch's results are fetched and answered.

Which work may start a batch while others are in flight: work of another group, or a full
batch of the group in flight; a partial batch of a group with a batch on the device waits
for that batch to return (its clients come back to the queue then, see below), so
closed-loop clients are not split into cohorts by overlap either.

The rejoin wait (`rejoin_wait_s`, 0: off): under closed-loop load (each client sends its
next request when its answer arrives) the rows queued during a call have waited longer
than `max_wait_s` when the device frees, so they would go at once while the clients of
the batch that just returned are still receiving their answers; the clients then split
into two cohorts that alternate, each batch half full (measured: 16 clients, batches of 8
padded to the 16-row bucket). So after a batch of a group returns, the next batch of that
group also waits, up to `rejoin_wait_s` from that moment, until as many rows are queued as
that batch held plus those that were waiting beside it (capped at `max_rows`): the
returning clients rejoin and the cohorts merge. A full batch never waits; a lone client's
request is its own returning row, so it waits no longer than `max_wait_s`. The price: when
those clients do not come back (open-loop traffic), the group's next batch, and any work
of other groups queued behind it, waits up to `rejoin_wait_s`.

Decoding runs as one `lax.while_loop` on the device, so a batch is fixed once it starts
(no continuous batching: new requests join the next batch; docs/serving.md says why).
"""

import collections
import concurrent.futures
import dataclasses
import queue as queue_lib
import threading
import time
from typing import Any, Callable, Hashable, Sequence

# run(group, rows) dispatches a batch and returns fetch; fetch() waits for the device and
# returns one result per row, in order
FetchFn = Callable[[], Sequence[Any]]
RunFn = Callable[[Hashable, list[Any]], FetchFn]


class QueueFull(Exception):
  """More rows are waiting than the queue holds."""


class Closed(Exception):
  """The server is stopping and takes no new work."""


@dataclasses.dataclass
class Work:
  group: Hashable
  rows: list[Any]
  future: concurrent.futures.Future
  enqueued: float


class Batcher:
  """A bounded queue plus the threads that empty it (see the module doc)."""

  def __init__(self, run: RunFn, *, max_rows: int, max_wait_s: float, max_queue: int,
               rejoin_wait_s: float = 0.0, max_in_flight: int = 2,
               on_batch: Callable[[Hashable, list[Work], float], None] | None = None):
    if max_in_flight < 1:
      raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    self._run, self._max_rows, self._max_wait = run, max_rows, max_wait_s
    self._rejoin_wait, self._max_in_flight = rejoin_wait_s, max_in_flight
    self._max_queue, self._on_batch = max_queue, on_batch
    self._items: collections.deque[Work] = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._closed = False
    # Batches on the device: their count, per group.
    self._in_flight: collections.Counter[Hashable] = collections.Counter()
    # The rejoin wait's state: when the last batch's results were handed out, its group,
    # and the rows expected back (its rows + those of its group left waiting).
    self._free_at, self._expect_group, self._expect_rows = 0.0, None, 0
    self._done: queue_lib.Queue = queue_lib.Queue()  # (batch, fetch, started) | None
    self._threads = [threading.Thread(target=self._dispatch_loop, name="jf-batcher",
                                      daemon=True),
                     threading.Thread(target=self._finish_loop, name="jf-finisher",
                                      daemon=True)]
    for thread in self._threads:
      thread.start()

  @property
  def queued_rows(self) -> int:
    return self._queued_rows

  def cpu_seconds(self) -> float:
    """CPU seconds of the dispatching and finishing threads so far (on a CPU backend the
    device's work partly runs on them: with XLA's pool, the "device" CPU)."""
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident))
               for t in self._threads if t.is_alive())

  def submit(self, group: Hashable, rows: list[Any]) -> concurrent.futures.Future:
    """Queues rows; the future resolves to their results (a list, in order)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    with self._cond:
      if self._closed:
        raise Closed("the server is shutting down")
      if self._queued_rows + len(rows) > self._max_queue:
        raise QueueFull(f"the queue is full ({self._queued_rows} rows waiting, limit "
                        f"{self._max_queue}); retry later")
      self._items.append(Work(group, rows, future, time.monotonic()))
      self._queued_rows += len(rows)
      self._cond.notify_all()
    return future

  def close(self, timeout: float | None = None) -> None:
    """Stops intake; the work already queued still runs. Waits for both threads."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for thread in self._threads:
      thread.join(timeout)

  # ------------------------------------------------------------------ dispatching
  def _rows_by_group(self) -> collections.Counter:
    rows: collections.Counter[Hashable] = collections.Counter()
    for work in self._items:
      rows[work.group] += len(work.rows)
    return rows

  def _first(self) -> Work | None:
    """The oldest work that may start a batch now (None: wait): a slot on the device is
    free, and its group has no batch on the device or its rows fill one."""
    if sum(self._in_flight.values()) >= self._max_in_flight:
      return None
    rows = self._rows_by_group()
    for work in self._items:
      if not self._in_flight[work.group] or rows[work.group] >= self._max_rows:
        return work
    return None

  def _take(self) -> list[Work] | None:
    """The next batch: the first work that may start one (`_first`) and the queued work of
    its group that fits; None when closed and nothing is left."""
    with self._cond:
      while (first := self._first()) is None:
        if self._closed and not self._items:
          return None
        self._cond.wait()
      group, deadline = first.group, first.enqueued + self._max_wait
      while not self._closed:
        rows = self._rows_by_group()[group]
        if rows >= self._max_rows:
          break
        until = deadline
        if (self._rejoin_wait > 0 and group == self._expect_group
            and rows < self._expect_rows):
          until = max(until, self._free_at + self._rejoin_wait)
        left = until - time.monotonic()
        if left <= 0:
          break
        self._cond.wait(left)
      batch, rows, keep = [], 0, collections.deque()
      for work in self._items:
        fits = not batch or rows + len(work.rows) <= self._max_rows
        if work.group == group and fits:
          batch.append(work)
          rows += len(work.rows)
        else:
          keep.append(work)
      self._items = keep
      self._queued_rows -= rows
      self._in_flight[group] += 1
      return batch

  def _dispatch_loop(self) -> None:
    while (batch := self._take()) is not None:
      rows = [row for work in batch for row in work.rows]
      started = time.monotonic()
      try:
        fetch = self._run(batch[0].group, rows)
      except Exception as e:  # pylint: disable=broad-except
        fetch = _raiser(e)  # the batch's requests fail, the server goes on
      self._done.put((batch, fetch, started))
    self._done.put(None)

  # -------------------------------------------------------------------- finishing
  def _finish_loop(self) -> None:
    while (item := self._done.get()) is not None:
      batch, fetch, started = item
      group = batch[0].group
      try:
        results, error = list(fetch()), None
      except Exception as e:  # pylint: disable=broad-except
        results, error = None, e
      if error is None and self._on_batch is not None:
        self._on_batch(group, batch, started)
      with self._cond:  # before the answers go: their clients' next requests see it
        self._in_flight[group] -= 1
        self._free_at, self._expect_group = time.monotonic(), group
        self._expect_rows = min(self._max_rows, sum(len(w.rows) for w in batch)
                                + self._rows_by_group()[group])
        self._cond.notify_all()
      start = 0
      for work in batch:
        if error is not None:
          work.future.set_exception(error)
        else:
          work.future.set_result(results[start:start + len(work.rows)])
        start += len(work.rows)


def _raiser(error: Exception) -> FetchFn:
  def fetch():
    raise error
  return fetch
