"""Per-request cost of the metrics (filters/metrics.py) in prometheus_client's multiprocess mode.

    python3 bench/metrics_cost.py

Times the ``metrics`` filter's ``on_exchange_end`` for a plain request (one counter and one
histogram sample: three writes into the memory-mapped files), one with upload bytes and token
usage, and the in-flight gauge's inc + dec, in µs per request (best of three rounds). The
filter sums the counts of one event-loop turn and writes them at its end (filters/metrics.py):
each figure is given for 1 request per turn (c=1: every request pays the writes) and 20 (a busy
c=64 worker's turn). A second or two of CPU; the figures are in README.md ("Metrics").
"""
from __future__ import annotations

import asyncio
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.metrics_dir import private_metrics_dir  # noqa: E402

N = 100_000


class _Provider:
    name = "local"


class _Exchange:
    operation = "files.retrieve"
    provider = _Provider()
    status = 200
    file_bytes = 0
    usage = None
    started = 0.0
    ended = 0.0123


def per_call_us(fn) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(fn, number=N, repeat=3)) / N * 1e6


def main() -> None:
    with private_metrics_dir():
        from filters.metrics import Metrics, MetricsFilter

        metrics = Metrics()
        flt = MetricsFilter(metrics)
        plain, upload = _Exchange(), _Exchange()
        upload.operation, upload.file_bytes = "files.create", 1000
        upload.usage = {"input_tokens": 3, "output_tokens": 4}

        def end(ex, per_turn: int):  # type: ignore[no-untyped-def]
            calls = [0]

            def run() -> None:
                try:
                    flt.on_exchange_end(ex).send(None)  # the coroutine never awaits
                except StopIteration:
                    pass
                calls[0] += 1
                if calls[0] % per_turn == 0:
                    metrics.flush()  # what the end of the loop turn does
            return run

        async def inside_a_loop() -> None:
            for per_turn in (1, 20):
                print(f"on_exchange_end, plain request, {per_turn:2d}/turn:   {per_call_us(end(plain, per_turn)):.2f} µs")
                print(f"on_exchange_end, upload + usage, {per_turn:2d}/turn: {per_call_us(end(upload, per_turn)):.2f} µs")
            print(f"in-flight gauge inc + dec:                 "
                  f"{per_call_us(lambda: (metrics.inflight.inc(), metrics.inflight.dec())):.2f} µs")

        asyncio.run(inside_a_loop())


if __name__ == "__main__":
    main()
