"""Keep-alive connections to one origin: a LIFO of idle connections, at most ``limit`` open,
waiters queued, the stale keep-alive retry; direct, through a ``CONNECT`` tunnel, or to an
http proxy in absolute form."""
from __future__ import annotations

import asyncio
import ssl as _ssl
from collections import deque
from typing import Sequence
from urllib.parse import urlsplit

from ..egress import EgressProxy
from .connection import SMALL_BODY, _H1Connection, _TunnelReply
from .errors import H1ConnectError, H1ConnectionError
from .parser import H1Response
from .stream import H1Stream

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT"})
_EMPTY_BODY_CL = frozenset({"POST", "PUT", "PATCH"})
_RESERVED = frozenset({"host", "content-length", "transfer-encoding"})
_RESERVED_LENS = frozenset(len(h) for h in _RESERVED)


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
        _, head, deadline = self._start(method, target, headers, body, timeout)
        head_request = method == "HEAD"
        fresh = False
        while True:
            conn = None if fresh else self._pop_idle()
            if conn is None:  # slow path: wait for a slot and/or connect
                conn = await self._acquire_by(fresh, deadline)
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
                    body is None or len(body) < SMALL_BODY
                    or not conn.open_transport.get_write_buffer_size()):
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
        loop, head, deadline = self._start(method, target, headers, body, timeout)
        head_request = method == "HEAD"
        body_len = 0 if body is None else len(body)
        fresh = False
        while True:
            conn = None if fresh else self._pop_idle()
            if conn is None:
                conn = await self._acquire_by(fresh, deadline)
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
        if self._target_prefix and self.proxy is not None and self.proxy.authorization:
            lines += 1
        # every line ends in exactly one CRLF: a CR or LF inside the method or a header would add one
        if text.count("\n") != lines or text.count("\r") != lines or " " in method:
            raise ValueError("CR, LF or space where not allowed in the request head")
        return text.encode("utf-8", "surrogateescape")

    # -- slots and connections

    def _start(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None,
               timeout: float | None) -> tuple[asyncio.AbstractEventLoop, bytes, float | None]:
        """What every exchange needs first: the loop, the request head, the total deadline."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("H1Pool is closed")
        head = self._head(method, target, headers, body)
        return loop, head, None if timeout is None else loop.time() + timeout

    async def _acquire_by(self, fresh: bool, deadline: float | None) -> _H1Connection:
        """:meth:`_acquire`, bounded by the exchange's total deadline if it has one."""
        if deadline is None:
            return await self._acquire(fresh)
        async with asyncio.timeout_at(deadline):
            return await self._acquire(fresh)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this pool runs on (set by the first request; every caller comes after it)."""
        loop = self._loop
        assert loop is not None
        return loop

    def _pop_idle(self) -> _H1Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = self._running_loop().time()
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
        waiter: asyncio.Future[_H1Connection | None] = self._running_loop().create_future()
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
        ssl_context = self._ssl
        assert ssl_context is not None  # tunnels are for https origins only (http goes in absolute form)
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
            tls = await loop.start_tls(transport, conn, ssl_context, server_hostname=self.host)
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
        now = self._running_loop().time()
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
