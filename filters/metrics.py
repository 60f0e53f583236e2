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
"""
from __future__ import annotations

import os
import time
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
        if multiprocess:
            MultiProcessCollector(self._registry, path)
        self._generate = generate_latest
        self.content_type = CONTENT_TYPE_LATEST

    def observe(self, op: str, provider: str, status: int, seconds: float, upload_bytes: int,
                usage: dict[str, Any] | None) -> None:
        children = self._by_request.get((op, provider, status))
        if children is None:
            children = self._by_request[(op, provider, status)] = (
                self.requests.labels(op, provider, str(status)), self.duration.labels(op, provider))
        children[0].inc()
        children[1].observe(seconds)
        if upload_bytes:
            uploaded = self._uploads.get(provider)
            if uploaded is None:
                uploaded = self._uploads[provider] = self.upload_bytes.labels(provider)
            uploaded.inc(upload_bytes)
        if usage:
            for kind in TOKEN_KINDS:
                n = usage.get(kind)
                if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                    counter = self._tokens.get((provider, kind))
                    if counter is None:
                        counter = self._tokens[(provider, kind)] = self.tokens.labels(provider, kind)
                    counter.inc(n)

    def render(self) -> bytes:
        """Every worker's samples, merged (Prometheus text format)."""
        return self._generate(self._registry)


class MetricsFilter(Filter):
    name = "metrics"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_exchange_end(self, ex: "Exchange") -> None:
        end = ex.ended or time.perf_counter()
        self.metrics.observe(ex.operation, ex.provider.name if ex.provider else "-", ex.status,
                                     end - ex.started, ex.file_bytes, ex.usage)
