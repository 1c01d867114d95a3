"""Prometheus metrics of one server (its own registry): requests, batch sizes, queue wait
and device time, served at GET /metrics in the text format."""

import prometheus_client as prom


class Metrics:
  """The server's counters and histograms."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.requests = prom.Counter("jf_requests", "HTTP requests by endpoint and status",
                                 ["endpoint", "status"], registry=self.registry)
    self.batch_rows = prom.Histogram(
        "jf_batch_rows", "rows per device batch (images or answers)", ["kind"],
        buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
    self.batch_requests = prom.Histogram(
        "jf_batch_requests", "requests merged into one batch", ["kind"],
        buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
    self.queue_wait = prom.Histogram(
        "jf_queue_wait_seconds", "time from enqueue to the start of its device call",
        ["kind"], buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=self.registry)
    self.device_calls = prom.Counter("jf_device_calls", "jitted engine calls", ["kind"],
                                     registry=self.registry)
    self.device_seconds = prom.Counter(
        "jf_device_seconds", "engine calls' time from dispatch to results on host, summed "
        "(up to two calls may overlap)", ["kind"], registry=self.registry)
    self.device_busy = prom.Gauge(
        "jf_device_busy_seconds", "time with at least one engine call in flight",
        registry=self.registry)
    # On a CPU backend these threads and XLA's pool threads are the device: the benchmark
    # subtracts both from the process's CPU to get the host work per request.
    self.worker_cpu = prom.Gauge(
        "jf_worker_cpu_seconds", "CPU seconds of the batcher's two threads, which make "
        "and fetch every device call", registry=self.registry)
    self.queue_rows = prom.Gauge("jf_queue_rows", "rows waiting in the queue",
                                 registry=self.registry)

  def text(self) -> bytes:
    return prom.generate_latest(self.registry)
