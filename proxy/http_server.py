"""The listener's HTTP/1.1 protocol: aiohttp's low-level server, hardened against its clients.

aiohttp's ``RequestHandler`` parses requests and calls the gateway; this subclass decides what
happens around that, on every connection:

* **malformed requests** (bad request line, bare LF, a control byte, an over-long header, bad
  chunked framing…) get an OpenAI-shaped JSON 400 that quotes nothing from the request, and one
  short, rate-limited log line — aiohttp's own answer quotes the raw line (a tenant's key, say)
  into a text/plain body and an ``ERROR`` traceback;
* **header_timeout**: the request line and headers must arrive within it (408, then close; a
  new connection that sends nothing is closed without a response);
  ``keepalive_timeout`` bounds an idle connection; the body's idle timeout is applied by the
  body reader (:mod:`proxy.body`), which finds it here on ``request.protocol``;
* **max_connections**: a connection past the limit is answered 503 (``Retry-After``) and closed;
* **closing**: a response after which the connection closes (``Connection: close``, a body left
  unread, an error) is followed at once by a FIN, so the client sees the response and then EOF;
  what the client still sends is read and dropped until it closes (or for the lingering time),
  because closing a socket with unread data sends a RST that can destroy the response
  before the client has read it;
* **half-close**: a client that shuts down its write side after a complete request still gets
  its response (aiohttp would close the transport and cancel the handler); a body left
  incomplete by the EOF fails the body read at once; a client that closed the socket
  entirely is told apart by a probe and cancelled as before.

This extends ``RequestHandler`` beyond its public surface (``_messages``, ``_ErrInfo``,
``_current_request``…), so setup.cfg pins aiohttp to the 3.14 series; a new series needs this
module re-read against its ``web_protocol.py`` (tests/test_http_protocol.py covers each rule).
"""
from __future__ import annotations

import asyncio
import http
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.helpers import ceil_timeout
from aiohttp.http_exceptions import (BadHttpMethod, BadStatusLine, HttpProcessingError, InvalidURLError,
                                     LineTooLong, PayloadEncodingError)
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import _PAYLOAD_ACCESS_ERROR, ERROR, RequestHandler, _ErrInfo

from .bytes_response import BytesResponse
from .errors import GatewayError

if TYPE_CHECKING:
    from aiohttp.streams import StreamReader

    from .config import ServerConfig

log = logging.getLogger("sluicegate.http")

# Most client-protocol log lines per second per worker; the rest are counted and reported.
LOG_LINES_PER_SECOND = 10
OVERLOAD_RETRY_AFTER = "1"
# An interim response: a request's ``Expect: 100-continue`` answer, and the half-close probe.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONTINUED = "sluicegate.continued"   # request key: a 100 Continue was sent for it
PEER_WATCH_INTERVAL = 0.02
_TCP_CLOSE = 7                       # Linux tcpi_state after a RST


class RateLimitedLog:
    """At most ``per_second`` warnings per second; the suppressed ones are counted in one line."""

    def __init__(self, logger: logging.Logger, per_second: int = LOG_LINES_PER_SECOND) -> None:
        self.logger = logger
        self.per_second = per_second
        self._window = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._flush()
            self._window = now
            self._count = 0
        if self._count < self.per_second:
            self._count += 1
            self.logger.warning(msg, *args)
            return
        if not self._suppressed:
            # Report the count when the window ends, even if no further line comes.
            asyncio.get_running_loop().call_later(1.0 - (now - self._window), self._flush)
        self._suppressed += 1

    def _flush(self) -> None:
        if self._suppressed:
            self.logger.warning("%d similar line(s) suppressed (more than %d per second)",
                                self._suppressed, self.per_second)
            self._suppressed = 0


def malformed_reason(exc: BaseException | None) -> str:
    """A fixed description of a parser error: never any text the request contained."""
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, BadHttpMethod):
        return "invalid method"
    if isinstance(exc, BadStatusLine):
        return "invalid request line"
    if isinstance(exc, InvalidURLError):
        return "invalid URL"
    if isinstance(exc, PayloadEncodingError):
        return "invalid body framing"
    # llhttp's reason is the message's first line; it is tested here, never shown.
    first = (getattr(exc, "message", "") or "").split("\n", 1)[0].lower()
    if "chunk" in first or "content-length" in first or "transfer-encoding" in first:
        return "invalid body framing"
    return "invalid header line"


