"""Pass-through downloads spliced socket to socket (proxy/splice.py, H1Stream.hand_over):
exact bytes, the connection back to its pool after a whole body, the upstream read timeout and
a mid-body close still cut the download, and the gateway's path end to end through the SDK."""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import time
from pathlib import Path

import openai
import pytest
from aiohttp import web

from proxy import splice
from proxy.providers.h1 import H1Pool
from tests.conftest import client
from tests.fakes.threaded import ThreadedServer
from tests.test_h1 import RawServer, ServerConn, read_all, tls_cert  # noqa: F401 (a fixture)

BODY = os.urandom(3 * 1024 * 1024 + 17)  # several pipe-fulls, not a multiple of anything
FIRST = 1000  # bytes sent with the head (they come back as the hand-over's pieces)


def _head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()


async def _sink() -> tuple[socket.socket, socket.socket]:
    """(the end a splice writes to, the end the test reads from)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def _read_n(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        if not data:
            break
        out += data
    return bytes(out)


def _serve(body: bytes, *, then: str = "keep") -> "object":
    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(_head(len(body)) + body[:FIRST])
            await conn.writer.drain()
            await asyncio.sleep(0.05)  # stimulus: the rest after the hand-over
            if then == "stall":
                conn.send(body[FIRST:FIRST + 4096])
                await conn.writer.drain()
                await asyncio.sleep(30)
                return
            if then == "close":
                conn.send(body[FIRST:len(body) // 2])
                await conn.writer.drain()
                conn.writer.close()
                return
            conn.send(body[FIRST:])
            await conn.writer.drain()
    return handler


async def test_hand_over_moves_the_exact_rest_and_gives_the_connection_back():
    async with RawServer(_serve(BODY)) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/big", [], timeout=30, read_timeout=10)
        ho = st.hand_over()
        assert ho is not None
        got = b"".join(ho.pieces)
        assert got == BODY[:len(got)] and ho.left == len(BODY) - len(got)
        dst, peer = await _sink()
        try:
            moved, rest = await asyncio.gather(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle,
                                                           deadline=ho.deadline),
                                               _read_n(peer, ho.left))
        finally:
            dst.close()
        ho.done(True)
        assert got + rest == BODY
        assert st.complete and pool.idle_connections == 1  # the body is whole: the connection is reusable
        st.close()
        async with await pool.stream("GET", "/again", [], timeout=30, read_timeout=10) as st2:
            assert b"".join(await read_all(st2)) == BODY  # the next exchange on it reads normally
        assert len(srv.connections) == 1
        peer.close()


async def test_spliced_body_stalling_past_the_read_timeout_fails_and_closes():
    async with RawServer(_serve(BODY, then="stall")) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/stall", [], timeout=30, read_timeout=0.5)
        ho = st.hand_over()
        assert ho is not None and ho.idle == 0.5
        dst, peer = await _sink()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no data from the upstream"):
            await asyncio.gather(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline),
                                 _read_n(peer, 4096))
        assert time.monotonic() - t0 < 10
        ho.done(False)
        assert pool.open_connections == 0
        st.close()
        dst.close()
        peer.close()


async def test_bytes_held_when_the_source_pauses_reach_the_client_during_the_pause():
    # The mover gives the client a pipe-full at a time, but never holds bytes back while the
    # upstream is quiet: 4 KiB sent then a stall reach the client during the stall.
    async with RawServer(_serve(BODY, then="stall")) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/stall", [], timeout=30, read_timeout=3)
        ho = st.hand_over()
        assert ho is not None
        dst, peer = await _sink()
        mover = asyncio.ensure_future(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline))
        try:
            got = b"".join(ho.pieces)
            want = FIRST + 4096 - len(got)
            rest = await asyncio.wait_for(_read_n(peer, want), 2)  # well inside the 30 s stall
            assert got + rest == BODY[:FIRST + 4096]
            assert not mover.done()
        finally:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)
            ho.done(False)
            st.close()
            dst.close()
            peer.close()


async def test_a_trickling_source_is_not_polled_pause_after_pause(monkeypatch):
    # The mover polls an idle source for a while (one loop turn per poll) before it sleeps;
    # a source whose pauses are all long stops being polled after SPIN_MISSES windows, so a
    # trickling upstream costs a few windows of polling, not one per pause.
    monkeypatch.setattr(splice, "SPIN", 0.02)
    attempts = []
    real = splice._splice

    def counting(fd_in: int, fd_out: int, n: int, side: str) -> int:
        attempts.append(side)
        return real(fd_in, fd_out, n, side)

    monkeypatch.setattr(splice, "_splice", counting)
    piece, pauses = 512, 12
    body = os.urandom(FIRST + piece * pauses)

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(_head(len(body)) + body[:FIRST])
            for i in range(pauses):
                await asyncio.sleep(0.06)  # every pause longer than SPIN and SHORT_GAP
                conn.send(body[FIRST + i * piece:FIRST + (i + 1) * piece])
                await conn.writer.drain()

    async with RawServer(handler) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/trickle", [], timeout=30, read_timeout=10)
        ho = st.hand_over()
        assert ho is not None
        dst, peer = await _sink()
        try:
            t0 = time.monotonic()
            first = asyncio.ensure_future(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline))
            rest = await asyncio.wait_for(_read_n(peer, ho.left), 20)
            await first
        finally:
            dst.close()
            peer.close()
        ho.done(True)
        st.close()
    assert b"".join(ho.pieces) + rest == body
    assert time.monotonic() - t0 >= pauses * 0.06
    # One window of polling is ~SPIN worth of loop turns; this many pauses polled in full would
    # be `pauses` windows. Allowed: the SPIN_MISSES windows, one more, and a few calls per piece.
    polls = len([a for a in attempts if a == "upstream"])
    window = await _polls_in(0.02)
    assert window > 10  # (the measure itself is meaningful)
    assert polls < (splice.SPIN_MISSES + 1) * window + 4 * pauses, (polls, window)


async def test_a_trickle_counts_for_the_read_timeout_and_arrives_as_it_comes():
    """Small pieces, each within the read timeout: the move completes (every piece counts for
    the idle timer) and each reaches the client within milliseconds of being sent (nothing
    waits for more bytes to gather)."""
    piece, pauses, gap = 700, 8, 0.1
    body = os.urandom(FIRST + piece * pauses)
    sent: list[float] = []

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(_head(len(body)) + body[:FIRST])
            for i in range(pauses):
                await asyncio.sleep(gap)
                conn.send(body[FIRST + i * piece:FIRST + (i + 1) * piece])
                await conn.writer.drain()
                sent.append(time.monotonic())

    async with RawServer(handler) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/trickle", [], timeout=30, read_timeout=0.3)
        ho = st.hand_over()
        assert ho is not None
        dst, peer = await _sink()
        lags = []
        try:
            mover = asyncio.ensure_future(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline))
            got = b"".join(ho.pieces)
            rest = b""
            loop = asyncio.get_running_loop()
            while len(got) + len(rest) < len(body):
                data = await asyncio.wait_for(loop.sock_recv(peer, 1 << 16), 5)
                if not data:
                    break
                if sent:
                    lags.append(time.monotonic() - sent[-1])
                rest += data
            await asyncio.wait_for(mover, 5)
        finally:
            dst.close()
            peer.close()
        ho.done(True)
        st.close()
    assert got + rest == body
    assert lags and max(lags) < 0.08, lags  # well under the gap between pieces


async def _polls_in(seconds: float) -> int:
    """How many event-loop turns of ``asyncio.sleep(0)`` fit in ``seconds`` here, now."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        await asyncio.sleep(0)
        n += 1
    return n


