#!/usr/bin/env python3
"""What one access-log line costs the request path, the old way and the new way (a few seconds).

    python bench/access_log_cost.py                 # 20,000 lines per case
    python bench/access_log_cost.py --lines 50000 --out /dev/shm/x.log

The line is what the ``access_log`` filter builds for a ``files.retrieve`` (a real
``Exchange``, the filter's own ``on_exchange_end``); what differs is the hand-off:

* ``sync``: the path up to 5645752 — ``logging.Logger.info`` → a handler that writes the line
  and flushes, on the caller's thread, per line (``SyncLineHandler`` below is that handler);
* ``queued``: ``proxy.logs.AccessLineHandler.put`` — a ``deque.append``; the handler's thread
  writes batches.

For each, two loops: **back to back** (the caller never blocks, as a saturated worker) and
**paced** (the caller sleeps ``--pace-us`` between lines, as a worker at c=1 waiting in epoll,
so the writer thread wakes for nearly every line). Columns, both CPU time (not wall time, so a
busy machine does not inflate them): the calling thread's per line (``time.thread_time``: the
request path's share, the line's building included) and the whole process's
(``time.process_time``: every thread, the writer's wake-ups and writes included). Output
goes to ``--out`` (a file; default a scratch file in /dev/shm or the temp dir) and to
``/dev/null``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from filters.access_log import AccessLogFilter  # noqa: E402
from proxy import logs  # noqa: E402
from proxy.exchange import Exchange  # noqa: E402


class SyncLineHandler(logging.Handler):
    """The access log's handler as it was (5645752): a write and a flush per record."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(record.msg + b"\n")
        self.stream.flush()


def _exchange() -> Exchange:
    req = SimpleNamespace(method="GET", path="/v1/files/file-abc123def456ghi789jkl012", content_length=None)
    ex = Exchange(req, "files.retrieve", "file-abc123def456ghi789jkl012")  # type: ignore[arg-type]
    ex.status = 200
    ex.provider = SimpleNamespace(name="openai")  # type: ignore[assignment]
    ex.first_byte_at = ex.started + 0.0002
    ex.ended = ex.started + 0.0003
    return ex


def _filter() -> AccessLogFilter:
    try:
        return AccessLogFilter(None)  # type: ignore[arg-type]
    except TypeError:  # a constructor with other arguments: the hook needs only the pid
        f = AccessLogFilter.__new__(AccessLogFilter)
        f.pid = os.getpid()
        return f


def _call(f: AccessLogFilter, ex: Exchange) -> None:
    """Run the async hook to completion without an event loop (it never awaits)."""
    coro = f.on_exchange_end(ex)
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("on_exchange_end awaited something")


def _install(mode: str, stream: IO[bytes]) -> Callable[[], None]:
    """Route the access log to ``stream`` the ``mode`` way; returns the undo."""
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if mode == "sync":
        h = SyncLineHandler(stream)
        logger.addHandler(h)
        logs._access_writer = None  # the filter falls back to logger.info, as before

        def undo() -> None:
            logger.removeHandler(h)
        return undo
    w = logs.AccessLineHandler(stream)
    logger.addHandler(w)
    logs._access_writer = w

    def undo_q() -> None:
        assert w.write_out(30), "queued lines not written"
        w.close()
        logger.removeHandler(w)
        logs._access_writer = None
    return undo_q


def _loop(call: Callable[[], None], lines: int, pace: float) -> tuple[float, float]:
    """(caller-thread CPU s, whole-process CPU s) for ``lines`` calls, ``pace`` s apart."""
    thread_time, sleep = time.thread_time, time.sleep
    cpu0, t0 = time.process_time(), thread_time()
    if pace:
        for _ in range(lines):
            call()
            sleep(pace)
    else:
        for _ in range(lines):
            call()
    return thread_time() - t0, time.process_time() - cpu0


def measure(mode: str, stream: IO[bytes], lines: int, pace: float) -> tuple[float, float]:
    """(caller CPU µs per line, process CPU µs per line): CPU time, not wall time, so other
    jobs on a shared machine do not inflate it. The paced loop's own cost (the sleeps) is
    measured alone and subtracted."""
    f, ex = _filter(), _exchange()
    undo = _install(mode, stream)
    writer = logs._access_writer
    try:
        for _ in range(200):  # warm-up: thread started, caches built
            _call(f, ex)
        if writer is not None:
            writer.write_out(30)
        caller, total = _loop(lambda: _call(f, ex), lines, pace)
        if writer is not None:
            t0, c0 = time.thread_time(), time.process_time()
            writer.write_out(30)  # the writes of the last batch count too (not the waiting)
            total += time.process_time() - c0 - (time.thread_time() - t0)
        if pace:
            idle_caller, idle_total = _loop(lambda: None, lines, pace)
            caller -= idle_caller
            total -= idle_total
    finally:
        undo()
    return caller / lines * 1e6, total / lines * 1e6


def build_cost(lines: int) -> float:
    """µs per line for building the fields and the orjson line alone (the level check included)."""
    f, ex = _filter(), _exchange()
    undo = _install("queued", open(os.devnull, "wb"))
    w = logs._access_writer
    logs._access_writer = SimpleNamespace(put=lambda line: None)  # type: ignore[assignment]
    try:
        caller, _ = _loop(lambda: _call(f, ex), lines, 0.0)
        return caller / lines * 1e6
    finally:
        logs._access_writer = w
        undo()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument("--pace-us", type=float, default=200.0, help="sleep between lines in the paced loop")
    p.add_argument("--out", default=None, help="the file to log to (default: a scratch file)")
    args = p.parse_args(argv)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    scratch = None
    if args.out is None:
        fd, scratch = tempfile.mkstemp(prefix="access-log-cost-", suffix=".log", dir=base)
        os.close(fd)
    out = args.out or scratch
    paced_lines = max(1000, args.lines // 10)
    sample = bytearray()
    try:
        print(f"access_log line hand-off, python {sys.version.split()[0]}, {args.lines:,} lines back to back, "
              f"{paced_lines:,} paced {args.pace_us:g} µs apart; file {out}")
        print(f"build fields + orjson line only (no hand-off): {build_cost(args.lines):.2f} µs/line")
        print(f"{'sink':10s} {'mode':7s} {'loop':13s} {'caller CPU µs':>14s} {'process CPU µs':>15s}")
        for sink in (out, os.devnull):
            for mode in ("sync", "queued"):
                for loop, n, pace in (("back to back", args.lines, 0.0), ("paced", paced_lines, args.pace_us / 1e6)):
                    with open(sink, "wb") as stream:
                        caller, cpu = measure(mode, stream, n, pace)
                    name = "file" if sink == out else "/dev/null"
                    print(f"{name:10s} {mode:7s} {loop:13s} {caller:14.2f} {cpu:15.2f}")
        with open(out, "rb") as fh:
            sample += fh.read(400)
        print("a line:", sample.split(b"\n", 1)[0].decode())
    finally:
        if scratch:
            os.unlink(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
