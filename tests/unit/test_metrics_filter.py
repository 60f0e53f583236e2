"""metrics: one exchange end is one count, one duration, its upload bytes and tokens."""
from __future__ import annotations

import asyncio

import pytest

from filters.metrics import Metrics, MetricsFilter

from .fakes import exchange


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    metrics.flush()  # what a scrape (render) does first
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


def test_exposition_names_types_and_help_of_every_metric():
    text = Metrics().render().decode()
    meta = sorted(line for line in text.splitlines() if line.startswith("# "))
    assert meta == sorted([
        "# HELP sluicegate_requests_total API requests by operation, provider and status",
        "# TYPE sluicegate_requests_total counter",
        "# HELP sluicegate_request_duration_seconds API request duration",
        "# TYPE sluicegate_request_duration_seconds histogram",
        "# HELP sluicegate_upload_bytes_total File bytes uploaded, by provider",
        "# TYPE sluicegate_upload_bytes_total counter",
        "# HELP sluicegate_tokens_total Model tokens, by provider and kind",
        "# TYPE sluicegate_tokens_total counter",
        "# HELP sluicegate_inflight_requests API requests in flight",
        "# TYPE sluicegate_inflight_requests gauge",
        "# HELP sluicegate_draining 1 while the gateway drains",
        "# TYPE sluicegate_draining gauge",
    ])
    assert "sluicegate_inflight_requests 0.0" in text and "sluicegate_draining 0.0" in text


def test_metrics_are_served_as_prometheus_text():
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    assert Metrics().content_type == CONTENT_TYPE_LATEST and CONTENT_TYPE_LATEST.startswith("text/plain; version=")


async def test_the_provider_label_is_the_providers_name():
    from .fakes import OPENAI_A, config, providers

    metrics = Metrics()
    ex = exchange()
    ex.status, ex.file_bytes, ex.provider = 201, 10, providers(config(providers=[OPENAI_A]))["oa-a"]
    await MetricsFilter(metrics).on_exchange_end(ex)
    assert sample(metrics, "sluicegate_requests_total", operation="files.create", provider="oa-a", status="201") == 1
    assert sample(metrics, "sluicegate_upload_bytes_total", provider="oa-a") == 10


async def test_token_counts_that_are_not_counts_are_skipped_and_the_others_kept():
    metrics = Metrics()
    for usage in ({"input_tokens": "5", "output_tokens": 2}, {"input_tokens": True, "output_tokens": None},
                  {"input_tokens": -1, "output_tokens": 1}):
        ex = exchange()
        ex.status, ex.usage = 200, usage
        await MetricsFilter(metrics).on_exchange_end(ex)
    assert sample(metrics, "sluicegate_tokens_total", provider="-", kind="input_tokens") is None
    assert sample(metrics, "sluicegate_tokens_total", provider="-", kind="output_tokens") == 3


async def test_zero_tokens_show_the_series_at_zero():
    metrics = Metrics()
    ex = exchange()
    ex.status, ex.usage = 200, {"input_tokens": 0, "output_tokens": 0}
    await MetricsFilter(metrics).on_exchange_end(ex)
    assert sample(metrics, "sluicegate_tokens_total", provider="-", kind="output_tokens") == 0


# Two worker processes count into PROMETHEUS_MULTIPROC_DIR; a scrape in either shows the sum.
WORKER = """
import sys
from filters.metrics import Metrics
m = Metrics()
m.observe("files.list", "oa-a", 200, 0.002, 5, {"input_tokens": 4})
m.inflight.inc()
m.draining.set(int(sys.argv[1]))
sys.stdout.buffer.write(m.render())
"""


def test_worker_processes_report_the_whole_gateway(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import filters

    root = Path(filters.__file__).resolve().parents[1]  # the tree under test (mutmut: its mutants/)
    # This process, without the variable, keeps its own registry and sees none of the workers'
    # samples. (Built here too so that mutmut, which maps tests to the code they run in-process,
    # runs this test against Metrics' mutants; the workers inherit the mutant to test.)
    assert b"sluicegate_requests_total{" not in Metrics().render()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    outs = [subprocess.run([sys.executable, "-c", WORKER, flag], cwd=root, env=env, capture_output=True,
                           timeout=60, check=True).stdout.decode() for flag in ("0", "1")]
    text = outs[1]
    assert text.count("sluicegate_requests_total{") == 1  # the merged sample only, once
    assert 'sluicegate_requests_total{operation="files.list",provider="oa-a",status="200"} 2.0' in text
    assert 'sluicegate_upload_bytes_total{provider="oa-a"} 10.0' in text
    assert 'sluicegate_tokens_total{kind="input_tokens",provider="oa-a"} 8.0' in text
    assert "\nsluicegate_inflight_requests 2.0" in text  # livesum: one series, summed
    assert "\nsluicegate_draining 1.0" in text  # livemax
    assert 'sluicegate_requests_total{operation="files.list",provider="oa-a",status="200"} 1.0' in outs[0]


async def test_counts_of_one_loop_turn_are_written_at_its_end():
    metrics = Metrics()
    for _ in range(3):
        await MetricsFilter(metrics).on_exchange_end(_ended_exchange(0.003))
    labels = {"operation": "files.create", "provider": "-", "status": "200"}
    assert metrics._registry.get_sample_value("sluicegate_requests_total", labels) is None  # pending
    await asyncio.sleep(0)  # the next turn: written without any scrape
    assert metrics._registry.get_sample_value("sluicegate_requests_total", labels) == 3


def _ended_exchange(seconds: float, status: int = 200):
    ex = exchange()
    ex.status = status
    ex.ended = ex.started + seconds
    return ex


async def test_summed_counts_expose_exactly_what_one_observe_per_request_would():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from filters.metrics import BUCKETS
    # Every bucket, a value on each bound, between bounds, past the last (+Inf), zero; two statuses.
    values = [0.0, *BUCKETS, *(b * 0.999 for b in BUCKETS), *(b * 1.001 for b in BUCKETS), 61.0, 1e9]
    metrics = Metrics()
    reg = CollectorRegistry()
    requests = Counter("sluicegate_requests", "x", ("operation", "provider", "status"), registry=reg)
    duration = Histogram("sluicegate_request_duration_seconds", "x", ("operation", "provider"),
                         buckets=BUCKETS, registry=reg)
    for i, v in enumerate(values):
        status = 200 if i % 3 else 404
        ex = exchange()
        ex.status = status
        ex.ended = ex.started + v
        await MetricsFilter(metrics).on_exchange_end(ex)
        requests.labels(ex.operation, "-", str(status)).inc()
        duration.labels(ex.operation, "-").observe(ex.ended - ex.started)
    metrics.flush()
    want = {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in reg.collect() for s in m.samples if not s.name.endswith("_created")}
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics._registry.collect()
           for s in m.samples if s.name.startswith(("sluicegate_requests", "sluicegate_request_duration"))
           and not s.name.endswith("_created")}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
