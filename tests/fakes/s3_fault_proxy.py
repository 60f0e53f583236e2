"""A loopback proxy in front of the real ``moto_server`` that makes S3 fail on cue and counts
what it is asked.

moto has no fault injection, so a test points a provider's ``endpoint_url`` here: every
request is forwarded to moto unchanged, except that the next ``times`` requests of an
operation chosen with :meth:`S3FaultProxy.fail` are answered with S3's own 500
``InternalError`` (an XML error body, as S3 sends it) without reaching moto. ``attempts``
counts every request by ``(operation, part number)`` (the part number is 0 outside
``UploadPart``), failed or forwarded, so a test can tell how often the gateway tried.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from tests.fakes.threaded import ThreadedServer

# Hop-by-hop or recomputed: aiohttp sets its own on each leg.
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect", "keep-alive"})

INTERNAL_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                  b"<Message>We encountered an internal error. Please try again.</Message>"
                  b"<RequestId>FAULT0000000001</RequestId></Error>")


def operation(request: web.Request) -> str:
    """The S3 operation of a request, for the operations the gateway's uploads use."""
    q, method = request.query, request.method
    if method == "PUT" and "partNumber" in q and "uploadId" in q:
        return "UploadPartCopy" if "x-amz-copy-source" in request.headers else "UploadPart"
    if method == "POST" and "uploads" in q:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload"
    if method == "PUT" and request.path.count("/") >= 2 and not q:
        return "CopyObject" if "x-amz-copy-source" in request.headers else "PutObject"
    return f"{method} {'?'.join(sorted(q)) or 'object'}"


class S3FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.attempts: Counter[tuple[str, int]] = Counter()
        self._faults: Counter[str] = Counter()
        self._lock = threading.Lock()          # the test thread sets faults, the server thread takes them
        app = web.Application(client_max_size=64 << 20)
        app.cleanup_ctx.append(self._session_ctx)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._server = ThreadedServer(app)

    def fail(self, op: str, times: int) -> None:
        """Answer the next ``times`` requests of ``op`` with a 500 ``InternalError``."""
        with self._lock:
            self._faults[op] += times

    def reset(self) -> None:
        """Forget the faults still queued and the attempts counted."""
        with self._lock:
            self._faults.clear()
            self.attempts.clear()

    def parts(self) -> dict[int, int]:
        """``UploadPart`` requests seen so far, by part number."""
        with self._lock:
            return {part: n for (name, part), n in self.attempts.items() if name == "UploadPart"}

    def count(self, op: str) -> int:
        """Requests of ``op`` seen so far, all parts together."""
        with self._lock:
            return sum(n for (name, _), n in self.attempts.items() if name == op)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> S3FaultProxy:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        yield
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        op = operation(request)
        body = await request.read()
        part = int(request.query.get("partNumber", "0")) if op == "UploadPart" else 0
        with self._lock:
            self.attempts[(op, part)] += 1
            failing = self._faults[op] > 0
            if failing:
                self._faults[op] -= 1
        if failing:
            return web.Response(status=500, body=INTERNAL_ERROR, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        url = URL(self.target + request.raw_path, encoded=True)   # the key exactly as the client encoded it
        async with self._session.request(request.method, url, headers=headers,
                                         data=body) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED}
            return web.Response(status=resp.status, headers=out, body=payload)
