"""The queue that merges requests into device calls.

Each request becomes a `Work` of one or more rows with a `group`: rows of equal groups
have the same bucketed shapes and static settings, so they may share one call. One worker
thread takes the oldest work, waits up to `max_wait_s` from its arrival for more of its
group (up to `max_rows`), and runs them as one batch; other groups wait their turn in
arrival order. Every device call comes from this one thread.

The rejoin wait (`rejoin_wait_s`, 0: off): under closed-loop load (each client sends its
next request when its answer arrives) the rows queued during a call have waited longer
than `max_wait_s` when the device frees, so they would go at once while the clients of
the batch that just returned are still receiving their answers; the clients then split
into two cohorts that alternate, each batch half full (measured: 16 clients, batches of 8
padded to the 16-row bucket). So after a batch of a group, the next batch of that group
also waits, up to `rejoin_wait_s` from the moment the device freed, until as many rows are
queued as that batch held plus those that were waiting beside it (capped at `max_rows`):
the returning clients rejoin and the cohorts merge. A full batch never waits; a lone
client's request is its own returning row, so it waits no longer than `max_wait_s`. The
price: when those clients do not come back (open-loop traffic), the group's next batch,
and any work of other groups queued behind it, waits up to `rejoin_wait_s`.

Decoding runs as one `lax.while_loop` on the device, so a batch is fixed once it starts
(no continuous batching: new requests join the next batch).
"""

import collections
import concurrent.futures
import dataclasses
import threading
import time
from typing import Any, Callable, Hashable, Sequence

# run(group, rows) -> one result per row, in order
RunFn = Callable[[Hashable, list[Any]], Sequence[Any]]


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
  """A bounded queue plus the worker thread that empties it (see the module doc)."""

  def __init__(self, run: RunFn, *, max_rows: int, max_wait_s: float, max_queue: int,
               rejoin_wait_s: float = 0.0,
               on_batch: Callable[[Hashable, list[Work], float], None] | None = None):
    self._run, self._max_rows, self._max_wait = run, max_rows, max_wait_s
    self._rejoin_wait = rejoin_wait_s
    self._max_queue, self._on_batch = max_queue, on_batch
    self._items: collections.deque[Work] = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._closed = False
    # The rejoin wait's state: when the previous batch's results were handed out, its
    # group, and the rows expected back (its rows + those of its group left waiting).
    self._free_at, self._expect_group, self._expect_rows = 0.0, None, 0
    self._thread = threading.Thread(target=self._loop, name="jf-batcher", daemon=True)
    self._thread.start()

  @property
  def queued_rows(self) -> int:
    return self._queued_rows

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
    """Stops intake; the work already queued still runs. Waits for the worker."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    self._thread.join(timeout)

  def _take(self) -> list[Work] | None:
    """The next batch: the oldest work and the queued work of its group that fits."""
    with self._cond:
      while not self._items:
        if self._closed:
          return None
        self._cond.wait()
      first = self._items[0]
      deadline = first.enqueued + self._max_wait
      rejoin = (self._free_at + self._rejoin_wait
                if self._rejoin_wait > 0 and first.group == self._expect_group else None)
      while not self._closed:
        rows = self._rows_of(first.group)
        until = deadline
        if rejoin is not None and rows < self._expect_rows:
          until = max(until, rejoin)
        left = until - time.monotonic()
        if rows >= self._max_rows or left <= 0:
          break
        self._cond.wait(left)
      batch, rows, keep = [], 0, collections.deque()
      for work in self._items:
        fits = not batch or rows + len(work.rows) <= self._max_rows
        if work.group == first.group and fits:
          batch.append(work)
          rows += len(work.rows)
        else:
          keep.append(work)
      self._items = keep
      self._queued_rows -= rows
      return batch

  def _rows_of(self, group: Hashable) -> int:
    return sum(len(w.rows) for w in self._items if w.group == group)

  def _loop(self) -> None:
    while True:
      batch = self._take()
      if batch is None:
        return
      self._run_batch(batch)
      group = batch[0].group
      with self._cond:
        self._free_at, self._expect_group = time.monotonic(), group
        self._expect_rows = min(self._max_rows, sum(len(w.rows) for w in batch)
                                + self._rows_of(group))

  def _run_batch(self, batch: list[Work]) -> None:
    rows = [row for work in batch for row in work.rows]
    started = time.monotonic()
    try:
      results = list(self._run(batch[0].group, rows))
    except Exception as e:  # the requests fail, the server goes on
      for work in batch:
        work.future.set_exception(e)
      return
    if self._on_batch is not None:
      self._on_batch(batch[0].group, batch, started)
    start = 0
    for work in batch:
      work.future.set_result(results[start:start + len(work.rows)])
      start += len(work.rows)
