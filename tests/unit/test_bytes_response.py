"""BytesResponse puts on the wire exactly what aiohttp's Response would (Date aside), and leaves
the connection open or closed as it would, for every case the fast path takes and every case it
hands back to aiohttp."""
from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp import web

from proxy.bytes_response import BytesResponse
from proxy.config import ServerConfig
from proxy.http_server import GatewayServer

JSON = b'{"id":"file-abc","object":"file"}'

# name -> (status, body, extra headers, content_type, force_close)
ANSWERS = {
    "json": (200, JSON, {}, "application/json", False),
    "error": (404, b'{"error":{"message":"no"}}', {"x-should-retry": "false"}, "application/json", False),
    "retry": (503, b'{"error":{}}', {"Retry-After": "1", "x-should-retry": "true"}, "application/json", False),
    "empty": (200, b"", {}, None, False),
    "untyped": (200, b"abc", {}, None, False),
    "closing": (413, b'{"error":{}}', {}, "application/json", True),
    "conn-header": (200, JSON, {"Connection": "close"}, "application/json", False),
    "no-content": (204, b"", {}, None, False),
    "not-modified": (304, b"", {}, None, False),
}


def _answer(cls: type[web.Response], name: str) -> web.Response:
    status, body, headers, ctype, force = ANSWERS[name]
    resp = cls(body=body, status=status, headers=headers, content_type=ctype)
    if force:
        resp.force_close()
    return resp


async def _serve(cls: type[web.Response], gateway: bool = False) -> tuple[asyncio.AbstractServer, int]:
    """``cls``'s answers from a bare aiohttp server, or (``gateway``) from the gateway's own
    protocol, whose finish_response sends a BytesResponse without aiohttp's."""
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return _answer(cls, request.path.strip("/"))

    factory = (GatewayServer(handler, ServerConfig(), access_log=None) if gateway
               else web.Server(handler, access_log=None))
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _exchange(port: int, raw: bytes) -> tuple[bytes, bool]:
    """Send ``raw``; read until the server closes or goes quiet. Returns (bytes, closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = b""
    closed = False
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 0.3)
        except asyncio.TimeoutError:
            break
        if not chunk:
            closed = True
            break
        data += chunk
    writer.close()
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", data), closed


def _request(name: str, method: str = "GET", version: str = "1.1", extra: str = "") -> bytes:
    return f"{method} /{name} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


CASES = [
    *[(name, "GET", "1.1", "") for name in ANSWERS],
    *[(name, "GET", "1.0", "") for name in ("json", "error", "empty", "closing")],
    ("json", "GET", "1.0", "Connection: keep-alive\r\n"),
    ("json", "GET", "1.1", "Connection: close\r\n"),
    ("json", "HEAD", "1.1", ""),
    ("error", "HEAD", "1.0", ""),
    ("json", "POST", "1.1", ""),
]


@pytest.mark.parametrize("gateway", [False, True], ids=["aiohttp-server", "gateway-protocol"])
@pytest.mark.parametrize("name,method,version,extra", CASES)
async def test_same_bytes_and_connection_fate_as_aiohttp(name: str, method: str, version: str, extra: str,
                                                         gateway: bool) -> None:
    raw = _request(name, method, version, extra)
    if method == "POST":
        raw = f"POST /{name} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    ours, theirs = await _serve(BytesResponse, gateway), await _serve(web.Response, gateway)
    try:
        got = await _exchange(ours[1], raw)
        want = await _exchange(theirs[1], raw)
    finally:
        for server, _ in (ours, theirs):
            server.close()
    assert got == want
    assert got[0].startswith(b"HTTP/1.")


async def test_keep_alive_connection_serves_the_next_request() -> None:
    """Two pipelined requests on one connection: both answered, the connection stays open."""
    server, port = await _serve(BytesResponse)
    try:
        data, closed = await _exchange(port, _request("json") + _request("error"))
    finally:
        server.close()
    assert not closed
    assert data.count(b"HTTP/1.1 ") == 2
    assert data.endswith(b'{"error":{"message":"no"}}')


class _Recording(BytesResponse):
    """Counts the answers that went through aiohttp's own path (``_start``)."""
    __slots__ = ()
    slow: list[str] = []

    async def _start(self, request: web.BaseRequest):  # type: ignore[no-untyped-def]
        _Recording.slow.append(request.path)
        return await super()._start(request)


