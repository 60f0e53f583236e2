"""metrics: request counters and latency histograms, served as Prometheus text on /metrics.

The samples live in prometheus_client's multiprocess files (proxy/metrics_dir.py): every worker
writes its own, and a scrape merges all of them, so ``--workers N`` reports the whole gateway.
Each sample is a write into a memory-mapped file; the hot path keeps the labelled children it
has used, so a request costs those writes and one dict lookup, not a ``labels()`` call each.

prometheus_client checks ``os.getpid()`` before every write (to notice a fork); that is a
system call per sample, five or more per request — more than the writes themselves (issue 10,
measured: 19.6 → 6.5 µs per request's samples). Its documented ``process_identifier`` hook gets
a pid cached here instead, refreshed in a forked child by ``os.register_at_fork``, so a fork is
still noticed and the worker's samples still go to its own file.

Each sample write is a lock, a struct pack and a store into the mapped file (~2 µs each; a
request makes three to five). The counts of one event-loop turn are therefore summed in plain
Python first (a dict lookup and a few additions per request) and written once at the end of the
turn, one write per sample touched, however many requests ended in it; a scrape answered by
this worker writes what is pending first, and one answered by another worker sees the counts as
of this worker's last turn (the in-flight gauge works the same way; issue 10).
"""
from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from .base import Filter

if TYPE_CHECKING:
    from proxy.exchange import Exchange

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_KINDS = ("input_tokens", "output_tokens")

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _process_identifier() -> int:
    return _pid


def _install_cached_pid_values(values: Any) -> None:
    """Once per process: multiprocess values that read the cached pid (see the module doc)."""
    if not getattr(values.ValueClass, "_sluicegate_cached_pid", False):
        values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)
        values.ValueClass._sluicegate_cached_pid = True


class Metrics:
    """The gateway's metrics. The program (``proxy.server.run``) sets ``PROMETHEUS_MULTIPROC_DIR``
    before prometheus_client is first imported (which is why the import is here), so every
    worker writes its samples to the shared files. A gateway built inside another process
    without it (an embedding, an in-process test) counts in a registry of its own: one process,
    so that is still the whole gateway."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        multiprocess = bool(path) and getattr(values.ValueClass, "_multiprocess", False)
        if multiprocess:
            _install_cached_pid_values(values)
        self._registry = CollectorRegistry()
        # Multiprocess: registry=None, the samples are read back from the files, never from
        # these objects. In-process: they are the registry.
        registry = None if multiprocess else self._registry
        self.requests = Counter("sluicegate_requests", "API requests by operation, provider and status",
                                ("operation", "provider", "status"), registry=registry)
        self.duration = Histogram("sluicegate_request_duration_seconds", "API request duration",
                                  ("operation", "provider"), buckets=BUCKETS, registry=registry)
        self.upload_bytes = Counter("sluicegate_upload_bytes", "File bytes uploaded, by provider",
                                    ("provider",), registry=registry)
        self.tokens = Counter("sluicegate_tokens", "Model tokens, by provider and kind",
                              ("provider", "kind"), registry=registry)
        # livesum: requests in flight in all running workers; livemax: 1 once any worker drains.
        # "live": a worker that exited is dropped from them (proxy.metrics_dir.worker_exited).
        self.inflight = Gauge("sluicegate_inflight_requests", "API requests in flight", registry=registry,
                              multiprocess_mode="livesum")
        self.draining = Gauge("sluicegate_draining", "1 while the gateway drains", registry=registry,
                              multiprocess_mode="livemax")
        self._by_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._uploads: dict[str, Any] = {}
        self._tokens: dict[tuple[str, str], Any] = {}
        # Not yet written (see the module doc): per (op, provider, status) [count, seconds,
        # per-bucket counts (the last one +Inf)]; per counter child, the amount.
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        self._pending_inc: dict[Any, float] = {}
        self._flush_due = False
        if multiprocess:
            MultiProcessCollector(self._registry, path)
        self._generate = generate_latest
        self.content_type = CONTENT_TYPE_LATEST

    def observe(self, op: str, provider: str, status: int, seconds: float, upload_bytes: int,
                usage: dict[str, Any] | None) -> None:
        """Count one ended exchange (written at the end of this event-loop turn)."""
        pending = self._pending.get((op, provider, status))
        if pending is None:
            pending = self._pending[(op, provider, status)] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        pending[0] += 1
        pending[1] += seconds
        # Prometheus' rule: the first bucket whose upper bound is >= the value.
        pending[2][bisect_left(BUCKETS, seconds)] += 1
        if upload_bytes:
            uploaded = self._uploads.get(provider)
            if uploaded is None:
                uploaded = self._uploads[provider] = self.upload_bytes.labels(provider)
            self._pending_inc[uploaded] = self._pending_inc.get(uploaded, 0) + upload_bytes
        if usage:
            for kind in TOKEN_KINDS:
                n = usage.get(kind)
                if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                    counter = self._tokens.get((provider, kind))
                    if counter is None:
                        counter = self._tokens[(provider, kind)] = self.tokens.labels(provider, kind)
                    self._pending_inc[counter] = self._pending_inc.get(counter, 0) + n
        if not self._flush_due:
            self._flush_due = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a synchronous caller): write now
                self.flush()

    def flush(self) -> None:
        """Write the pending counts into the samples (prometheus_client's children)."""
        self._flush_due = False
        pending, self._pending = self._pending, {}
        for key, (count, seconds, buckets) in pending.items():
            children = self._by_request.get(key)
            if children is None:
                op, provider, status = key
                children = self._by_request[key] = (
                    self.requests.labels(op, provider, str(status)), self.duration.labels(op, provider))
            children[0].inc(count)
            _observe_many(children[1], seconds, buckets)
        if self._pending_inc:
            incs, self._pending_inc = self._pending_inc, {}
            for counter, amount in incs.items():
                counter.inc(amount)

    def render(self) -> bytes:
        """Every worker's samples, merged (Prometheus text format)."""
        self.flush()
        return self._generate(self._registry)


def _observe_many(histogram: Any, seconds: float, buckets: list[int]) -> None:
    """What ``sum(buckets)`` calls of ``histogram.observe`` whose values add up to ``seconds``
    write, in one write per sample: the sum once, each bucket that got values once.
    prometheus_client keeps a histogram child's per-bucket counts (not cumulative) in
    ``_buckets`` and their sum in ``_sum`` — the attributes its ``observe`` increments
    (tests/unit/test_metrics_filter.py compares the exposition with plain ``observe`` calls)."""
    histogram._raise_if_not_observable()
    histogram._sum.inc(seconds)
    for i, n in enumerate(buckets):
        if n:
            histogram._buckets[i].inc(n)


class MetricsFilter(Filter):
    name = "metrics"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_exchange_end(self, ex: "Exchange") -> None:
        end = ex.ended or time.perf_counter()
        self.metrics.observe(ex.operation, ex.provider.name if ex.provider else "-", ex.status,
                                     end - ex.started, ex.file_bytes, ex.usage)
