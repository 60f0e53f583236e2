"""metrics: request counters and latency histograms, served as Prometheus text on /metrics."""
from __future__ import annotations

import bisect
import time
from collections import defaultdict

from .base import Filter

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.upload_bytes: dict[str, int] = defaultdict(int)
        self.tokens: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, op: str, provider: str, status: int, seconds: float, upload_bytes: int, usage) -> None:  # type: ignore[no-untyped-def]
        self.requests[(op, provider, status)] += 1
        key = (op, provider)
        counts = self.latency.get(key)
        if counts is None:
            counts = self.latency[key] = [0] * (len(BUCKETS) + 1)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[key] += seconds
        if upload_bytes:
            self.upload_bytes[provider] += upload_bytes
        if usage:
            for kind in ("input_tokens", "output_tokens"):
                n = usage.get(kind)
                if isinstance(n, int):
                    self.tokens[(provider, kind)] += n

    def render(self, extra: dict[str, float] | None = None) -> str:
        out = ["# TYPE sluicegate_requests_total counter"]
        for (op, provider, status), n in sorted(self.requests.items()):
            out.append(f'sluicegate_requests_total{{operation="{op}",provider="{provider}",status="{status}"}} {n}')
        out.append("# TYPE sluicegate_request_duration_seconds histogram")
        for (op, provider), counts in sorted(self.latency.items()):
            labels = f'operation="{op}",provider="{provider}"'
            total = 0
            for bound, n in zip(BUCKETS, counts):
                total += n
                out.append(f'sluicegate_request_duration_seconds_bucket{{{labels},le="{bound}"}} {total}')
            total += counts[-1]
            out.append(f'sluicegate_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}')
            out.append(f"sluicegate_request_duration_seconds_sum{{{labels}}} {self.latency_sum[(op, provider)]:.6f}")
            out.append(f"sluicegate_request_duration_seconds_count{{{labels}}} {total}")
        out.append("# TYPE sluicegate_upload_bytes_total counter")
        for provider, n in sorted(self.upload_bytes.items()):
            out.append(f'sluicegate_upload_bytes_total{{provider="{provider}"}} {n}')
        out.append("# TYPE sluicegate_tokens_total counter")
        for (provider, kind), n in sorted(self.tokens.items()):
            out.append(f'sluicegate_tokens_total{{provider="{provider}",kind="{kind}"}} {n}')
        for name, value in (extra or {}).items():
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name} {value}")
        return "\n".join(out) + "\n"


class MetricsFilter(Filter):
    name = "metrics"

    async def on_exchange_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        end = ex.ended or time.perf_counter()
        self.gateway.metrics.observe(ex.operation, ex.provider.name if ex.provider else "-", ex.status,
                                     end - ex.started, ex.file_bytes, ex.usage)
