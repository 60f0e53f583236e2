"""A lean keep-alive HTTP/1.1 client for small buffered upstream calls, and SSE streams.

``aiohttp.ClientSession.request`` costs ~130 µs of CPU per small JSON exchange; this costs
~55 µs, of which ~20 µs is the kernel + event loop floor any client pays (see the benchmark in
tests/test_h1.py). ``H1Pool.request`` serves the buffered hot path (files.retrieve/list/delete,
non-streaming responses.create): the request body is in memory, the response body is read
whole (bounded by ``max_body_size``). ``H1Pool.stream`` serves response streams (Responses API
``stream: true``): the request body is in memory, the response body is handed over piece by
piece as it arrives (:class:`H1Stream`). Uploads and downloads stay on aiohttp.

Two layers:

* :class:`ResponseParser` -- sans-IO HTTP/1.1 response parser (``bytes.find`` and compiled
  regexes, no per-byte Python loops). Feed it bytes, get an :class:`H1Response` back when the
  response is complete (``feed``), or the head then the body pieces as they come
  (``feed_stream``).
* :class:`H1Pool` -- one origin, keep-alive connections (``asyncio.Protocol``) kept in a LIFO,
  at most ``limit`` open, waiters queued. A request on a reused connection that got no response
  byte before the connection died (stale keep-alive) is retried once on a new connection for
  idempotent methods; for POST (and PATCH) :class:`H1ConnectionError` tells the caller what
  happened (``reused``, ``response_started``) so it can decide.

Timeouts (the gateway's one model, README ``timeouts``): ``connect_timeout`` bounds opening a
connection (TCP, proxy tunnel, TLS handshake); ``read_timeout`` is the longest gap between two
reads from the upstream -- from the request being sent to the first response byte, and between
any two pieces of the response, on buffered calls and streams alike; ``timeout``, if given,
bounds the whole exchange. Waiting for a slot / connecting runs under ``asyncio.timeout_at``;
the response wait is bounded by one lazily re-armed timer per connection instead (a uvloop
timer per request costs ~10 µs; steady-state this costs none). A pool belongs to the event
loop that first uses it.

Egress proxy (``proxy=``, an :class:`~proxy.providers.egress.EgressProxy`): an https origin
is reached through an HTTP ``CONNECT`` tunnel, then TLS to the origin over it
(``loop.start_tls``); an http origin gets absolute-form request targets. Both carry the
proxy's ``Proxy-Authorization`` when it has credentials.

Nothing is added to a request beyond ``Host`` and ``Content-Length``: no User-Agent, no
Accept-Encoding (bodies arrive as the upstream sent them, never decoded), no cookies. Header
text is encoded/decoded as UTF-8 with ``surrogateescape``, as aiohttp does, so non-ASCII bytes
round-trip unchanged.
"""
from __future__ import annotations

import asyncio
import re
import ssl as _ssl
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import orjson
from multidict import CIMultiDict

from .egress import EgressProxy

__all__ = [
    "H1Response", "H1Stream", "H1ProtocolError", "H1ConnectionError", "H1ConnectError", "ResponseParser", "H1Pool",
    "UNBOUNDED",
]


# ----------------------------------------------------------------------------- results, errors


@dataclass(slots=True, eq=False)
class H1Response:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes
    keep_alive: bool

    def json(self) -> Any:
        return orjson.loads(self.body)


class H1ProtocolError(Exception):
    """The peer sent something that is not a valid HTTP/1.x response (or more than one)."""


class H1ConnectionError(ConnectionError):
    """The connection failed before a complete response arrived.

    ``reused``: the connection had already served a response (keep-alive reuse).
    ``response_started``: at least one response byte had been received.
    ``reused and not response_started`` is the stale keep-alive case: the server most likely
    closed the idle connection before reading the request, so it is safe to send again.
    """

    def __init__(self, message: str, *, reused: bool, response_started: bool) -> None:
        super().__init__(message)
        self.reused = reused
        self.response_started = response_started


