"""metrics: one exchange end is one count, one duration, its upload bytes and tokens."""
from __future__ import annotations

from filters.metrics import Metrics, MetricsFilter

from .fakes import exchange


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics._registry.get_sample_value(name, labels)


async def ended(metrics: Metrics, status: int = 200, **kw):
    ex = exchange(**kw)
    ex.status = status
    ex.ended = ex.started + 0.003
    await MetricsFilter(metrics).on_exchange_end(ex)
    return ex


async def test_each_exchange_end_counts_one_request():
    metrics = Metrics()
    labels = {"operation": "files.create", "provider": "-", "status": "201"}
    await ended(metrics, 201)
    assert sample(metrics, "sluicegate_requests_total", **labels) == 1
    await ended(metrics, 201)
    assert sample(metrics, "sluicegate_requests_total", **labels) == 2
    assert b'sluicegate_requests_total{operation="files.create",provider="-",status="201"} 2.0' in metrics.render()


async def test_statuses_are_counted_apart():
    metrics = Metrics()
    await ended(metrics, 200)
    await ended(metrics, 404)
    for status in ("200", "404"):
        assert sample(metrics, "sluicegate_requests_total", operation="files.create", provider="-", status=status) == 1


async def test_duration_is_observed():
    metrics = Metrics()
    await ended(metrics)
    assert sample(metrics, "sluicegate_request_duration_seconds_count", operation="files.create", provider="-") == 1
    assert sample(metrics, "sluicegate_request_duration_seconds_bucket", operation="files.create", provider="-",
                  le="0.001") == 0
    assert sample(metrics, "sluicegate_request_duration_seconds_bucket", operation="files.create", provider="-",
                  le="0.005") == 1


async def test_upload_bytes_and_tokens_are_counted():
    metrics = Metrics()
    ex = exchange()
    ex.status, ex.file_bytes, ex.usage = 200, 1234, {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    await MetricsFilter(metrics).on_exchange_end(ex)
    assert sample(metrics, "sluicegate_upload_bytes_total", provider="-") == 1234
    assert sample(metrics, "sluicegate_tokens_total", provider="-", kind="input_tokens") == 3
    assert sample(metrics, "sluicegate_tokens_total", provider="-", kind="output_tokens") == 4
