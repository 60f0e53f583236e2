"""One keep-alive HTTP/1.1 connection (an ``asyncio.Protocol``): sends a request, feeds the
response bytes to a parser, and times the exchange out with one lazily re-armed timer; and the
reader of a proxy's answer to ``CONNECT``."""
from __future__ import annotations

import asyncio
import re
import weakref
from typing import TYPE_CHECKING, cast

from .errors import H1ConnectError, H1ConnectionError, H1ProtocolError
from .parser import H1Response, ResponseParser

if TYPE_CHECKING:
    from .pool import H1Pool
    from .stream import H1Stream


SMALL_BODY = 64 * 1024  # a request body below this goes out in the same write as its head


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

    @property
    def open_transport(self) -> asyncio.Transport:
        """The transport of a connection that is not closed (``connection_made`` has run)."""
        transport = self.transport
        assert transport is not None
        return transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream socket's transport

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
                    resp = parser.feed_eof()
                    assert resp is not None  # needs_eof: the connection's end is the body's end
                    waiter.set_result(resp)
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
        _write_request(transport, head, body)
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
        _write_request(transport, head, body)

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


def _write_request(transport: asyncio.Transport, head: bytes, body: bytes | None) -> None:
    """The head and a small body in one write (one segment); a large body is not copied."""
    if not body:
        transport.write(head)
    elif len(body) < SMALL_BODY:
        transport.write(head + body)
    else:
        transport.write(head)
        transport.write(body)
