"""Plain helpers shared by the tests and the fakes: bounded waits on a positive event, the
gateway's SQLite store read from outside, and hand-built multipart uploads.

A module of its own rather than ``conftest.py``: the fakes (also started by ``bench/``) and
the tests import these functions, and ``conftest.py`` is pytest's fixture file, which pulls in
pytest and the SDK. Fixtures stay in ``conftest.py``.
"""
from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import httpx2 as httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.gateway_proc import GatewayProcess

T = TypeVar("T")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed; whether it held.
    It is asked once more at the deadline, so a slow machine gets the whole timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_for(what: str, check: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something true, and return that; after ``timeout``
    seconds raise ``AssertionError("timed out waiting for <what>")``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# Longer than the access log's batching delay (~100 ms, proxy/logs.py): a count that holds
# this long includes every exchange that had ended when the mark was asked for.
_LOG_SETTLE = 0.25


def exchanges(gw: GatewayProcess) -> int:
    """How many exchanges the gateway has logged so far: a mark for :func:`wait_for_exchange`.

    Lines reach the log in batches, so the count is read until it stops moving: a mark taken
    too early would let a later wait match an earlier exchange's line."""
    deadline = time.monotonic() + 10
    count = len(gw.access_log())
    while time.monotonic() < deadline:
        time.sleep(_LOG_SETTLE)
        now = len(gw.access_log())
        if now == count:
            break
        count = now
    return count


def wait_for_exchange(gw: GatewayProcess, n: int = 1, *, since: int = 0, timeout: float = 20.0,
                      **fields: Any) -> dict[str, Any]:
    """Wait for the ``n``-th access-log line after the first ``since`` whose values include
    ``fields`` (``op="files.create", status=400``) and return it.

    The ``access_log`` filter writes that line when the exchange has ended, after the
    operation's own clean-up: a test that checks something did *not* happen (nothing went
    upstream, nothing was stored, nothing was left behind) waits for it first, so it cannot
    pass by looking too early."""
    def nth() -> dict[str, Any] | None:
        lines = [line for line in gw.access_log()[since:] if all(line.get(k) == v for k, v in fields.items())]
        return lines[n - 1] if len(lines) >= n else None
    return wait_for(f"access-log line #{n} with {fields}", nth, timeout)


async def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """:func:`wait_until` inside an event loop: ``check`` may be a coroutine function, and the
    loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


# -- the gateway's metrics ------------------------------------------------------------------------


def scrape(gw: GatewayProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics over a new connection (so any worker may answer): sample name → (labels, value)."""
    r = httpx.get(gw.url + "/metrics", headers={"Connection": "close"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def inflight(gw: GatewayProcess) -> float:
    """``sluicegate_inflight_requests``: API requests the gateway has accepted and not finished."""
    return total(scrape(gw), "sluicegate_inflight_requests")


# -- the gateway's store, read from outside the process -----------------------------------------


def db_rows(gw: GatewayProcess, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the gateway's default SQLite store (``<workdir>/sluicegate-data``)."""
    with sqlite3.connect(gw.workdir / "sluicegate-data" / "sluicegate.db", timeout=10) as db:
        return db.execute(sql, params).fetchall()


def location(gw: GatewayProcess, file_id: str) -> dict[str, Any] | None:
    """The provider location the store records for ``file_id``; None once the row is gone."""
    rows = db_rows(gw, "SELECT location FROM files WHERE id = ?", (file_id,))
    return orjson.loads(rows[0][0]) if rows else None


def store_rows(gw: GatewayProcess) -> int:
    return db_rows(gw, "SELECT COUNT(*) FROM files")[0][0]


def expire_now(gw: GatewayProcess, file_id: str) -> None:
    """Let an hour pass for one file: its ``expires_at`` is moved into the past, so the next
    expiry sweep removes it."""
    db_rows(gw, "UPDATE files SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, file_id))


# -- uploads the SDK would not send ---------------------------------------------------------------


def raw_upload(gw: GatewayProcess, parts: list[tuple[str, str | None, bytes]], headers: dict[str, str] | None = None,
               *, api_key: str = "sk-none", timeout: float = 60) -> httpx.Response:
    """``POST /files`` with the form ``parts`` (name, filename or None, value) in this order."""
    boundary = "b0undary"
    body = b""
    for name, filename, value in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return httpx.post(gw.base_url + "/files", content=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {api_key}",
        **(headers or {})}, timeout=timeout)