def raw_error_response(err: GatewayError) -> bytes:
    """A complete HTTP/1.1 error response, for when no request object exists to answer."""
    body = err.body()
    headers = {**err.response_headers(), "Content-Length": str(len(body)), "Connection": "close"}
    head = f"HTTP/1.1 {err.status} {http.HTTPStatus(err.status).phrase}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class GatewayProtocol(RequestHandler):
    """aiohttp's RequestHandler with the gateway's rules for malformed, slow and closing clients."""

    def __init__(self, manager: "GatewayServer", **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = manager.config.header_timeout
        self.body_idle_timeout = manager.config.body_idle_timeout
        self.body_min_rate = manager.config.body_min_rate
        self.client_log = manager.client_log
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_deadline: float | None = None  # when the awaited headers are late
        self._linger_timer: asyncio.TimerHandle | None = None
        self._peer_timer: asyncio.TimerHandle | None = None
        self._last_payload: "StreamReader | None" = None
        self._received = 0       # requests parsed (malformed ones included)
        self._answered = 0       # responses finished
        self._peer_eof = False
        self._request_started = False  # a byte of a request not yet parsed has arrived
        self._closing = False    # the response is out, the FIN sent; dropping what still arrives

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, GatewayServer)
        if manager.at_capacity():
            # Refused before aiohttp sees it: not counted, no task, no parser run.
            self._manager = None
            self._force_close = True
            self.client_log.warning("connection from %s refused: max_connections (%d) reached (503)",
                                    _peer(transport), manager.config.max_connections)
            # A stream server's transport is an asyncio.Transport (aiohttp casts it so too).
            self._send_and_close(cast(asyncio.Transport, transport), raw_error_response(GatewayError(
                503, "The gateway has too many open connections; retry shortly.", code="server_overloaded",
                retryable=True, headers={"Retry-After": OVERLOAD_RETRY_AFTER})))
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._header_timer, self._linger_timer, self._peer_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._linger_timer = self._peer_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        if data and not self._request_started:
            last = self._last_payload
            if last is None or last.is_eof():  # between requests: this is a new one's first byte
                self._request_started = True
                if self._header_deadline is None:
                    self._arm_header_timer()  # the first byte of the next request
        messages = self._messages
        before = len(messages)
        super().data_received(data)
        added = len(messages) - before
        if not added:
            return
        self._received += added
        self._request_started = False
        self._header_deadline = None  # the headers are in: the header timer has nothing to time
        for msg, payload in (messages[-1],) if added == 1 else list(islice(messages, before, None)):
            if isinstance(msg, _ErrInfo):
                self._malformed(msg.exc, msg.status)
                return
            self._last_payload = payload

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Resume only what flow control paused.

        aiohttp 3.14's body ``StreamReader`` calls this after every read that leaves its buffer
        under the low-water mark and at every body's end, paused or not; unpaused, aiohttp would
        run the whole ``data_received`` path on ``b""`` (a parse of nothing) and resume a transport
        that is reading: twice per request with a body, ~3 µs (issue 10). A pause by flow control
        (``pause_reading``: a body read slower than it arrives) sets ``_reading_paused`` and is
        resumed here exactly as aiohttp does; the message queue's own pause (``_buffer_paused``,
        pipelined requests) is resumed by ``start`` as it drains the queue, not through here.
        """
        if self._reading_paused:
            super().resume_reading(resume_parser)

    def _malformed(self, exc: BaseException, status: int) -> None:
        self.client_log.warning("malformed request from %s: %s (%d)", _peer(self.transport),
                                malformed_reason(exc), status)
        # Parse nothing more from this connection (the answer closes it). Set directly:
        # close() would cancel the wait for the very message that answers the client.
        self._close = True
        body = self._last_payload
        if body is not None and not body.is_eof():
            # Bad framing inside a body the gateway is reading: fail that read now.
            body.set_exception(MalformedBody(malformed_reason(exc)))

    # asyncio.Protocol.eof_received returns bool | None (True keeps the transport open);
    # aiohttp's RequestHandler narrows its own no-op override to None.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._closing or self._received <= self._answered:
            return None  # idle or already closing: let the transport close
        if self._response_started():
            return None  # an EOF during a (streamed) response ends it, as a disconnect does
        # A half-close after (part of) a request: answer it, then close.
        self._peer_eof = True
        self._close = True
        self._lingering_time = 0.0  # nothing more will arrive to drain
        pending = [p for _, p in self._messages]
        if self._current_request is not None:
            pending.append(self._current_request.content)
        incomplete = [p for p in pending if not p.is_eof()]
        for payload in incomplete:
            payload.set_exception(ConnectionResetError(
                "The client closed its side of the connection before the body was complete."))
        if not incomplete:
            # (A body cut short already ends the exchange through its failed read, which
            # also lets an upload's abort run to its end instead of being cancelled.)
            self._probe_peer()
        return True  # keep the transport open to send the response

    # A FIN alone does not say whether the client only shut down its write side (it waits
    # for the answer) or closed the socket (it is gone: the exchange must be cancelled, an
    # upload not committed). Writing tells: a closed socket answers with a RST. The probe is
    # an interim ``100 Continue``, which every HTTP/1.1 client must accept unasked
    # (RFC 9110 §15.2); the TCP state then shows the RST (the loop reads no more after EOF).

    def _response_started(self) -> bool:
        req = self._current_request
        if req is None:
            return self._request_in_progress  # between the handler's return and the response's end
        return req.writer.output_size > (len(CONTINUE) if req.get(CONTINUED) else 0)

    def _probe_peer(self) -> None:
        req = self._current_request
        if req is not None and req.version < (1, 1):
            return  # an HTTP/1.0 client cannot take a 1xx: it is answered
        assert self.transport is not None
        self.transport.write(CONTINUE)
        self._watch_peer()

    def _watch_peer(self) -> None:
        self._peer_timer = None
        transport = self.transport
        if transport is None or self._closing or self._received <= self._answered:
            return
        try:
            state = transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (AttributeError, OSError):
            return  # not inspectable: the response is sent and a RST, if any, ends it then
        if state == _TCP_CLOSE:
            transport.abort()  # connection_lost cancels the exchange, as for any disconnect
            return
        self._peer_timer = self._loop.call_later(PEER_WATCH_INTERVAL, self._watch_peer)

    # -- header timeout --------------------------------------------------------------------

    # One timer per connection, moved lazily (as aiohttp's keep-alive timer is): a request
    # only sets the deadline, so a busy keep-alive connection does not create and cancel a
    # timer per request.

    def _arm_header_timer(self) -> None:
        self._header_deadline = deadline = self._loop.time() + self.header_timeout
        if self._header_timer is None:
            self._header_timer = self._loop.call_at(deadline, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._header_timer = self._loop.call_at(deadline, self._headers_late)
            return
        self._header_deadline = None
        if self.transport is None or self._closing:
            return
        if self._received > self._answered:
            # A response is still due on this connection: the late pipelined request is dropped.
            self._close = True
            return
        self._force_close = True
        if self._waiter is not None:
            self._waiter.cancel()
        if not self._request_started:
            # Nothing was sent: no request to answer (a 408 could race a request being sent).
            self.transport.close()
            return
        self.client_log.warning("request headers from %s not complete within %gs (408)", _peer(self.transport),
                                self.header_timeout)
        self._send_and_close(self.transport, raw_error_response(GatewayError(
            408, f"The request line and headers did not arrive within {self.header_timeout:g}s.",
            code="request_timeout")))

    # -- the request loop ------------------------------------------------------------------

    async def start(self) -> None:
        """aiohttp 3.14's ``RequestHandler.start``, with one change: each request's handler is
        awaited in this connection's task instead of a new task per request.

        aiohttp makes that task only to give each request a copy of the context variables
        (aiohttp#3406); the gateway sets none. On Python 3.11 the task costs its creation, two
        extra event-loop hops (its first step, then waking this loop when it ends) and a
        context copy: a bare ``aiohttp.web.Server`` answering small GETs at c=64 spent 38 µs of
        CPU per request with it and 35 without (issue 10). A client that disconnects still
        cancels the handler: aiohttp cancels this task, and the cancellation reaches the
        handler's innermost await as it reached the per-request task before.
        """
        loop = self._loop
        manager = self._manager
        assert manager is not None
        keepalive_timeout = self._keepalive_timeout
        resp = None
        assert self._request_factory is not None
        assert self._request_handler is not None

        while not self._force_close:
            if not self._messages:
                try:
                    self._waiter = loop.create_future()  # wait for the next request
                    await self._waiter
                finally:
                    self._waiter = None

            message, payload = self._messages.popleft()
            # Free a parser slot; resume reading once drained to low water (pipelining).
            if self._parser is not None:
                self._parser.message_consumed()
            if self._buffer_paused and len(self._messages) <= self._msg_queue_resume_size:
                self._resume_reading_if_drained()

            start = loop.time() if self._logging_enabled else None
            manager.requests_count += 1
            writer = StreamWriter(self, loop)
            if isinstance(message, _ErrInfo):
                request_handler = self._make_error_handler(message)
                message = ERROR
            else:
                request_handler = self._request_handler
            request = self._request_factory(message, payload, self, writer,
                                            self._task_handler or asyncio.current_task(loop))  # type: ignore[arg-type]
            try:
                try:
                    resp, reset = await self._handle_request(request, start, request_handler)
                except ConnectionError:
                    self.log_debug("Ignored premature client disconnection")
                    break
                if reset:
                    self.log_debug("Ignored premature client disconnection 2")
                    break

                self._keepalive = bool(resp.keep_alive)  # notify the server about keep-alive

                if not payload.is_eof():  # the body was not read: linger, reading and ignoring it
                    lingering_time = self._lingering_time
                    if not self._force_close and lingering_time:
                        self.log_debug("Start lingering close timer for %s sec.", lingering_time)
                        now = loop.time()
                        end_t = now + lingering_time
                        try:
                            while not payload.is_eof() and now < end_t:
                                async with ceil_timeout(end_t - now):
                                    await payload.readany()
                                now = loop.time()
                        except (asyncio.CancelledError, asyncio.TimeoutError):
                            if (t := asyncio.current_task()) and t.cancelling():
                                raise
                    if not payload.is_eof() and not self._force_close:
                        self.log_debug("Uncompleted request.")
                        self.close()

                payload.set_exception(_PAYLOAD_ACCESS_ERROR)

            except asyncio.CancelledError:
                self.log_debug("Ignored premature client disconnection")
                self.force_close()
                raise
            except Exception as exc:
                self.log_exception("Unhandled exception", exc_info=exc)
                self.force_close()
            except BaseException:
                self.force_close()
                raise
            finally:
                request._task = None  # type: ignore[assignment]  # break the reference cycle
                if self.transport is None and resp is not None:
                    self.log_debug("Ignored premature client disconnection.")

            if self._keepalive and not self._close and not self._force_close:
                close_time = loop.time() + keepalive_timeout  # (re)start the keep-alive timer
                self._next_keepalive_close_time = close_time
                if self._keepalive_handle is None:
                    self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
            else:
                break

        # remove the handler; close the transport if no handlers are left
        if not self._force_close:
            self._task_handler = None
            if self.transport is not None:
                self.transport.close()

    # -- responses and closing -------------------------------------------------------------

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's error answer (a parser error, or a handler that raised), as OpenAI JSON."""
        if isinstance(exc, HttpProcessingError) and status < 500:
            err = GatewayError(status, f"Malformed HTTP request: {malformed_reason(exc)}.", code="malformed_request")
        else:
            if status >= 500 and exc is not None:
                self.log_exception("error handling a request", exc_info=exc)
            err = GatewayError(status, "The gateway failed to handle the request.",
                               code="internal_error" if status == 500 else None, retryable=status >= 500)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is sent already; cannot send the error")
        resp = web.Response(status=err.status, body=err.body(), headers={**err.response_headers(), "Connection": "close"})
        resp.force_close()
        return resp

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        if self._peer_eof or not request.content.is_eof():
            # A body left unread (an early 413/401…) or a half-closed client: this is the last
            # response on the connection.
            force = getattr(resp, "force_close", None)
            if force is not None:
                force()
        if self._upgraded or type(resp) is not BytesResponse:
            resp, reset = await super().finish_response(request, resp, start_time)
        else:
            # aiohttp 3.14's finish_response for a response that writes itself whole in prepare
            # (no upgrade tail to feed, a response object for sure): one coroutine and the
            # write_eof call less per answer (issue 10).
            request._finish()
            reset = False
            try:
                await resp.prepare(request)
                if not resp._eof_sent:  # BytesResponse handed an unusual answer to aiohttp's path
                    await resp.write_eof()
            except ConnectionError:
                reset = True
            if self.access_logger is not None:
                self.log_access(request, resp, start_time)
        self._answered += 1
        if not reset and not resp.keep_alive:
            self._close_after_response()
        return resp, reset

    def _close_after_response(self) -> None:
        # start() leaves a force-closed connection's transport alone: it is closed here.
        self._force_close = True
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self.transport is not None:
            self._send_and_close(self.transport, b"")

    def _send_and_close(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data``, send a FIN, drop what the client still sends, close on its EOF."""
        self._closing = True
        if data:
            transport.write(data)
        if self._peer_eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        try:
            transport.resume_reading()  # reading may be paused by back-pressure: keep draining
        except (AttributeError, NotImplementedError, RuntimeError):
            pass
        self._linger_timer = self._loop.call_later(self._lingering_time or 1.0, transport.close)


class MalformedBody(Exception):
    """The request body's framing broke while it was being read (a parser error)."""


class GatewayServer(web.Server):
    """aiohttp's low-level server, making :class:`GatewayProtocol` connections."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 config: "ServerConfig", **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", config.keepalive_timeout)
        super().__init__(handler, **kwargs)
        self.config = config
        self.client_log = RateLimitedLog(log)

    def at_capacity(self) -> bool:
        return len(self._connections) >= self.config.max_connections

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)