async def test_spliced_body_past_the_total_timeout_fails():
    async with RawServer(_serve(BODY, then="stall")) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/stall", [], timeout=0.8, read_timeout=None)
        ho = st.hand_over()
        assert ho is not None and ho.idle is None and ho.deadline is not None
        dst, peer = await _sink()
        with pytest.raises(TimeoutError, match="total timeout"):
            await asyncio.gather(splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline),
                                 _read_n(peer, 4096))
        ho.done(False)
        st.close()
        dst.close()
        peer.close()


async def test_upstream_closing_mid_splice_is_a_closed_error():
    async with RawServer(_serve(BODY, then="close")) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/close", [], timeout=30, read_timeout=10)
        ho = st.hand_over()
        assert ho is not None
        dst, peer = await _sink()
        reader = asyncio.ensure_future(_read_n(peer, ho.left))
        with pytest.raises(splice.SpliceClosed):
            await splice.move(ho.fd, dst.fileno(), ho.left, idle=ho.idle, deadline=ho.deadline)
        ho.done(False)
        dst.close()
        got = await reader
        assert len(got) < ho.left and BODY[FIRST:].startswith(got[:1 << 16])
        assert pool.open_connections == 0
        st.close()
        peer.close()


async def test_no_hand_over_for_a_chunked_body():
    async def chunked(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await conn.writer.drain()
            await asyncio.sleep(0.05)
            conn.send(b"0\r\n\r\n")

    async with RawServer(chunked) as srv, H1Pool(srv.origin) as pool:
        async with await pool.stream("GET", "/c", [], timeout=30, read_timeout=10) as st:
            assert st.hand_over() is None
            assert b"".join(await read_all(st)) == b"hello"  # and the stream still reads normally


async def test_no_hand_over_over_tls(tls_cert: Path):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_cert / "cert.pem", tls_cert / "key.pem")
    body = BODY[:200_000]
    async with RawServer(_serve(body), ssl=server_ctx) as srv:
        client_ctx = ssl.create_default_context(cafile=str(tls_cert / "cert.pem"))
        async with H1Pool(f"https://localhost:{srv.port}", ssl_context=client_ctx) as pool:
            async with await pool.stream("GET", "/tls", [], timeout=30, read_timeout=10) as st:
                assert st.hand_over() is None  # the socket carries ciphertext: the bytes must be read here
                assert b"".join(await read_all(st)) == body