async def test_the_fast_path_is_taken_exactly_where_nothing_unusual_applies() -> None:
    _Recording.slow.clear()
    server, port = await _serve(_Recording)
    try:
        for name in ("json", "error", "empty", "closing", "no-content", "not-modified"):
            await _exchange(port, _request(name))
        await _exchange(port, _request("json", "HEAD"))
    finally:
        server.close()
    assert _Recording.slow == ["/no-content", "/not-modified", "/json"]  # 204, 304, HEAD


CTOR_ARGS = [
    {"body": JSON},
    {"body": JSON, "status": 201, "content_type": "application/json"},
    {"body": b"", "status": 404, "headers": {"x-should-retry": "false", "Retry-After": "1"}},
    {"body": JSON, "status": 599},                                  # no reason phrase
    {"body": JSON, "headers": [("X-A", "1"), ("x-a", "2")], "content_type": "text/plain"},
    {"body": JSON, "status": 200, "content_type": "application/json; charset=utf-8"},  # aiohttp refuses
    {"body": JSON, "headers": {"Content-Type": "a/b"}, "content_type": "c/d"},        # aiohttp refuses
    {"body": bytearray(b"x")}, {"body": None}, {"text": "hi"}, {"body": JSON, "reason": "Fine"},
    {"body": JSON, "charset": "utf-8", "content_type": "text/plain"}, {"body": JSON, "status": "200"},
]


@pytest.mark.parametrize("kwargs", CTOR_ARGS)
def test_the_constructor_sets_up_what_aiohttps_does(kwargs: dict) -> None:
    """Every attribute, the headers in order, and the same refusals."""
    try:
        want = web.Response(**kwargs)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            BytesResponse(**kwargs)
        assert str(got.value) == str(exc)
        return
    got = BytesResponse(**kwargs)
    assert list(got.headers.items()) == list(want.headers.items())
    state = {k: v for k, v in vars(want).items() if k != "_headers"}
    assert {k: v for k, v in vars(got).items() if k != "_headers"} == state
    assert (got.status, got.reason, got.body, got.content_length, got.content_type) == \
        (want.status, want.reason, want.body, want.content_length, want.content_type)


async def test_an_applications_on_response_prepare_signal_still_runs(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    """Under a web.Application (an embedding) the prepare hook is not the low-level server's
    no-op: its on_response_prepare handlers see the response before the head is written."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return BytesResponse(body=JSON, content_type="application/json")

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Prepared"] = "yes"

    app = web.Application()
    app.router.add_get("/x", handler)
    app.on_response_prepare.append(stamp)
    client = await aiohttp_client(app)
    resp = await client.get("/x")
    assert resp.status == 200 and resp.headers["X-Prepared"] == "yes"
    assert await resp.read() == JSON


async def test_a_body_larger_than_the_write_buffer_waits_for_the_client_to_drain_it() -> None:
    """prepare returns once the transport is below its high-water mark again (aiohttp's drain),
    not with megabytes still queued; the client gets every byte."""
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB
    queued: list[int] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        resp = BytesResponse(body=big, content_type="application/octet-stream")
        await resp.prepare(request)
        assert request.transport is not None
        queued.append(request.transport.get_write_buffer_size())
        return resp

    server = await asyncio.get_running_loop().create_server(web.Server(handler, access_log=None), "127.0.0.1", 0)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # before connecting: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.sockets[0].getsockname()[1]))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(_request("big"))
        await asyncio.sleep(0.2)  # the server has written what the socket takes and is waiting
        assert queued == []
        head = await reader.readuntil(b"\r\n\r\n")
        data = await reader.readexactly(len(big))
        writer.close()
    finally:
        server.close()
    assert b"Content-Length: %d\r\n" % len(big) in head and data == big
    assert len(queued) == 1 and queued[0] <= 64 * 1024