class H1ConnectError(H1ConnectionError):
    """Could not open a connection (refused, unreachable, DNS, TLS handshake): nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reused=False, response_started=False)


# ----------------------------------------------------------------------------- parser

_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
# Header lines: a token, a colon, a value without CTLs (HTAB allowed), CRLF. One C-level pass
# validates the whole block; str.split/partition then cut it (faster than capturing groups).
_HEADER_BLOCK_RE = re.compile(rf"(?:{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_STATUS_RE = re.compile(r"HTTP/1\.[01] [0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
_HEAD_RE = re.compile(_STATUS_RE.pattern + _HEADER_BLOCK_RE.pattern)  # a whole head, in one pass
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?")

_MAX_CHUNK_LINE = 4096
UNBOUNDED = 1 << 62  # max_body_size for streams: no limit (a Content-Length has at most 18 digits)

# parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _EOF, _DONE, _ERROR = range(9)


class ResponseParser:
    """Sans-IO parser for ONE HTTP/1.x response (interim 1xx responses are skipped).

    ``feed(data)`` returns the :class:`H1Response` once it is complete, else ``None``.
    ``feed_eof()`` completes a close-delimited body (returns the response) and raises
    :class:`H1ProtocolError` if the response is incomplete; after completion it returns None.
    Bytes past the end of the response are kept in :attr:`surplus`; on a keep-alive response
    they are an error (we never pipeline, so the server sent something unasked for).
    ``head_request=True``: the response answers a HEAD request and has no body.
    ``feed_stream(data)`` is the incremental mode (head, then body pieces as they come).
    """

    __slots__ = (
        "max_header_size", "max_body_size", "head_request", "surplus",
        "_buf", "_scan", "_state", "_need", "_parts", "_size", "_trailer_size",
        "_status", "_reason", "_pairs", "_keep_alive", "_seen",
    )

    def __init__(self, max_header_size: int = 64 * 1024, max_body_size: int = 64 * 1024 * 1024, *,
                 head_request: bool = False) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.head_request = head_request
        self.surplus = b""
        self._buf = bytearray()  # unconsumed bytes (only while a head / line is incomplete)
        self._scan = 0  # where to resume searching for the end of the head in _buf
        self._state = _HEAD
        self._need = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._trailer_size = 0
        self._status = 0
        self._reason = ""
        self._pairs: list[tuple[str, str]] = []
        self._keep_alive = False
        self._seen = False

    # -- public

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    @property
    def needs_eof(self) -> bool:
        """The body is close-delimited: only the end of the connection completes it."""
        return self._state == _EOF

    @property
    def started(self) -> bool:
        """Any byte has been received."""
        return self._seen

    def feed(self, data: bytes) -> H1Response | None:
        state = self._state
        if state == _DONE:
            if data:
                self.surplus += data
                if self._keep_alive:
                    self._state = _ERROR
                    raise H1ProtocolError("unexpected data after response")
            return None
        if state == _ERROR:
            raise H1ProtocolError("parser is in an error state")
        if not data:
            return None
        self._advance(data)
        return self._response() if self._state == _DONE else None

    def _advance(self, data: bytes) -> None:
        """Run the state machine over the held bytes plus ``data``; keep what is unconsumed."""
        self._seen = True
        buf = self._buf
        if buf:
            buf += data
            data = buf
        try:
            pos = self._run(data)
        except H1ProtocolError:
            self._state = _ERROR
            raise
        n = len(data)
        if self._state == _DONE:
            if pos < n:
                self.surplus = bytes(data[pos:])
                if self._keep_alive:
                    self._state = _ERROR
                    raise H1ProtocolError("unexpected data after response")
            if data is buf:
                buf.clear()
        elif data is buf:
            if pos:
                del buf[:pos]
        elif pos < n:
            buf += memoryview(data)[pos:]

    def feed_stream(self, data: bytes) -> tuple[H1Response | None, bytes]:
        """Incremental mode: ``(head, body)`` for what ``data`` completed.

        ``head`` is an :class:`H1Response` with an empty body, returned once, by the call that
        completes the head (else None). ``body`` is all the body data (framing stripped) this
        call decoded, b"" if none; a chunk's data is returned as it arrives, not when the chunk
        is whole. :attr:`complete` tells when the body is done; a close-delimited body
        (:attr:`needs_eof`) is ended by :meth:`feed_eof`. Errors and surplus bytes as for
        :meth:`feed` (body data decoded by the failing call is dropped). Use one mode per
        parser; create it with ``max_body_size=UNBOUNDED`` for an unbounded stream.
        """
        state = self._state
        if state == _DONE or state == _ERROR or not data:
            self.feed(data)  # surplus (an error on a keep-alive response) / sticky error / no-op
            return None, b""
        self._advance(data)
        head = None
        if state == _HEAD and self._state != _HEAD:
            head = H1Response(self._status, self._reason, CIMultiDict(self._pairs), b"", self._keep_alive)
        parts = self._parts
        if not parts:
            return head, b""
        self._parts = []
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return head, body if type(body) is bytes else bytes(body)

    def feed_eof(self) -> H1Response | None:
        state = self._state
        if state == _EOF:
            self._state = _DONE
            return self._response()
        if state == _DONE:
            return None
        if state == _HEAD and not self.started:
            raise H1ProtocolError("connection closed before any response byte")
        self._state = _ERROR
        raise H1ProtocolError("connection closed before the response was complete")

    # -- internals

    def _response(self) -> H1Response:
        parts = self._parts
        if not parts:
            body = b""
        elif len(parts) == 1:
            body = bytes(parts[0])
        else:
            body = b"".join(parts)
        self._parts = []
        return H1Response(self._status, self._reason, CIMultiDict(self._pairs), body, self._keep_alive)

    def _run(self, buf: bytes | bytearray) -> int:
        """Consume as much of ``buf`` as possible; return the position reached."""
        pos = 0
        n = len(buf)
        while True:
            state = self._state
            if state == _HEAD:
                new = self._head(buf, pos, n)
                if new == pos:  # incomplete head (a skipped 1xx head moves on)
                    return pos
                pos = new
            elif state == _LENGTH:
                avail = n - pos
                need = self._need
                if avail < need:
                    if avail:
                        self._parts.append(buf[pos:])
                        self._need = need - avail
                    return n
                self._parts.append(buf[pos:pos + need])
                self._state = _DONE
                return pos + need
            elif state == _CHUNK_SIZE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if n - pos > _MAX_CHUNK_LINE:
                        raise H1ProtocolError("chunk size line too long")
                    return pos
                if nl - pos > _MAX_CHUNK_LINE:
                    raise H1ProtocolError("chunk size line too long")
                m = _CHUNK_SIZE_RE.fullmatch(buf, pos, nl)
                if m is None:
                    raise H1ProtocolError("bad chunk size line")
                size = int(m.group(1), 16)
                pos = nl + 1
                if size == 0:
                    self._state = _TRAILERS
                    self._trailer_size = 0
                else:
                    self._size += size
                    if self._size > self.max_body_size:
                        raise H1ProtocolError("response body too large")
                    self._need = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                avail = n - pos
                if not avail:
                    return pos
                need = self._need
                if avail < need:
                    self._parts.append(buf[pos:])
                    self._need = need - avail
                    return n
                self._parts.append(buf[pos:pos + need])
                pos += need
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if pos >= n:
                    return pos
                c = buf[pos]
                if c == 10:  # bare LF
                    pos += 1
                elif c == 13:
                    if pos + 1 >= n:
                        return pos
                    if buf[pos + 1] != 10:
                        raise H1ProtocolError("bad chunk terminator")
                    pos += 2
                else:
                    raise H1ProtocolError("bad chunk terminator")
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                nl = buf.find(b"\n", pos)
                limit = self.max_header_size - self._trailer_size
                if nl < 0:
                    if n - pos > limit:
                        raise H1ProtocolError("trailer section too large")
                    return pos
                if nl - pos > limit:
                    raise H1ProtocolError("trailer section too large")
                line_len = nl - pos
                if line_len == 0 or (line_len == 1 and buf[pos] == 13):
                    self._state = _DONE
                    return nl + 1
                self._trailer_size += line_len + 1  # trailer fields are skipped
                pos = nl + 1
            elif state == _EOF:
                if pos < n:
                    self._size += n - pos
                    if self._size > self.max_body_size:
                        raise H1ProtocolError("response body too large")
                    self._parts.append(buf[pos:])
                return n
            else:  # _DONE
                return pos

    def _head(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        # The head ends at the first empty line: "\n\r\n" (CRLF heads) or "\n\n" (bare LF).
        start = pos + self._scan
        i = buf.find(b"\n\r\n", start)
        if i >= 0:
            end, nxt = i + 1, i + 3
        else:
            j = buf.find(b"\n\n", start)
            if j < 0:
                if n - pos > self.max_header_size:
                    raise H1ProtocolError("response header section too large")
                self._scan = max(0, n - pos - 2)  # relative to the start of the kept bytes
                return pos
            end, nxt = j + 1, j + 2
        self._scan = 0
        if nxt - pos > self.max_header_size:
            raise H1ProtocolError("response header section too large")
        text = buf[pos:end].decode("utf-8", "surrogateescape")
        if _HEAD_RE.fullmatch(text) is None:
            # Not a clean CRLF head: maybe bare-LF line ends (the head may then end earlier,
            # at a "\n\n" the CRLF search skipped), else an error.
            if i >= 0:
                j = buf.find(b"\n\n", pos, i + 2)
                if j >= 0:
                    end, nxt = j + 1, j + 2
                    text = buf[pos:end].decode("utf-8", "surrogateescape")
            text = _normalize_head(text)
            if _HEAD_RE.fullmatch(text) is None:
                if _STATUS_RE.match(text) is None:
                    raise H1ProtocolError(f"bad status line: {text.partition(chr(13))[0][:60]!r}")
                block = text[text.index("\n") + 1:]
                if block[:1] in (" ", "\t") or "\n " in block or "\n\t" in block:
                    raise H1ProtocolError("obs-fold header line not supported")
                raise H1ProtocolError("invalid header line")
        # validated: "HTTP/1.x NNN[ reason]\r\n" then "name:value\r\n" lines
        hstart = text.index("\n") + 1
        status = int(text[9:12])
        if status < 200:
            if status == 101:
                raise H1ProtocolError("unexpected 101 Switching Protocols")
            if status < 100:
                raise H1ProtocolError(f"bad status code {status}")
            return nxt  # interim 1xx: skipped, the real response follows
        self._status = status
        self._reason = text[13:hstart - 2]
        http11 = text[7] == "1"

        # Cut the (validated) block; spot the framing headers by length, lower() only those.
        pairs: list[tuple[str, str]] = []
        content_length = transfer_encoding = connection = None
        if hstart != len(text):
            append = pairs.append
            for line in text[hstart:-2].split("\r\n"):
                name, _, value = line.partition(":")
                value = value.strip(" \t")
                append((name, value))
                ln = len(name)
                if ln == 14:
                    if name.lower() == "content-length":
                        content_length = value if content_length is None else f"{content_length},{value}"
                elif ln == 17:
                    if name.lower() == "transfer-encoding":
                        transfer_encoding = value if transfer_encoding is None else f"{transfer_encoding},{value}"
                elif ln == 10:
                    if name.lower() == "connection":
                        connection = value if connection is None else f"{connection},{value}"
        self._pairs = pairs
        if connection is None:
            keep_alive = http11
        else:
            connection = connection.lower()
            tokens = [t.strip() for t in connection.split(",")] if "," in connection else (connection,)
            keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)

        if self.head_request or status == 204 or status == 304:
            self._keep_alive = keep_alive
            self._state = _DONE
            return nxt
        if transfer_encoding is not None:
            codings = [t.strip() for t in transfer_encoding.lower().split(",")]
            if content_length is not None:
                keep_alive = False  # both present: TE wins, but never reuse (smuggling hazard)
            if codings[-1] == "chunked":
                self._state = _CHUNK_SIZE
            else:
                keep_alive = False
                self._state = _EOF
        elif content_length is not None:
            v = content_length
            if "," in v:  # repeated (header or list): all copies must agree
                values = {x.strip() for x in v.split(",")}
                if len(values) != 1:
                    raise H1ProtocolError("conflicting Content-Length values")
                v = values.pop()
            if not (v.isascii() and v.isdigit()) or len(v) > 18:
                raise H1ProtocolError("bad Content-Length")
            length = int(v)
            if length > self.max_body_size:
                raise H1ProtocolError("response body too large")
            if length == 0:
                self._state = _DONE
            else:
                self._need = length
                self._state = _LENGTH
        else:
            keep_alive = False
            self._state = _EOF
        self._keep_alive = keep_alive
        return nxt


def _normalize_head(text: str) -> str:
    """A head with bare-LF line ends, rewritten with CRLF (a stray CR is an error)."""
    lf = text.replace("\r\n", "\n")
    if "\r" in lf:
        raise H1ProtocolError("bare CR in response head")
    return lf.replace("\n", "\r\n")


# ----------------------------------------------------------------------------- connections

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT"})
_EMPTY_BODY_CL = frozenset({"POST", "PUT", "PATCH"})
_RESERVED = frozenset({"host", "content-length", "transfer-encoding"})
_RESERVED_LENS = frozenset(len(h) for h in _RESERVED)
_SMALL_BODY = 64 * 1024


class _H1Connection(asyncio.Protocol):
    __slots__ = ("pool", "loop", "transport", "parser", "waiter", "closed", "served", "started",
                 "idle_since", "discarded", "lost", "deadline", "gap", "last", "timer", "timer_when", "stream")

    def __init__(self, pool: H1Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[H1Response] | None = None
        self.closed = False
        self.served = 0
        self.started = False
        self.idle_since = 0.0
        self.discarded = False
        self.lost: asyncio.Future[None] = loop.create_future()
        # One timer per connection, re-armed lazily: a request sets ``deadline``; the timer is
        # (re)scheduled only if none is pending at or before it. When it fires it either times
        # out the exchange in flight or re-arms for the current deadline. Sequential requests
        # with the same timeout thus cost no timer creation at all (uvloop timers are not cheap).
        self.deadline: float | None = None
        self.gap: float | None = None   # the read timeout of the exchange in flight
        self.last = 0.0                 # when it last received a byte (or sent its request)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        # While serving an H1Stream: a weak reference to it (parser and waiter are then None, so
        # the buffered fast path in data_received is untouched). Weak, so that a stream dropped
        # without close() is collected and its __del__ aborts the connection.
        self.stream: weakref.ReferenceType[H1Stream] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        waiter = self.waiter
        if parser is None or waiter is None or waiter.done():
            ref = self.stream
            if ref is not None:
                st = ref()
                if st is not None:
                    st._data_received(self, data)
                    return
            self.abort()  # bytes nobody asked for (e.g. a 408 on an idle connection)
            return
        self.started = True
        if self.gap is not None:
            self.last = self.loop.time()
        try:
            resp = parser.feed(data)
        except H1ProtocolError as exc:
            self.parser = self.waiter = None
            waiter.set_exception(exc)
            self.abort()
            return
        if resp is not None:
            self.parser = self.waiter = None
            waiter.set_result(resp)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost completes or fails the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ref = self.stream
        if ref is not None:  # serving a stream: tell it, give the slot back
            self.stream = None
            st = ref()
            if st is not None:
                st._connection_lost(self, exc)
            self.pool._discard(self, abort=False)
        waiter = self.waiter
        parser = self.parser
        self.waiter = self.parser = None
        if waiter is not None and not waiter.done():
            if exc is None and parser is not None and parser.needs_eof:
                try:
                    waiter.set_result(parser.feed_eof())  # type: ignore[arg-type]
                except H1ProtocolError as perr:
                    waiter.set_exception(perr)
            else:
                what = "connection reset" if exc is not None else "connection closed"
                where = "mid-response" if self.started else "before any response byte"
                err = H1ConnectionError(f"{what} {where}", reused=self.served > 0, response_started=self.started)
                err.__cause__ = exc
                waiter.set_exception(err)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lost.done():
            self.lost.set_result(None)

    # -- used by the pool

    def send(self, head: bytes, body: bytes | None, head_request: bool,
             deadline: float | None, gap: float | None) -> asyncio.Future[H1Response]:
        transport = self.transport
        if self.closed or transport is None:
            raise H1ConnectionError("connection closed before the request was sent",
                                    reused=self.served > 0, response_started=False)
        self.parser = ResponseParser(head_request=head_request)
        self.started = False
        waiter = self.waiter = self.loop.create_future()
        self.deadline = deadline
        self.gap = gap
        due = deadline
        if gap is not None:
            self.last = now = self.loop.time()
            due = now + gap if deadline is None else min(deadline, now + gap)
        if due is not None:
            self.arm(due)
        if not body:
            transport.write(head)
        elif len(body) < _SMALL_BODY:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        return waiter

    def send_stream(self, st: H1Stream, head: bytes, body: bytes | None, due: float | None) -> None:
        transport = self.transport
        if self.closed or transport is None:
            raise H1ConnectionError("connection closed before the request was sent",
                                    reused=self.served > 0, response_started=False)
        self.parser = self.waiter = None
        self.deadline = None
        self.stream = weakref.ref(st)
        if due is not None:
            self.arm(due)
        if not body:
            transport.write(head)
        elif len(body) < _SMALL_BODY:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)

    def arm(self, when: float) -> None:
        """Make sure the timer fires at or before ``when`` (it re-arms itself if early)."""
        if self.timer is None or self.timer_when > when:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_when = when

    def _on_timer(self) -> None:
        self.timer = None
        ref = self.stream
        if ref is not None:
            st = ref()
            if st is None:
                self.abort()  # the stream was dropped; connection_lost frees the slot
            else:
                st._on_timer(self)
            return
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # idle: nothing to arm
        now = self.loop.time() + 0.001  # (timers may fire a hair early)
        deadline, gap = self.deadline, self.gap
        if deadline is not None and now >= deadline:
            self._time_out(waiter, "the exchange took longer than its total timeout")
            return
        due = deadline
        if gap is not None:
            if now >= self.last + gap:
                self._time_out(waiter, f"no data from the upstream for {gap:g} s")
                return
            due = self.last + gap if due is None else min(due, self.last + gap)
        if due is not None:
            self.timer = self.loop.call_at(due, self._on_timer)
            self.timer_when = due

    def _time_out(self, waiter: asyncio.Future[H1Response], why: str) -> None:
        self.waiter = self.parser = None
        waiter.set_exception(asyncio.TimeoutError(why))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.parser = None
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self.parser = None
        if self.transport is not None:
            self.transport.close()


# ----------------------------------------------------------------------------- streams

_STREAM_HIGH_WATER = 1024 * 1024  # buffered body bytes above which reading the socket pauses
_STREAM_LOW_WATER = 256 * 1024  # ... and at or below which it resumes


class H1Stream:
    """A response whose body is delivered piece by piece, as it arrives (see :meth:`H1Pool.stream`).

    ``await read()``: the next piece of the body (framing stripped), b"" at its end; whatever
    one socket read brought is one piece (``async for piece in stream`` works too).
    Errors from ``read()`` (after the pieces received before them): :class:`asyncio.TimeoutError`
    (no byte from the upstream for ``read_timeout`` seconds, or past the total ``timeout``), :class:`H1ConnectionError`
    (``response_started=True``: connection lost mid-body), :class:`H1ProtocolError`.
    In each case the connection is closed.

    When the body is complete, a keep-alive connection goes back to the pool at once (the
    unread pieces stay here). ``close()`` (or leaving ``async with``) before that closes the
    connection. A stream dropped without ``close()`` aborts its connection when collected.
    Back-pressure: above ~1 MiB of unread body the socket is no longer read, until ``read()``
    brings it down to 256 KiB.
    """

    __slots__ = ("status", "reason", "headers", "keep_alive", "_pool", "_conn", "_loop", "_parser",
                 "_head_ready", "_pieces", "_buffered", "_paused", "_eof", "_error", "_waiter", "_closed",
                 "_idle", "_last", "_deadline", "_body_len", "__weakref__")

    def __init__(self, pool: H1Pool, conn: _H1Connection, loop: asyncio.AbstractEventLoop, head_request: bool,
                 deadline: float | None, read_timeout: float | None, body_len: int) -> None:
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.keep_alive = False
        self._pool = pool
        self._conn: _H1Connection | None = conn  # None once complete, failed or closed
        self._loop = loop
        self._parser = ResponseParser(max_body_size=UNBOUNDED, head_request=head_request)
        self._head_ready: asyncio.Future[None] = loop.create_future()
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._idle = read_timeout
        self._last = loop.time()
        self._deadline = deadline
        self._body_len = body_len

    # -- public

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet read."""
        return self._buffered

    @property
    def complete(self) -> bool:
        """The whole body has been received (it may not all have been read yet)."""
        return self._eof

    async def read(self) -> bytes:
        while True:
            pieces = self._pieces
            if pieces:
                data = pieces.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered <= _STREAM_LOW_WATER:
                    self._resume()
                return data
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            if self._closed:
                raise RuntimeError("H1Stream is closed")
            if self._waiter is not None:
                raise RuntimeError("another coroutine is already reading this H1Stream")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pieces.clear()
        self._buffered = 0
        conn = self._detach()
        if conn is not None:  # body incomplete: this connection cannot be reused
            self._pool._discard(conn, abort=True)
        self._wake()

    async def __aenter__(self) -> H1Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> H1Stream:
        return self

    async def __anext__(self) -> bytes:
        data = await self.read()
        if not data:
            raise StopAsyncIteration
        return data

    def __del__(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.abort()  # connection_lost then frees the pool slot
            except Exception:  # loop already closed
                pass

    # -- internals (called by the connection)

    def _detach(self) -> _H1Connection | None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.stream = None
            if self._paused:
                self._paused = False
                if not conn.closed:
                    conn.transport.resume_reading()  # type: ignore[union-attr]
        return conn

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.transport.resume_reading()  # type: ignore[union-attr]
            self._last = self._loop.time()

    def _fail(self, exc: BaseException) -> None:
        conn = self._detach()
        if not self._head_ready.done():
            self._head_ready.set_exception(exc)
        else:
            self._error = exc
            self._wake()
        if conn is not None:
            self._pool._discard(conn, abort=True)

    def _data_received(self, conn: _H1Connection, data: bytes) -> None:
        parser = self._parser
        try:
            head, piece = parser.feed_stream(data)
        except H1ProtocolError as exc:
            self._fail(exc)
            return
        if self._idle is not None:
            self._last = self._loop.time()
        if head is not None:
            self.status, self.reason, self.headers, self.keep_alive = \
                head.status, head.reason, head.headers, head.keep_alive
            if not self._head_ready.done():
                self._head_ready.set_result(None)
        if piece:
            self._pieces.append(piece)
            self._buffered += len(piece)
            if self._buffered > _STREAM_HIGH_WATER and not self._paused and not parser.complete:
                self._paused = True
                conn.transport.pause_reading()  # type: ignore[union-attr]
            self._wake()
        if parser.complete:
            self._finish(conn)

    def _finish(self, conn: _H1Connection) -> None:
        self._detach()
        self._eof = True
        conn.served += 1
        # reuse only if kept alive and all of our request went out (as in H1Pool.request)
        if self.keep_alive and not conn.closed and (
                self._body_len < _SMALL_BODY or not conn.transport.get_write_buffer_size()):  # type: ignore[union-attr]
            self._pool._release(conn)
        else:
            self._pool._discard(conn, abort=False)
        self._wake()

    def _connection_lost(self, conn: _H1Connection, exc: Exception | None) -> None:
        self._detach()  # (the connection gives its slot back itself)
        parser = self._parser
        what = "connection reset" if exc is not None else "connection closed"
        if not self._head_ready.done():
            where = "mid-response" if parser.started else "before any response byte"
            err = H1ConnectionError(f"{what} {where}", reused=conn.served > 0, response_started=parser.started)
            err.__cause__ = exc
            self._head_ready.set_exception(err)
            return
        if exc is None and parser.needs_eof:
            parser.feed_eof()  # a close-delimited body ends here
            self._eof = True
        else:
            err = H1ConnectionError(f"{what} mid-body", reused=conn.served > 0, response_started=True)
            err.__cause__ = exc
            self._error = err
        self._wake()

    def _on_timer(self, conn: _H1Connection) -> None:
        now = self._loop.time()
        early = now + 0.001  # (timers may fire a hair early)
        deadline = self._deadline
        if deadline is not None and early >= deadline:
            self._fail(asyncio.TimeoutError("the exchange took longer than its total timeout"))
            return
        due = deadline
        gap = self._idle
        if gap is not None:
            if self._paused:  # we are the slow side, not the upstream
                self._last = now
            elif early >= self._last + gap:
                self._fail(asyncio.TimeoutError(f"no data from the upstream for {gap:g} s"))
                return
            due = self._last + gap if due is None else min(due, self._last + gap)
        if due is not None:
            conn.arm(due)


# ----------------------------------------------------------------------------- pool


class H1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (``http://host:port`` or ``https://host[:port]``).

    ``await pool.request(method, target, headers, body, timeout=...)`` -> :class:`H1Response`.
    ``target`` is the path and query exactly as it goes on the request line (already
    percent-encoded; it is not re-encoded). ``headers`` are written verbatim after ``Host``;
    they must not include Host, Content-Length or Transfer-Encoding (the pool writes those).

    Errors: :class:`asyncio.TimeoutError` (a timeout elapsed; connect timeout too),
    :class:`H1ConnectError` (no connection), :class:`H1ConnectionError` (connection lost before
    a complete response), :class:`H1ProtocolError` (invalid response).
    """

    def __init__(self, origin: str, *, limit: int = 1000, connect_timeout: float = 10.0,
                 ssl_context: _ssl.SSLContext | None = None, idle_timeout: float = 60.0,
                 proxy: EgressProxy | None = None) -> None:
        u = urlsplit(origin)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"origin must be http:// or https://, got {origin!r}")
        if not u.hostname or u.username or u.password or u.query or u.fragment or u.path not in ("", "/"):
            raise ValueError(f"origin must be scheme://host[:port], got {origin!r}")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        default_port = 443 if scheme == "https" else 80
        self.origin = origin
        self.host: str = u.hostname
        self.port: int = u.port or default_port
        host_value = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host_value = f"{host_value}:{self.port}"
        self._host_line = f"Host: {host_value}\r\n"
        self.proxy = proxy
        self._tunnel = proxy is not None and scheme == "https"
        self._target_prefix = ""   # absolute-form targets when an http origin goes through a proxy
        if proxy is not None and not self._tunnel:
            self._target_prefix = f"http://{host_value}"
            if proxy.authorization:
                self._host_line += f"Proxy-Authorization: {proxy.authorization}\r\n"
        self._ssl: _ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else _ssl.create_default_context()
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: deque[_H1Connection] = deque()  # LIFO at the right end, oldest at the left
        self._waiters: deque[asyncio.Future[_H1Connection | None]] = deque()
        self._conns: set[_H1Connection] = set()
        self._open = 0  # connections open or being opened (slots taken)
        self._closed = False

    # -- public

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                      body: bytes | None = None, *, timeout: float | None = None,
                      read_timeout: float | None = None) -> H1Response:
        """One exchange; ``timeout`` (seconds, None: none) bounds all of it: waiting for a
        connection, connecting, sending, receiving; ``read_timeout`` bounds each wait for the
        upstream's next bytes. On expiry: :class:`asyncio.TimeoutError` and the connection in
        use is closed."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("H1Pool is closed")
        head = self._head(method, target, headers, body)
        deadline = None if timeout is None else loop.time() + timeout
        head_request = method == "HEAD"
        fresh = False
        while True:
            conn = None if fresh else self._pop_idle()
            if conn is None:  # slow path: wait for a slot and/or connect
                if deadline is None:
                    conn = await self._acquire(fresh)
                else:
                    async with asyncio.timeout_at(deadline):
                        conn = await self._acquire(fresh)
            try:
                # the response wait is bounded by the connection's own timer (see _H1Connection)
                resp = await conn.send(head, body, head_request, deadline, read_timeout)
            except H1ConnectionError as exc:
                self._discard(conn, abort=True)
                if (exc.reused and not exc.response_started and not fresh and method in _IDEMPOTENT
                        and not self._closed):
                    fresh = True  # stale keep-alive connection: once more, on a new connection
                    continue
                raise
            except BaseException:  # timeout, cancellation, protocol error
                self._discard(conn, abort=True)
                raise
            conn.served += 1
            # reuse only if the server keeps it alive and all of our request went out (a server
            # may answer before reading a large body; what is left of it would poison the next)
            if resp.keep_alive and not conn.closed and (
                    body is None or len(body) < _SMALL_BODY
                    or not conn.transport.get_write_buffer_size()):  # type: ignore[union-attr]
                self._release(conn)
            else:
                self._discard(conn, abort=False)
            return resp

    async def stream(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                     body: bytes | None = None, *, timeout: float | None = None,
                     read_timeout: float | None = None) -> H1Stream:
        """Send a request; return an :class:`H1Stream` as soon as the response head is in.

        ``timeout`` bounds the whole exchange, to the end of the body (waiting for a
        connection, connecting, sending, the head, the body); ``read_timeout`` bounds each
        silence of the upstream, before the head and while the body arrives. The
        stale keep-alive rule is that of :meth:`request`: a reused connection that died with
        no response byte is retried once on a new connection for idempotent methods, else
        :class:`H1ConnectionError` (``reused=True, response_started=False``) is raised.
        Close the stream (``async with``) if you do not read it to the end.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("H1Pool is closed")
        head = self._head(method, target, headers, body)
        deadline = None if timeout is None else loop.time() + timeout
        head_request = method == "HEAD"
        body_len = 0 if body is None else len(body)
        fresh = False
        while True:
            conn = None if fresh else self._pop_idle()
            if conn is None:
                if deadline is None:
                    conn = await self._acquire(fresh)
                else:
                    async with asyncio.timeout_at(deadline):
                        conn = await self._acquire(fresh)
            st = H1Stream(self, conn, loop, head_request, deadline, read_timeout, body_len)
            due = deadline
            if read_timeout is not None:
                due = st._last + read_timeout if due is None else min(due, st._last + read_timeout)
            try:
                conn.send_stream(st, head, body, due)
                await st._head_ready
            except H1ConnectionError as exc:
                st.close()
                self._discard(conn, abort=True)  # (no-op if already discarded)
                if (exc.reused and not exc.response_started and not fresh and method in _IDEMPOTENT
                        and not self._closed):
                    fresh = True
                    continue
                raise
            except BaseException:  # timeout, cancellation, protocol error
                st.close()
                raise
            return st

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(H1ConnectionError("pool closed", reused=False, response_started=False))
        self._idle.clear()
        conns = list(self._conns)
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([c.lost for c in conns], timeout=2.0)
            for conn in conns:
                if not conn.lost.done():
                    conn.abort()

    async def __aenter__(self) -> H1Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- request

    def _head(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None) -> bytes:
        if ((target[:1] != "/" and target != "*") or " " in target
                or not (target.isascii() and target.isprintable())):
            raise ValueError(f"invalid request target {target!r}")
        for name, _ in headers:
            if len(name) in _RESERVED_LENS and name.lower() in _RESERVED:
                raise ValueError(f"header {name!r} is set by the pool")
        lines = 3 + len(headers)
        if body is not None:
            cl = f"Content-Length: {len(body)}\r\n"
            lines += 1
        elif method in _EMPTY_BODY_CL:
            cl = "Content-Length: 0\r\n"
            lines += 1
        else:
            cl = ""
        fields = "\r\n".join(map(_join_field, headers)) + "\r\n" if headers else ""
        text = f"{method} {self._target_prefix}{target} HTTP/1.1\r\n{self._host_line}{fields}{cl}\r\n"
        if self._target_prefix and self.proxy.authorization:  # type: ignore[union-attr]
            lines += 1
        # every line ends in exactly one CRLF: a CR or LF inside the method or a header would add one
        if text.count("\n") != lines or text.count("\r") != lines or " " in method:
            raise ValueError("CR, LF or space where not allowed in the request head")
        return text.encode("utf-8", "surrogateescape")

    # -- slots and connections

    def _pop_idle(self) -> _H1Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = self._loop.time()  # type: ignore[union-attr]
        deadline = now - self.idle_timeout
        while idle:
            conn = idle.pop()
            if conn.closed or conn.idle_since < deadline:
                self._discard(conn, abort=False)
                continue
            return conn
        return None

    async def _acquire(self, fresh: bool) -> _H1Connection:
        if self._closed:
            raise RuntimeError("H1Pool is closed")
        if fresh and self._open >= self.limit and self._idle:
            self._discard(self._idle.popleft(), abort=False)  # make room for a new connection
        if self._open < self.limit:
            self._open += 1
            return await self._connect()
        waiter: asyncio.Future[_H1Connection | None] = self._loop.create_future()  # type: ignore[union-attr]
        self._waiters.append(waiter)
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # handed over just as we were cancelled: give it back
                if got is None:
                    self._free_slot()
                else:
                    self._release(got)
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        if got is None:  # a slot was handed over
            return await self._connect()
        return got

    async def _connect(self) -> _H1Connection:
        """Open a connection in a slot already counted in ``_open``."""
        loop = self._loop
        assert loop is not None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _H1Connection(self, loop), self.host, self.port,
                        ssl=self._ssl, server_hostname=self.host if self._ssl is not None else None)
                elif not self._tunnel:   # http origin: absolute-form requests to the proxy
                    _, conn = await loop.create_connection(
                        lambda: _H1Connection(self, loop), self.proxy.host, self.proxy.port)
                else:
                    conn = await self._connect_tunnel(loop, self.proxy)
        except TimeoutError:
            self._free_slot()
            raise asyncio.TimeoutError(f"connect timeout to {self.host}:{self.port}") from None
        except OSError as exc:
            self._free_slot()
            via = f" via proxy {self.proxy.host}:{self.proxy.port}" if self.proxy is not None else ""
            raise H1ConnectError(f"cannot connect to {self.host}:{self.port}{via}: {exc}") from exc
        except BaseException:
            self._free_slot()
            raise
        if self._closed:
            conn.abort()
            self._free_slot()
            raise RuntimeError("H1Pool is closed")
        self._conns.add(conn)
        return conn

    async def _connect_tunnel(self, loop: asyncio.AbstractEventLoop, proxy: EgressProxy) -> _H1Connection:
        """``CONNECT host:port`` through the proxy, then TLS to the origin over the tunnel."""
        authority = self._host_line.split("\r\n", 1)[0][6:]
        if self.port == 443:
            authority += ":443"   # CONNECT always names the port
        auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
        transport, tunnel = await loop.create_connection(_TunnelReply, proxy.host, proxy.port)
        try:
            transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
            status = await tunnel.status
            if status != 200:
                raise H1ConnectError(f"proxy {proxy.host}:{proxy.port} refused the tunnel to "
                                     f"{self.host}:{self.port}: HTTP {status}")
            conn = _H1Connection(self, loop)
            tls = await loop.start_tls(transport, conn, self._ssl,  # type: ignore[arg-type]
                                       server_hostname=self.host)
        except BaseException:
            transport.abort()
            raise
        if tls is None:
            raise H1ConnectError(f"TLS over the tunnel to {self.host}:{self.port} failed")
        conn.connection_made(tls)
        return conn

    def _release(self, conn: _H1Connection) -> None:
        """A healthy keep-alive connection is free: to a waiter, else onto the idle stack."""
        if self._closed or conn.closed:
            self._discard(conn, abort=False)
            return
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        now = self._loop.time()  # type: ignore[union-attr]
        conn.idle_since = now
        idle = self._idle
        idle.append(conn)
        deadline = now - self.idle_timeout
        while idle and (idle[0].idle_since < deadline or idle[0].closed):  # lazily drop the oldest if stale
            self._discard(idle.popleft(), abort=False)

    def _discard(self, conn: _H1Connection, *, abort: bool) -> None:
        if conn.discarded:
            return
        conn.discarded = True
        if not conn.closed:
            conn.abort() if abort else conn.close()
        self._conns.discard(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)  # the slot passes straight to the waiter
                return
        self._open -= 1


_join_field = ": ".join


class _TunnelReply(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its status, once the head is complete."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 64 * 1024:
                self.status.set_exception(H1ConnectError("proxy answer to CONNECT too large"))
            return
        line = self.buf[:self.buf.find(b"\r\n")]
        if not re.fullmatch(rb"HTTP/1\.[01] [0-9]{3}(?: .*)?", line) or self.buf[end + 4:]:
            self.status.set_exception(H1ConnectError("proxy sent a malformed answer to CONNECT"))
            return
        self.status.set_result(int(line[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(H1ConnectError("proxy closed the connection during CONNECT"))
