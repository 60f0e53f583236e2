"""A response whose body is handed over piece by piece as it arrives (SSE), with back-pressure."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from ...splice import BodyHandover, plain_socket_fd
from .errors import H1ConnectionError, H1ProtocolError
from .parser import UNBOUNDED, ResponseParser
from .connection import SMALL_BODY

if TYPE_CHECKING:
    from .connection import _H1Connection
    from .pool import H1Pool


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

    def hand_over(self) -> BodyHandover | None:
        """Give the rest of a ``Content-Length`` body to be spliced socket to socket
        (proxy/splice.py) instead of read here, or None when it cannot be (other framing,
        TLS, complete, failed). The pieces already received come with it; the socket is no
        longer read by the loop, and this stream's timers stop (the splice keeps its own).
        ``done(True)`` after exactly ``left`` bytes gives the connection back as a complete
        body would, ``done(False)`` closes it; until then this stream must not be read."""
        conn = self._conn
        left = self._parser.length_left
        if conn is None or self._closed or self._error is not None or not left or conn.closed:
            return None
        fd = plain_socket_fd(conn.open_transport)
        if fd is None:
            return None
        pieces = list(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        if not self._paused:
            conn.open_transport.pause_reading()
        self._paused = False  # (so that no resume_reading happens behind the splice's back)
        conn.stream = None    # the connection's timer and data_received no longer reach us
        deadline = self._deadline

        def done(moved_all: bool) -> None:
            if self._conn is not conn:
                return
            if moved_all and not conn.closed:
                self._parser.skip_length(left)
                conn.open_transport.resume_reading()
                self._finish(conn)
            else:
                self._conn = None
                self._error = H1ConnectionError("the spliced body did not complete", reused=conn.served > 0,
                                                response_started=True)
                self._pool._discard(conn, abort=True)

        return BodyHandover(fd=fd, left=left, done=done, pieces=pieces, idle=self._idle, deadline=deadline)

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
                    conn.open_transport.resume_reading()
        return conn

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.open_transport.resume_reading()
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
                conn.open_transport.pause_reading()
            self._wake()
        if parser.complete:
            self._finish(conn)

    def _finish(self, conn: _H1Connection) -> None:
        self._detach()
        self._eof = True
        conn.served += 1
        # reuse only if kept alive and all of our request went out (as in H1Pool.request)
        if self.keep_alive and not conn.closed and (
                self._body_len < SMALL_BODY or not conn.open_transport.get_write_buffer_size()):
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