# ------------------------------------------------------------------ through the gateway


class _Upstream:
    """An OpenAI-shaped upstream whose files.content is a Content-Length body; ``stall`` makes
    it send part of it and then nothing."""

    def __init__(self) -> None:
        self.stall = False
        app = web.Application()
        app.router.add_get("/v1/files/{id}/content", self.content)
        self.server = ThreadedServer(app)

    async def content(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(BODY)
        await resp.prepare(request)
        if self.stall:
            await resp.write(BODY[:len(BODY) // 3])
            await asyncio.sleep(30)
        await resp.write(BODY)
        return resp


@pytest.fixture
def upstream():
    up = _Upstream()
    up.server.start()
    try:
        yield up
    finally:
        up.server.stop()


def _gateway(start_gateway, url: str):
    return start_gateway({"providers": [{"name": "up", "type": "openai", "api_base": url + "/v1",
                                         "api_key": "sk-upstream-test", "max_retries": 0,
                                         "timeouts": {"connect": "5s", "read": "1s"}}],
                          "default_provider": "up"})


def test_passthrough_download_is_byte_exact_through_the_sdk(start_gateway, upstream):
    gw = _gateway(start_gateway, upstream.server.url)
    c = client(gw)
    for _ in range(2):  # the second one on the pooled upstream connection
        got = c.files.content("file-big").content
        assert hashlib.sha256(got).digest() == hashlib.sha256(BODY).digest()


def test_passthrough_download_stalling_mid_body_is_cut_not_completed(start_gateway, upstream):
    gw = _gateway(start_gateway, upstream.server.url)
    upstream.stall = True
    t0 = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        client(gw, timeout=20).files.content("file-big").content
    assert time.monotonic() - t0 < 15  # the gateway's read timeout (1 s) cut it, not the client's
    upstream.stall = False
    assert client(gw).files.content("file-big").content == BODY  # and the gateway serves on


def test_client_leaving_mid_spliced_download_leaves_the_gateway_serving(start_gateway, upstream):
    gw = _gateway(start_gateway, upstream.server.url)
    host, port = gw.base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /v1/files/file-big/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-none\r\n\r\n")
            got = b""
            while len(got) < 256 * 1024:
                data = s.recv(65536)
                assert data
                got += data
            assert got.startswith(b"HTTP/1.1 200")
        # (closed with most of the body unread: the splice meets a reset or a closed peer)
    assert client(gw).files.content("file-big").content == BODY
