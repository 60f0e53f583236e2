"""Small, fast HTTP/1.1 clients for the benchmarks (no third-party HTTP stack in the way).

* :func:`run_load` – closed-loop load: ``concurrency`` keep-alive connections, each sending
  the same pre-encoded request as soon as the previous answer is complete. An
  ``asyncio.Protocol`` (under uvloop when installed) parses only the status line and
  ``Content-Length``, so a request costs the load generator ~10-20 µs of CPU.
* :func:`upload_file` – one multipart ``files.create`` whose file part is sent straight from
  disk with ``socket.sendfile`` (zero copy) and an exact ``Content-Length``.
* :func:`download` – one GET whose body is received into a reused buffer and counted
  (Content-Length or chunked), never kept.
* :func:`sse_first_event` – one streaming request: time to the first complete SSE event and
  to the end of the stream.

Everything is measured with ``time.perf_counter``; connection set-up is outside the timed
window for :func:`sse_first_event` and inside it for uploads/downloads (it is negligible
next to hundreds of MiB).
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

_CL_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.I)


def build_request(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    """Encode a request; ``Content-Length`` is added for a body unless ``headers`` has one."""
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for k, v in headers.items():
        lines.append(f"{k}: {v}")
    has_length = any(k.lower() == "content-length" for k in headers)
    if not has_length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ============================================================================ closed-loop load
@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        lat = sorted(self.latencies)
        k = min(len(lat) - 1, max(0, int(round(p / 100 * len(lat) + 0.5)) - 1))
        return lat[k]


class _LoadConn(asyncio.Protocol):
    __slots__ = ("transport", "buf", "end", "status", "waiter", "closed")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.end = -1
        self.status = 0
        self.waiter: asyncio.Future | None = None
        self.closed: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.end < 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i])
            m = _CL_RE.search(head)
            if m is None:
                self._fail(RuntimeError("load response without Content-Length: " + head[:200].decode("latin-1")))
                return
            self.status = int(head[9:12])
            self.end = i + 4 + int(m.group(1))
        if len(buf) >= self.end:
            del buf[: self.end]
            self.end = -1
            w, self.waiter = self.waiter, None
            if w is not None and not w.done():
                w.set_result(self.status)

    def _fail(self, exc: BaseException) -> None:
        self.closed = exc
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionResetError("server closed the connection"))


async def _open(host: str, port: int) -> _LoadConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_LoadConn, host, port)
    return proto


async def run_load(host: str, port: int, request: bytes, *, concurrency: int, duration: float,
                   warmup: float = 0.5, max_requests: int = 1_000_000,
                   on_start: "Callable[[], None] | None" = None,
                   on_end: "Callable[[], None] | None" = None,
                   rate: float | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` connections for ``warmup`` then ``duration`` seconds (or
    ``max_requests`` measured requests), whichever ends first. Only the measured window counts;
    ``on_start``/``on_end`` are called at its edges (e.g. to snapshot CPU times).

    With ``rate`` (requests/s in total), each connection sends on a fixed schedule instead
    (every ``concurrency / rate`` s, random phase), or at once when it is behind schedule: the
    latency of a fixed offered load, not of a saturated server."""
    loop = asyncio.get_running_loop()
    conns = [await _open(host, port) for _ in range(concurrency)]
    result = LoadResult()
    lat = result.latencies
    statuses = result.statuses
    pc = time.perf_counter
    budget = [max_requests]

    interval = concurrency / rate if rate else 0.0

    async def worker(conn: _LoadConn, until: float, record: bool) -> None:
        write = conn.transport.write  # type: ignore[union-attr]
        next_at = pc() + random.random() * interval
        while True:
            if interval:
                delay = next_at - pc()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            t0 = pc()
            if t0 >= until or (record and budget[0] <= 0):
                return
            if record:
                budget[0] -= 1
            if conn.closed is not None:
                raise conn.closed
            fut = loop.create_future()
            conn.waiter = fut
            write(request)
            status = await fut
            if record:
                lat.append(pc() - t0)
                statuses[status] = statuses.get(status, 0) + 1

    try:
        if warmup > 0:
            until = pc() + warmup
            await asyncio.gather(*(worker(c, until, False) for c in conns))
        if on_start is not None:
            on_start()
        start = pc()
        until = start + duration
        await asyncio.gather(*(worker(c, until, True) for c in conns))
        result.seconds = pc() - start
        if on_end is not None:
            on_end()
    except Exception as exc:  # noqa: BLE001 - reported in the result
        result.first_error = f"{type(exc).__name__}: {exc}"
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    result.requests = len(lat)
    result.errors = sum(n for s, n in statuses.items() if s >= 400)
    if result.errors and result.first_error is None:
        result.first_error = f"statuses {statuses}"
    return result


# ============================================================================ blocking helpers
class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder (bytes in, body bytes out)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0  # body bytes left in the current chunk (+2 for its CRLF once known)
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers, 4 done
        self.done = False

    def feed(self, data: bytes | memoryview) -> bytes:
        self._buf += data
        out = bytearray()
        buf = self._buf
        while True:
            if self._state == 0:
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(bytes(buf[:i]).split(b";", 1)[0], 16)
                del buf[: i + 2]
                if size == 0:
                    self._state = 3
                else:
                    self._left, self._state = size, 1
            elif self._state == 1:
                if not buf:
                    break
                n = min(self._left, len(buf))
                out += buf[:n]
                del buf[:n]
                self._left -= n
                if self._left == 0:
                    self._state = 2
            elif self._state == 2:
                if len(buf) < 2:
                    break
                del buf[:2]
                self._state = 0
            elif self._state == 3:
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(buf[:i])
                del buf[: i + 2]
                if not line:
                    self._state = 4
                    self.done = True
                    break
            else:
                break
        return bytes(out)


def _connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bytearray]:
    """Read up to the end of the response head; return (status, head, rest-of-buffer)."""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = bytes(buf[:i])
            return int(head[9:12]), head, buf[i + 4:]
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[int, bytes, bytes]:
    """A whole (small) response: (status, head, body)."""
    status, head, rest = _read_head(sock, buf if buf is not None else bytearray())
    m = _CL_RE.search(head)
    if m is not None:
        n = int(m.group(1))
        while len(rest) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed mid-body")
            rest += data
        return status, head, bytes(rest[:n])
    if _CHUNKED_RE.search(head):
        dec = ChunkedDecoder()
        body = bytearray(dec.feed(rest))
        while not dec.done:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed mid-body")
            body += dec.feed(data)
        return status, head, bytes(body)
    while True:  # read to close
        data = sock.recv(65536)
        if not data:
            return status, head, bytes(rest)
        rest += data


def request(host: str, port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b"") -> tuple[int, bytes]:
    """One small request on a fresh connection: (status, body)."""
    with _connect(host, port) as s:
        s.sendall(build_request(method, path, f"{host}:{port}", {**(headers or {}), "Connection": "close"}, body))
        status, _, data = read_response(s)
        return status, data


def multipart_envelope(purpose: str, filename: str, boundary: str | None = None) -> tuple[str, bytes, bytes]:
    """(content type, bytes before the file content, bytes after it) — the shape the OpenAI
    SDK (httpx) sends: form fields first, then the file part."""
    boundary = boundary or uuid.uuid4().hex
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", pre, post


def upload_file(host: str, port: int, path: str, file_path: str, *, purpose: str = "user_data",
                headers: dict[str, str] | None = None) -> tuple[float, int, bytes]:
    """POST a multipart upload of ``file_path``; returns (seconds, status, response body)."""
    size = os.path.getsize(file_path)
    ctype, pre, post = multipart_envelope(purpose, os.path.basename(file_path))
    hdrs = {**(headers or {}), "Content-Type": ctype, "Content-Length": str(len(pre) + size + len(post)),
            "Connection": "close"}
    head = build_request("POST", path, f"{host}:{port}", hdrs)
    t0 = time.perf_counter()
    with _connect(host, port) as s, open(file_path, "rb") as fh:
        try:
            s.sendall(head + pre)
            sent = s.sendfile(fh)
            if sent != size:
                raise RuntimeError(f"sendfile sent {sent} of {size} bytes")
            s.sendall(post)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (e.g. 413); read its answer below
        status, _, body = read_response(s)
    return time.perf_counter() - t0, status, body


def download(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """GET ``path``, counting the body; returns (seconds, status, body bytes, framing)."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with _connect(host, port) as s:
        s.sendall(build_request("GET", path, f"{host}:{port}", {**(headers or {}), "Connection": "close"}))
        status, head, rest = _read_head(s, bytearray())
        m = _CL_RE.search(head)
        if m is not None:
            want = int(m.group(1))
            got = len(rest)
            while got < want:
                n = s.recv_into(view)
                if not n:
                    break
                got += n
            framing = "content-length"
        elif _CHUNKED_RE.search(head):
            dec = ChunkedDecoder()
            got = len(dec.feed(rest))
            while not dec.done:
                n = s.recv_into(view)
                if not n:
                    break
                got += len(dec.feed(view[:n]))
            framing = "chunked"
        else:
            got = len(rest)
            while n := s.recv_into(view):
                got += n
            framing = "close"
    return time.perf_counter() - t0, status, got, framing


def sse_first_event(host: str, port: int, req: bytes) -> tuple[float, float, int, int]:
    """Send a streaming request on a fresh (already connected) socket; return (seconds to the
    first complete SSE event, seconds to the end of the stream, events, status)."""
    with _connect(host, port) as s:
        t0 = time.perf_counter()
        s.sendall(req)
        status, head, rest = _read_head(s, bytearray())
        chunked = _CHUNKED_RE.search(head) is not None
        dec = ChunkedDecoder() if chunked else None
        body = bytearray(dec.feed(rest) if dec else rest)
        first = None
        events = 0
        scanned = 0
        while True:
            while True:
                i = body.find(b"\n\n", scanned)
                if i < 0:
                    scanned = max(0, len(body) - 1)
                    break
                events += 1
                scanned = i + 2
                if first is None:
                    first = time.perf_counter() - t0
            if dec is not None and dec.done:
                break
            data = s.recv(65536)
            if not data:
                break
            body += dec.feed(data) if dec else data
        total = time.perf_counter() - t0
    return (first if first is not None else float("nan")), total, events, status
