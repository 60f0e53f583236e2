"""The lean HTTP/1.1 client: the response parser fed at every byte boundary, and the pool
against raw ``asyncio.start_server`` servers (so the bytes on the wire are exactly ours).
The client micro-benchmark lives in bench/h1_client.py.
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from proxy.providers.h1 import (
    H1ConnectError,
    H1ConnectionError,
    H1Pool,
    H1ProtocolError,
    H1Response,
    H1Stream,
    UNBOUNDED,
    ResponseParser,
)
from tests.support import eventually

# ============================================================================ parser


def splits(raw: bytes):
    """Every way to cut ``raw`` in two, plus one byte at a time."""
    for i in range(len(raw) + 1):
        yield [raw[:i], raw[i:]]
    yield [raw[i:i + 1] for i in range(len(raw))]


def parse(pieces: list[bytes], *, eof: bool = False, **kw) -> H1Response:
    p = ResponseParser(**kw)
    got = None
    for piece in pieces:
        r = p.feed(piece)
        if r is not None:
            assert got is None, "response returned twice"
            got = r
    if eof:
        r = p.feed_eof()
        if r is not None:
            assert got is None
            got = r
    assert got is not None, "response not complete"
    assert p.complete
    return got


def parse_every_split(raw: bytes, *, eof: bool = False, **kw) -> H1Response:
    results = [parse(pieces, eof=eof, **kw) for pieces in splits(raw)]
    first = results[0]
    for r in results[1:]:
        assert (r.status, r.reason, list(r.headers.items()), r.body, r.keep_alive) == \
               (first.status, first.reason, list(first.headers.items()), first.body, first.keep_alive)
    return first


def fails_every_split(raw: bytes, match: str, *, eof: bool = False, **kw) -> None:
    for pieces in splits(raw):
        p = ResponseParser(**kw)
        with pytest.raises(H1ProtocolError, match=match):
            for piece in pieces:
                p.feed(piece)
            if eof:
                p.feed_eof()
            raise AssertionError(f"no error for {pieces!r}")


JSON = b'{"id":"file-abc123","object":"file","bytes":120000,"purpose":"batch"}'


def test_content_length_body():
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
           b"x-request-id:  req_1 \r\n\r\n%s" % (len(JSON), JSON))
    r = parse_every_split(raw)
    assert (r.status, r.reason, r.body, r.keep_alive) == (200, "OK", JSON, True)
    assert r.headers["x-request-id"] == "req_1"  # optional whitespace trimmed
    assert r.json()["id"] == "file-abc123"


def test_chunked_body_with_extensions_and_trailers():
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
           b"5;name=value\r\n{\"a\":\r\n"
           b"A ; ext ; other=\"q\"\r\n 123456789\r\n"
           b"1\r\n}\r\n"
           b"0;last\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n")
    r = parse_every_split(raw)
    assert r.body == b'{"a": 123456789}'
    assert r.keep_alive
    assert "X-Trailer" not in r.headers  # trailers skipped


def test_chunked_body_without_trailers_and_bare_lf():
    raw = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"
    r = parse_every_split(raw)
    assert (r.body, r.keep_alive, r.headers["transfer-encoding"]) == (b"abc", True, "chunked")


def test_bare_lf_head_with_crlfcrlf_in_body():
    raw = b"HTTP/1.1 200 OK\nContent-Length: 12\nX-A: 1\n\nab\r\n\r\ncdefgh"
    r = parse_every_split(raw)
    assert (r.body, r.headers["x-a"]) == (b"ab\r\n\r\ncdefgh", "1")


def test_close_delimited_body():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this until the end"
    r = parse_every_split(raw, eof=True)
    assert r.body == b"all of this until the end"
    assert r.keep_alive is False


def test_close_delimited_empty_body():
    assert parse_every_split(b"HTTP/1.1 200 OK\r\n\r\n", eof=True).body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status):
    raw = b"HTTP/1.1 %d Whatever\r\nETag: \"x\"\r\nContent-Length: 55\r\n\r\n" % status
    r = parse_every_split(raw)  # complete without feed_eof, Content-Length ignored
    assert (r.status, r.body, r.keep_alive) == (status, b"", True)


def test_head_response_has_no_body():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    r = parse_every_split(raw, head_request=True)
    assert (r.body, r.keep_alive, r.headers["content-length"]) == (b"", True, "1234")


def test_100_continue_then_200():
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
           b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    r = parse_every_split(raw)
    assert (r.status, r.reason, r.body) == (201, "Created", b"ok")
    assert "Link" not in r.headers


def test_repeated_headers_kept():
    raw = (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\nset-cookie: b=2\r\n"
           b"SET-COOKIE: c=3\r\nVary: Accept\r\nVary: Origin\r\n\r\n")
    r = parse_every_split(raw)
    assert r.headers.getall("Set-Cookie") == ["a=1", "b=2", "c=3"]
    assert r.headers.getall("vary") == ["Accept", "Origin"]


def test_headers_case_insensitive():
    raw = b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 3\r\nCONNECTION: Keep-Alive\r\nX-Thing: v\r\n\r\nabc"
    r = parse_every_split(raw)
    assert r.body == b"abc" and r.keep_alive
    assert r.headers["content-length"] == r.headers["CONTENT-LENGTH"] == "3"
    assert r.headers["x-thing"] == "v"
    assert list(r.headers.keys()) == ["cOnTeNt-LeNgTh", "CONNECTION", "X-Thing"]  # spelling kept


def test_status_line_variants():
    assert parse([b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]).reason == "Not Found"
    assert parse([b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"]).reason == ""
    assert parse([b"HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n"]).status == 500


def test_connection_close_and_http10():
    r = parse([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"])
    assert r.body == b"x" and r.keep_alive is False
    r = parse([b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"])
    assert r.keep_alive is False
    r = parse([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"])
    assert r.keep_alive is True
    r = parse([b"HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 0\r\n\r\n"])
    assert r.keep_alive is False


def test_transfer_encoding_wins_over_content_length_but_no_reuse():
    r = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"])
    assert r.body == b"hi" and r.keep_alive is False


def test_repeated_identical_content_length_ok():
    assert parse([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"]).body == b"hi"


def test_surplus_after_non_keep_alive_response_is_kept():
    p = ResponseParser()
    r = p.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhiJUNK")
    assert r is not None and r.body == b"hi" and p.surplus == b"JUNK"
    assert p.feed(b"MORE") is None and p.surplus == b"JUNKMORE"


def test_large_body_in_many_pieces():
    body = bytes(range(256)) * 4096  # 1 MiB
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert parse([raw[i:i + 65536] for i in range(0, len(raw), 65536)]).body == body
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(body[i:i + 10000]), body[i:i + 10000]) for i in range(0, len(body), 10000)) + b"0\r\n\r\n"
    assert parse([chunked[i:i + 7777] for i in range(0, len(chunked), 7777)]).body == body


def test_non_ascii_header_bytes_round_trip():
    r = parse([b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9 \xff\r\nContent-Length: 0\r\n\r\n"])
    assert r.headers["x-name"].encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff"


# -- errors


@pytest.mark.parametrize("line", [
    b"HTTX/1.1 200 OK", b"HTTP/1.1 2000 OK", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1  200 OK",
    b"http/1.1 200 OK", b"HTTP/1.1 abc OK", b"garbage",
])
def test_bad_status_line(line):
    fails_every_split(line + b"\r\nContent-Length: 0\r\n\r\n", "bad status line")


def test_101_is_an_error():
    fails_every_split(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101")


def test_header_block_too_large():
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 200 + b"\r\nContent-Length: 0\r\n\r\n"
    fails_every_split(raw, "header section too large", max_header_size=128)
    # without an end in sight: refused as soon as the buffer passes the limit
    p = ResponseParser(max_header_size=128)
    with pytest.raises(H1ProtocolError, match="too large"):
        for _ in range(200):
            p.feed(b"X-Endless: aaaaaaaa\r\n")


def test_body_too_large():
    fails_every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", "too large", max_body_size=10)
    fails_every_split(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\n",
                      "too large", max_body_size=10)
    fails_every_split(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11, "too large", eof=True, max_body_size=10)


@pytest.mark.parametrize("size_line", [b"zz", b"-1", b" 5", b"0x5", b"+5", b"", b"1_0", b"ffffffffffffffff"])
def test_bad_chunk_size(size_line):
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n"
    fails_every_split(raw, "chunk size")


def test_bad_chunk_terminator():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    fails_every_split(raw, "chunk terminator")


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiX",         # one byte too many
    b"HTTP/1.1 204 No Content\r\n\r\nX",                           # a byte after a bodiless answer
])
def test_surplus_bytes_on_keep_alive_response(raw):
    for pieces in splits(raw):
        p = ResponseParser()
        with pytest.raises(H1ProtocolError, match="after response"):
            for piece in pieces:
                p.feed(piece)


@pytest.mark.parametrize("raw", [
    b"",
    b"HTTP/1.1 200 OK\r\nContent-",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nonly5",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
])
def test_premature_eof(raw):
    for pieces in splits(raw):
        p = ResponseParser()
        with pytest.raises(H1ProtocolError, match="connection closed before"):
            for piece in pieces:
                assert p.feed(piece) is None
            p.feed_eof()


@pytest.mark.parametrize("raw, match", [
    (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", "obs-fold"),
    (b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n", "invalid header"),
    (b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n", "invalid header"),
    (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", "invalid header"),
    (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", "bare CR"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", "bad Content-Length"),
])
def test_invalid_heads(raw, match):
    fails_every_split(raw, match)


def test_error_state_is_sticky():
    p = ResponseParser()
    with pytest.raises(H1ProtocolError):
        p.feed(b"nonsense\r\n\r\n")
    with pytest.raises(H1ProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


# -- incremental (streaming) mode


def stream_parse(pieces: list[bytes], *, eof: bool = False, **kw) -> tuple[H1Response, list[bytes]]:
    """Feed ``pieces`` through feed_stream: (head, body pieces), checking the head comes exactly once."""
    p = ResponseParser(max_body_size=UNBOUNDED, **kw)
    head = None
    got: list[bytes] = []
    for piece in pieces:
        h, body = p.feed_stream(piece)
        if h is not None:
            assert head is None, "head returned twice"
            assert not got, "body before head"
            head = h
        assert type(body) is bytes
        if body:
            assert head is not None
            got.append(body)
    if eof:
        assert p.needs_eof
        p.feed_eof()
    assert head is not None and head.body == b""
    assert p.complete
    return head, got


SSE_EVENTS = [b'event: a\ndata: {"x":1}\n\n', b"data: [partial]\n\n", b"!"]
SSE_BODY = b"".join(SSE_EVENTS)
SSE_CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n%s\r\n" % (len(SSE_EVENTS[0]), SSE_EVENTS[0])
               + b"%x;ext=1\r\n%s\r\n" % (len(SSE_EVENTS[1]), SSE_EVENTS[1])
               + b"%X\n%s\n" % (len(SSE_EVENTS[2]), SSE_EVENTS[2])  # bare LF framing too
               + b"0\r\nX-Trailer: t\r\n\r\n")


def test_stream_chunked_split_at_every_byte_boundary():
    for pieces in splits(SSE_CHUNKED):
        head, got = stream_parse(pieces)
        assert (head.status, head.headers["content-type"], head.keep_alive) == (200, "text/event-stream", True)
        assert b"".join(got) == SSE_BODY
    # fed one byte at a time, every data byte comes out at once, framing never does
    head, got = stream_parse([SSE_CHUNKED[i:i + 1] for i in range(len(SSE_CHUNKED))])
    assert got == [bytes([c]) for c in SSE_BODY]


def test_stream_chunk_data_delivered_before_the_chunk_is_whole():
    p = ResponseParser(max_body_size=UNBOUNDED)
    head, body = p.feed_stream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\nabc")
    assert head is not None and body == b"abc"
    assert p.feed_stream(b"x" * 1000) == (None, b"x" * 1000)
    assert p.feed_stream(b"y" * (0x100000 - 1003) + b"\r\n2\r\nzz\r\n0\r") == (None, b"y" * (0x100000 - 1003) + b"zz")
    assert not p.complete
    assert p.feed_stream(b"\n\r\n") == (None, b"") and p.complete


def test_stream_several_chunks_in_one_feed_come_out_as_one_piece():
    _, got = stream_parse([SSE_CHUNKED])
    assert got == [SSE_BODY]


def test_stream_parser_content_length_and_close_delimited():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    for pieces in splits(raw):
        head, got = stream_parse(pieces)
        assert b"".join(got) == b"0123456789" and head.keep_alive
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n"
    for pieces in splits(raw):
        head, got = stream_parse(pieces, eof=True)
        assert b"".join(got) == b"data: 1\n\ndata: 2\n\n" and not head.keep_alive
    head, got = stream_parse([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    assert head.status == 204 and got == []


def test_stream_mode_is_unbounded_and_errors_as_feed():
    p = ResponseParser(max_body_size=UNBOUNDED)
    p.feed_stream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(100):  # 100 x 1 MiB chunks: no max_body_size
        assert len(p.feed_stream(b"100000\r\n" + b"x" * 0x100000 + b"\r\n")[1]) == 0x100000
    with pytest.raises(H1ProtocolError, match="chunk size"):
        p.feed_stream(b"zz\r\n")
    with pytest.raises(H1ProtocolError, match="error state"):
        p.feed_stream(b"0\r\n\r\n")
    p = ResponseParser(max_body_size=UNBOUNDED)
    with pytest.raises(H1ProtocolError, match="after response"):
        p.feed_stream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiJUNK")
    p = ResponseParser(max_body_size=UNBOUNDED)
    p.feed_stream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    with pytest.raises(H1ProtocolError, match="after response"):
        p.feed_stream(b"JUNK")


# ============================================================================ pool against raw servers

Handler = Callable[["ServerConn"], Awaitable[None]]


class ServerConn:
    def __init__(self, server: "RawServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.requests: list[bytes] = []

    async def read_request(self) -> bytes | None:
        """One request, head + Content-Length body, as raw bytes (None at EOF)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        raw = head + (await self.reader.readexactly(length) if length else b"")
        self.requests.append(raw)
        self.server.requests.append(raw)
        return raw

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class RawServer:
    def __init__(self, handler: Handler, ssl: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl
        self.connections: list[ServerConn] = []
        self.requests: list[bytes] = []
        self.active = 0
        self.max_active = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        for c in self.connections:
            if not c.writer.transport.is_closing():  # already-closed transports have no loop left
                c.writer.transport.abort()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_conn(self, reader, writer) -> None:
        conn = ServerConn(self, reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # test over: end quietly (3.11 streams log cancelled handlers)
            pass
        finally:
            self._tasks.discard(task)
            self.active -= 1
            if not writer.transport.is_closing():
                writer.close()


def ok(body: bytes = JSON, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def idle_all_closed(pool: H1Pool) -> bool:
    """``pool`` has idle connections and each has seen its end (the server's FIN, or the
    client's own abort): the event a test waits for before asking the pool for another."""
    return bool(pool._idle) and all(c.closed for c in pool._idle)


async def keep_alive_server(conn: ServerConn) -> None:
    while await conn.read_request() is not None:
        conn.send(ok())


async def test_keep_alive_reuse():
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin) as pool:
        for i in range(100):
            r = await pool.request("GET", f"/v1/files/file-{i}", [("Authorization", "Bearer k")], timeout=5)
            assert (r.status, r.body, r.keep_alive) == (200, JSON, True)
        assert len(srv.connections) == 1
        assert len(srv.requests) == 100
        assert (pool.open_connections, pool.idle_connections) == (1, 1)


async def test_request_bytes_exact():
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/v1/responses/r?include%5B%5D=a", [("Authorization", "Bearer sk-x")], timeout=5)
        await pool.request("POST", "/v1/responses", [("Content-Type", "application/json"), ("X-Dup", "1"),
                                                     ("x-dup", "2")], b'{"model":"m"}', timeout=5)
        await pool.request("POST", "/v1/files/f/cancel", [], timeout=5)
        await pool.request("DELETE", "/v1/files/f%20x", [], timeout=5)
        await pool.request("GET", "/a/%2F/b?q=%E2%82%AC&x=a+b", [("Accept", "*/*")], body=b"", timeout=5)
        host = f"127.0.0.1:{srv.port}".encode()
        assert srv.requests == [
            b"GET /v1/responses/r?include%5B%5D=a HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer sk-x\r\n\r\n",
            b"POST /v1/responses HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\nX-Dup: 1\r\n"
            b"x-dup: 2\r\nContent-Length: 13\r\n\r\n{\"model\":\"m\"}",
            b"POST /v1/files/f/cancel HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n\r\n",
            b"DELETE /v1/files/f%20x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET /a/%2F/b?q=%E2%82%AC&x=a+b HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n",
        ]
        assert len(srv.connections) == 1


async def test_large_body_sent_in_two_writes():
    body = b"x" * (3 * 1024 * 1024 + 17)
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin) as pool:
        r = await pool.request("POST", "/v1/responses", [], body, timeout=10)
        assert r.status == 200
        assert srv.requests[0].endswith(b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = await pool.request("GET", "/next", [], timeout=10)  # the connection is reused afterwards
        assert r.status == 200 and len(srv.connections) == 1


def test_host_header_forms():
    assert H1Pool("https://api.openai.com")._host_line == "Host: api.openai.com\r\n"
    assert H1Pool("https://api.openai.com:443/")._host_line == "Host: api.openai.com\r\n"
    assert H1Pool("https://example.com:8443")._host_line == "Host: example.com:8443\r\n"
    assert H1Pool("http://[::1]:8080")._host_line == "Host: [::1]:8080\r\n"
    assert H1Pool("http://Example.COM")._host_line == "Host: example.com\r\n"
    for bad in ("ftp://x", "http://x/v1", "http://u:p@x", "http://x?q=1", "localhost:80"):
        with pytest.raises(ValueError):
            H1Pool(bad)


async def test_invalid_request_heads_refused():
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin) as pool:
        for method, target, headers in [
            ("GET", "/a b", []),
            ("GET", "/a\r\nX: y", []),
            ("GET", "no-slash", []),
            ("GET", "/é", []),
            ("GET", "/", [("X-Inject", "v\r\nEvil: 1")]),
            ("GET", "/", [("X-Inject\n", "v")]),
            ("GET", "/", [("Host", "other")]),
            ("POST", "/", [("content-length", "5")]),
            ("POST", "/", [("Transfer-Encoding", "chunked")]),
            ("GE T", "/", []),
        ]:
            with pytest.raises(ValueError):
                await pool.request(method, target, headers, timeout=5)
        assert srv.requests == []


async def test_concurrency_limit_with_waiters():
    async def slow(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            await asyncio.sleep(0.02)  # stimulus: a slow upstream, so that the 50 requests overlap
            srv.in_flight -= 1
            conn.send(ok())

    async with RawServer(slow) as srv, H1Pool(srv.origin, limit=10) as pool:
        seen_open = []

        async def one(i: int) -> H1Response:
            r = await pool.request("GET", f"/r/{i}", [], timeout=10)
            seen_open.append(pool.open_connections)
            return r

        results = await asyncio.gather(*(one(i) for i in range(50)))
        assert all(r.status == 200 for r in results)
        assert len(srv.requests) == 50
        assert len(srv.connections) == 10  # waiters were handed the released connections
        assert srv.max_active == 10 and srv.max_in_flight == 10
        assert max(seen_open) <= 10 and pool.open_connections == 10


async def test_concurrency_below_limit_opens_no_more_than_needed():
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin, limit=100) as pool:
        rs = await asyncio.gather(*(pool.request("GET", "/", [], timeout=5) for _ in range(50)))
        assert all(r.status == 200 for r in rs)
        assert len(srv.connections) <= 50
        rs = await asyncio.gather(*(pool.request("GET", "/", [], timeout=5) for _ in range(50)))
        assert len(srv.connections) <= 50  # second burst runs on the idle connections


async def test_cancelled_waiter_does_not_leak_slot():
    release = asyncio.Event()

    async def held(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await release.wait()
            conn.send(ok())

    async with RawServer(held) as srv, H1Pool(srv.origin, limit=1) as pool:
        first = asyncio.create_task(pool.request("GET", "/1", [], timeout=5))
        assert await eventually(lambda: len(srv.requests) == 1)  # the first request holds the only slot
        with pytest.raises(asyncio.TimeoutError):  # waits for the only slot, times out
            await pool.request("GET", "/2", [], timeout=0.05)
        release.set()
        assert (await first).status == 200
        assert (await pool.request("GET", "/3", [], timeout=5)).status == 200
        assert pool.open_connections == 1 and len(srv.connections) == 1


async def test_idle_connection_closed_by_server_is_not_reused():
    async def one_then_close(conn: ServerConn) -> None:
        await conn.read_request()
        conn.send(ok())
        await conn.writer.drain()
        conn.writer.close()

    async with RawServer(one_then_close) as srv, H1Pool(srv.origin) as pool:
        assert (await pool.request("GET", "/1", [], timeout=5)).status == 200
        assert await eventually(lambda: idle_all_closed(pool))  # the FIN arrives while the connection idles
        assert (await pool.request("GET", "/2", [], timeout=5)).status == 200
        assert len(srv.connections) == 2 and len(srv.requests) == 2  # not sent on the closed one, not retried


async def stale_second_request(conn: ServerConn) -> None:
    """Serve the first request; close on the second without answering (keep-alive race)."""
    n = 0
    while await conn.read_request() is not None:
        n += 1
        if n == 1 and len(conn.server.connections) == 1:
            conn.send(ok())
        elif n == 1:
            conn.send(ok(b'{"retried":true}'))
        else:
            conn.writer.close()
            return


async def test_stale_keep_alive_get_retried_on_new_connection():
    async with RawServer(stale_second_request) as srv, H1Pool(srv.origin) as pool:
        assert (await pool.request("GET", "/1", [], timeout=5)).body == JSON
        r = await pool.request("GET", "/2", [], timeout=5)
        assert r.body == b'{"retried":true}'
        assert len(srv.connections) == 2
        assert [q.split(b" ")[1] for q in srv.requests] == [b"/1", b"/2", b"/2"]


async def test_stale_keep_alive_get_retried_on_reset_too():
    async def reset_second(conn: ServerConn) -> None:
        n = 0
        while await conn.read_request() is not None:
            n += 1
            if n == 2:
                conn.reset()
                return
            conn.send(ok())

    async with RawServer(reset_second) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/1", [], timeout=5)
        assert (await pool.request("DELETE", "/2", [], timeout=5)).status == 200
        assert len(srv.connections) == 2


async def test_stale_keep_alive_post_raises():
    async with RawServer(stale_second_request) as srv, H1Pool(srv.origin) as pool:
        await pool.request("POST", "/v1/responses", [], b"{}", timeout=5)
        with pytest.raises(H1ConnectionError) as ei:
            await pool.request("POST", "/v1/responses", [], b"{}", timeout=5)
        assert ei.value.reused is True and ei.value.response_started is False
        assert len(srv.connections) == 1 and len(srv.requests) == 2
        assert pool.open_connections == 0
        # the caller may retry: a new connection
        assert (await pool.request("POST", "/v1/responses", [], b"{}", timeout=5)).body == b'{"retried":true}'


async def test_get_retried_only_once():
    async def serve_first_then_die(conn: ServerConn) -> None:
        n = 0
        while await conn.read_request() is not None:
            n += 1
            if n == 1 and len(conn.server.connections) == 1:
                conn.send(ok())
            else:
                conn.writer.close()  # the retry's fresh connection dies too
                return

    async with RawServer(serve_first_then_die) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/1", [], timeout=5)
        with pytest.raises(H1ConnectionError) as ei:
            await pool.request("GET", "/2", [], timeout=5)
        assert ei.value.reused is False and ei.value.response_started is False
        assert len(srv.requests) == 3


async def test_connection_close_response_not_reused():
    async def close_hdr(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(ok(extra=b"Connection: close\r\n"))  # ... but leaves the socket open

    async with RawServer(close_hdr) as srv, H1Pool(srv.origin) as pool:
        for _ in range(3):
            r = await pool.request("GET", "/", [], timeout=5)
            assert r.status == 200 and r.keep_alive is False
        assert len(srv.connections) == 3
        assert pool.open_connections == 0 and pool.idle_connections == 0
        assert await eventually(lambda: srv.active == 0)  # the client closed each one


async def test_http10_and_close_delimited_responses():
    async def http10(conn: ServerConn) -> None:
        await conn.read_request()
        if len(conn.server.connections) == 1:
            conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
            await conn.writer.drain()
            conn.writer.close()

    async with RawServer(http10) as srv, H1Pool(srv.origin) as pool:
        r = await pool.request("GET", "/", [], timeout=5)
        assert (r.body, r.keep_alive) == (b"hi", False)
        r = await pool.request("GET", "/", [], timeout=5)
        assert (r.body, r.keep_alive) == (b"until close", False)
        assert pool.open_connections == 0


async def test_chunked_and_head_over_the_pool():
    async def varied(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.startswith(b"HEAD"):
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n")
            else:
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                await asyncio.sleep(0.005)  # stimulus: the chunks come in a later write than the head
                conn.send(b"4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: 1\r\n\r\n")

    async with RawServer(varied) as srv, H1Pool(srv.origin) as pool:
        r = await pool.request("HEAD", "/", [], timeout=5)
        assert (r.status, r.body, r.headers["content-length"]) == (200, b"", "999")
        r = await pool.request("GET", "/", [], timeout=5)
        assert r.body == b"wikipedia"
        r = await pool.request("HEAD", "/", [], timeout=5)
        assert len(srv.connections) == 1


async def test_timeout_closes_the_connection():
    async def silent(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            if len(conn.requests) == 2:
                await asyncio.sleep(10)  # stimulus: never answers
            conn.send(ok())

    async with RawServer(silent) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/1", [], timeout=5)
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.request("GET", "/2", [], timeout=0.1)
        assert time.monotonic() - t0 < 1
        assert pool.open_connections == 0 and pool.idle_connections == 0
        assert await eventually(lambda: srv.connections[0].writer.transport.is_closing()
                                or srv.connections[0].reader.at_eof())  # the client closed it
        assert (await pool.request("GET", "/3", [], timeout=5)).status == 200
        assert len(srv.connections) == 2


async def test_timeout_timer_rearms_for_later_deadlines():
    async def delays(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            await asyncio.sleep(float(req.split(b" ")[1][1:]))  # stimulus: the path is the delay
            conn.send(ok())

    async with RawServer(delays) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/0", [], timeout=0.15)  # arms the connection's timer at +0.15 s
        # fires at +0.15 s while this exchange runs: must re-arm for its own, later deadline
        assert (await pool.request("GET", "/0.25", [], timeout=0.6)).status == 200
        await pool.request("GET", "/0", [], timeout=0.15)
        assert (await pool.request("GET", "/0.25", [], timeout=None)).status == 200  # no deadline at all
        with pytest.raises(asyncio.TimeoutError):
            await pool.request("GET", "/0.5", [], timeout=0.2)
        assert len(srv.connections) == 1


async def _trickle(conn: ServerConn, gap: float, pieces: int = 6) -> None:
    """Answer every request with a chunked body in ``pieces`` writes, ``gap`` seconds apart."""
    while await conn.read_request() is not None:
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(pieces):
            await asyncio.sleep(gap)  # stimulus: the gap between pieces is what is tested
            conn.send(chunk(b"x"))
            await conn.writer.drain()
        conn.send(b"0\r\n\r\n")


async def test_read_timeout_is_a_gap_not_a_deadline():
    async with RawServer(lambda c: _trickle(c, 0.1)) as srv, H1Pool(srv.origin) as pool:
        t0 = time.monotonic()
        resp = await pool.request("GET", "/", [], read_timeout=0.4)
        assert resp.body == b"x" * 6 and time.monotonic() - t0 > 0.4  # longer in all than read_timeout
        assert len(srv.connections) == 1 and pool.idle_connections == 1


async def test_read_timeout_gap_mid_body_times_out():
    async with RawServer(lambda c: _trickle(c, 1.5, pieces=2)) as srv, H1Pool(srv.origin) as pool:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError, match="no data from the upstream"):
            await pool.request("GET", "/", [], read_timeout=0.25)
        assert 0.2 < time.monotonic() - t0 < 1.2 and pool.open_connections == 0


async def test_total_timeout_bounds_a_trickle_whose_gaps_are_short():
    async with RawServer(lambda c: _trickle(c, 0.1)) as srv, H1Pool(srv.origin) as pool:
        with pytest.raises(asyncio.TimeoutError, match="total timeout"):
            await pool.request("GET", "/", [], timeout=0.35, read_timeout=5)
        with pytest.raises(asyncio.TimeoutError, match="total timeout"):
            st = await pool.stream("GET", "/", [], timeout=0.35, read_timeout=5)
            while await st.read():
                pass


async def test_stream_read_timeout_covers_the_wait_for_the_head():
    async def late(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(10)  # stimulus: never answers

    async with RawServer(late) as srv, H1Pool(srv.origin) as pool:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError, match="no data from the upstream"):
            await pool.stream("GET", "/", [], read_timeout=0.2)
        assert time.monotonic() - t0 < 1 and pool.open_connections == 0


async def test_reset_mid_body():
    async def half(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            if len(conn.requests) == 1:
                conn.send(ok())
                continue
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await conn.writer.drain()
            # the client has the first bytes (so the reset comes mid-response, not before it)
            assert await eventually(lambda: any(c.started for c in pool._conns))
            conn.reset()
            return

    async with RawServer(half) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/1", [], timeout=5)
        with pytest.raises(H1ConnectionError) as ei:
            await pool.request("GET", "/2", [], timeout=5)  # idempotent, but the response had started
        assert ei.value.response_started is True and ei.value.reused is True
        assert len(srv.connections) == 1 and pool.open_connections == 0


async def test_protocol_error_closes_connection():
    async def bad(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA")

    async with RawServer(bad) as srv, H1Pool(srv.origin) as pool:
        with pytest.raises(H1ProtocolError, match="after response"):
            await pool.request("GET", "/", [], timeout=5)
        assert pool.open_connections == 0


async def test_unsolicited_bytes_on_idle_connection():
    async def chatty(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(ok())
            assert await eventually(lambda: pool.idle_connections == 1)  # the 408 comes once it idles
            conn.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")

    async with RawServer(chatty) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/", [], timeout=5)
        assert await eventually(lambda: idle_all_closed(pool))  # the 408 made the client drop it
        assert (await pool.request("GET", "/", [], timeout=5)).status == 200
        assert len(srv.connections) == 2


async def test_idle_timeout_closes_lazily():
    async with RawServer(keep_alive_server) as srv, H1Pool(srv.origin, idle_timeout=0.05) as pool:
        await pool.request("GET", "/", [], timeout=5)
        await asyncio.sleep(0.1)  # stimulus: the connection idles longer than idle_timeout
        await pool.request("GET", "/", [], timeout=5)
        assert len(srv.connections) == 2 and pool.open_connections == 1


async def test_connect_errors():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    pool = H1Pool(f"http://127.0.0.1:{port}")
    with pytest.raises(H1ConnectError) as ei:
        await pool.request("POST", "/", [], b"x", timeout=5)
    assert isinstance(ei.value, ConnectionError) and not ei.value.reused and not ei.value.response_started
    assert pool.open_connections == 0
    await pool.close()


async def test_close_pool():
    async with RawServer(keep_alive_server) as srv:
        pool = H1Pool(srv.origin)
        await asyncio.gather(*(pool.request("GET", "/", [], timeout=5) for _ in range(5)))
        await pool.close()
        assert await eventually(lambda: srv.active == 0)  # the server saw every connection end
        with pytest.raises(RuntimeError):
            await pool.request("GET", "/", [], timeout=5)


@pytest.fixture
def tls_cert(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make a test certificate (apt-get install openssl)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return tmp_path


async def test_https_with_sni(tls_cert: Path):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_cert / "cert.pem", tls_cert / "key.pem")
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sslobj, name, ctx: sni.append(name)

    async def tls(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if b"/eof" in req:
                conn.send(b"HTTP/1.1 200 OK\r\n\r\nclose-delimited over TLS")
                await conn.writer.drain()
                conn.writer.close()
                return
            conn.send(ok())

    async with RawServer(tls, ssl=server_ctx) as srv:
        client_ctx = ssl.create_default_context(cafile=str(tls_cert / "cert.pem"))
        async with H1Pool(f"https://localhost:{srv.port}", ssl_context=client_ctx) as pool:
            for _ in range(3):
                r = await pool.request("GET", "/v1/files", [], timeout=5)
                assert (r.status, r.body) == (200, JSON)
            r = await pool.request("GET", "/eof", [], timeout=5)
            assert (r.body, r.keep_alive) == (b"close-delimited over TLS", False)
        assert sni == ["localhost"] and len(srv.connections) == 1  # SNI sent; one keep-alive connection
        assert srv.requests[0].startswith(b"GET /v1/files HTTP/1.1\r\nHost: localhost:%d\r\n" % srv.port)
        async with H1Pool(f"https://localhost:{srv.port}") as pool:  # default context: untrusted cert
            with pytest.raises(H1ConnectError):
                await pool.request("GET", "/", [], timeout=5)


def test_under_uvloop():
    import uvloop  # a runtime dependency: never skipped

    async def main() -> None:
        await test_keep_alive_reuse()
        await test_stale_keep_alive_get_retried_on_new_connection()
        await test_timeout_closes_the_connection()
        await test_concurrency_limit_with_waiters()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# ============================================================================ streams


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def read_all(st: H1Stream) -> list[bytes]:
    out = []
    while piece := await st.read():
        out.append(piece)
    return out


async def test_stream_pieces_arrive_as_sent_then_connection_reused():
    sent: list[float] = []

    async def sse(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if not req.startswith(b"POST"):
                conn.send(ok())
                continue
            conn.send(SSE_HEAD)
            for i in range(3):
                if i:
                    await asyncio.sleep(0.1)  # stimulus: events 100 ms apart, as a model streams them
                sent.append(time.monotonic())
                conn.send(chunk(b"data: {\"n\":%d}\n\n" % i))
                await conn.writer.drain()
            conn.send(b"0\r\n\r\n")

    async with RawServer(sse) as srv, H1Pool(srv.origin) as pool:
        async with await pool.stream("POST", "/v1/responses", [("Accept", "text/event-stream")], b'{"stream":true}',
                                     timeout=5, read_timeout=5) as st:
            assert (st.status, st.headers["content-type"]) == (200, "text/event-stream")
            assert await st.read() == b'data: {"n":0}\n\n'
            assert len(sent) == 1  # returned before the server sent the second (100 ms later)
            assert await st.read() == b'data: {"n":1}\n\n'
            assert len(sent) == 2
            assert [p async for p in st] == [b'data: {"n":2}\n\n']
            assert await st.read() == b""  # (and again)
            assert st.complete
        assert (pool.open_connections, pool.idle_connections) == (1, 1)  # back in the pool
        assert (await pool.request("GET", "/next", [], timeout=5)).body == JSON
        assert len(srv.connections) == 1
        assert srv.requests[0].endswith(b"\r\nAccept: text/event-stream\r\nContent-Length: 15\r\n\r\n{\"stream\":true}")


async def test_stream_chunks_split_across_tcp_writes():
    body = bytes(range(256)) * 64
    wire = SSE_HEAD + chunk(body[:5000]) + chunk(body[5000:]) + b"0\r\n\r\n"

    async def dribble(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            for i in range(0, len(wire), 997):  # cuts land inside sizes, data and CRLFs
                conn.send(wire[i:i + 997])
                await conn.writer.drain()
                await asyncio.sleep(0.001)  # stimulus: each cut in a TCP write of its own

    async with RawServer(dribble) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/", [], timeout=5, read_timeout=5)
        pieces = await read_all(st)
        assert b"".join(pieces) == body and len(pieces) > 5  # handed over as it came
        assert pool.idle_connections == 1


async def test_stream_content_length_and_close_delimited():
    async def varied(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if b"/cl" in req:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
                await conn.writer.drain()
                await asyncio.sleep(0.05)  # stimulus: the body in two writes, handed over as two pieces
                conn.send(b"56789")
            elif b"/small" in req:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            else:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
                await conn.writer.drain()
                await asyncio.sleep(0.05)  # stimulus: as above, for a close-delimited body
                conn.send(b"data: 2\n\n")
                await conn.writer.drain()
                conn.writer.close()
                return

    async with RawServer(varied) as srv, H1Pool(srv.origin) as pool:
        async with await pool.stream("GET", "/cl", [], timeout=5, read_timeout=5) as st:
            assert await read_all(st) == [b"01234", b"56789"] and st.keep_alive
        async with await pool.stream("GET", "/small", [], timeout=5, read_timeout=5) as st:
            assert st.complete and pool.idle_connections == 1  # whole body with the head: released at once
            assert await read_all(st) == [b"hi"]
        async with await pool.stream("GET", "/eof", [], timeout=5, read_timeout=5) as st:
            assert not st.keep_alive
            assert await read_all(st) == [b"data: 1\n\n", b"data: 2\n\n"]
        assert len(srv.connections) == 1 and pool.open_connections == 0


async def test_stream_idle_timeout_raises_and_closes():
    async def stall(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(SSE_HEAD + chunk(b"data: 1\n\n"))
            await conn.writer.drain()
            await asyncio.sleep(0.1)  # stimulus: a gap shorter than read_timeout
            conn.send(chunk(b"data: 2\n\n"))
            await asyncio.sleep(10)  # stimulus: then nothing more

    async with RawServer(stall) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/", [], timeout=5, read_timeout=0.25)
        assert await st.read() == b"data: 1\n\n"
        assert await st.read() == b"data: 2\n\n"
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await st.read()
        assert 0.1 < time.monotonic() - t0 < 1
        assert pool.open_connections == 0
        with pytest.raises(asyncio.TimeoutError):
            await st.read()  # sticky
        assert await eventually(lambda: srv.connections[0].reader.at_eof())  # the client closed it


async def test_stream_head_timeout():
    async def silent(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(10)  # stimulus: never answers

    async with RawServer(silent) as srv, H1Pool(srv.origin) as pool:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.stream("POST", "/", [], b"{}", timeout=0.1, read_timeout=None)
        assert time.monotonic() - t0 < 1 and pool.open_connections == 0


async def test_stream_early_close_does_not_reuse():
    async def endless(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.startswith(b"GET /plain"):
                conn.send(ok())
                continue
            conn.send(SSE_HEAD)
            while True:
                conn.send(chunk(b"data: tick\n\n"))
                await conn.writer.drain()
                await asyncio.sleep(0.01)  # stimulus: a stream that never ends, paced

    async with RawServer(endless) as srv, H1Pool(srv.origin) as pool:
        async with await pool.stream("GET", "/sse", [], timeout=5, read_timeout=5) as st:
            assert await st.read() == b"data: tick\n\n"
        assert (pool.open_connections, pool.idle_connections) == (0, 0)
        with pytest.raises(RuntimeError):
            await st.read()
        assert (await pool.request("GET", "/plain", [], timeout=5)).status == 200
        assert len(srv.connections) == 2
        assert await eventually(lambda: srv.connections[0].writer.transport.is_closing())  # the client closed it


async def test_stream_dropped_without_close_frees_its_slot():
    async def endless(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(SSE_HEAD + chunk(b"data: x\n\n"))
            await asyncio.sleep(10)  # stimulus: then nothing more

    async with RawServer(endless) as srv, H1Pool(srv.origin, limit=1) as pool:
        st = await pool.stream("GET", "/", [], timeout=5, read_timeout=None)
        assert await st.read() == b"data: x\n\n"
        del st
        assert await eventually(lambda: pool.open_connections == 0)  # the dropped stream gave its slot back
        st = await pool.stream("GET", "/", [], timeout=1, read_timeout=None)  # the only slot is free
        st.close()
        assert len(srv.connections) == 2


async def test_stream_back_pressure_bounds_buffering():
    total = 50 * 1024 * 1024
    progress = {"sent": 0}

    async def firehose(conn: ServerConn) -> None:
        await conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while progress["sent"] < total:
            conn.send(block)
            progress["sent"] += len(block)
            await conn.writer.drain()

    async with RawServer(firehose) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/big", [], timeout=5, read_timeout=0.2)
        await asyncio.sleep(0.5)  # stimulus: a consumer that does not read (longer than read_timeout: no timeout)
        assert st.buffered <= 2 * 1024 * 1024
        assert progress["sent"] < 16 * 1024 * 1024  # the server is held back (socket buffers only)
        got = peak = 0
        while piece := await st.read():
            got += len(piece)
            peak = max(peak, st.buffered + len(piece))
        assert got == total and peak <= 2 * 1024 * 1024
        assert pool.idle_connections == 1  # and the connection was resumed before going back


async def test_stream_reset_mid_body():
    got: list[bytes] = []

    async def half(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(SSE_HEAD + chunk(b"data: 1\n\n") + b"40\r\npartial")
            await conn.writer.drain()
            # the client has read all of it (so the reset comes after, mid-chunk)
            assert await eventually(lambda: b"".join(got) == b"data: 1\n\npartial")
            conn.reset()
            return

    async with RawServer(half) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/", [], timeout=5, read_timeout=5)
        with pytest.raises(H1ConnectionError) as ei:
            while True:
                got.append(await st.read())
        assert b"".join(got) == b"data: 1\n\npartial"  # what came before the reset, then the error
        assert ei.value.response_started is True and ei.value.reused is False
        assert pool.open_connections == 0


async def test_stream_protocol_error_mid_body():
    first_read = asyncio.Event()

    async def bad(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            conn.send(SSE_HEAD + chunk(b"data: 1\n\n"))
            await conn.writer.drain()
            await asyncio.wait_for(first_read.wait(), timeout=10)  # the bad bytes come after a good piece
            conn.send(b"nothex\r\n")

    async with RawServer(bad) as srv, H1Pool(srv.origin) as pool:
        st = await pool.stream("GET", "/", [], timeout=5, read_timeout=5)
        assert await st.read() == b"data: 1\n\n"
        first_read.set()
        with pytest.raises(H1ProtocolError, match="chunk size"):
            await st.read()
        assert pool.open_connections == 0


async def test_stream_stale_keep_alive_rules():
    async with RawServer(stale_second_request) as srv, H1Pool(srv.origin) as pool:
        await pool.request("GET", "/1", [], timeout=5)
        st = await pool.stream("GET", "/2", [], timeout=5, read_timeout=5)  # retried on a new connection
        assert await read_all(st) == [b'{"retried":true}']
        assert [q.split(b" ")[1] for q in srv.requests] == [b"/1", b"/2", b"/2"]
    async with RawServer(stale_second_request) as srv, H1Pool(srv.origin) as pool:
        await pool.request("POST", "/v1/responses", [], b"{}", timeout=5)
        with pytest.raises(H1ConnectionError) as ei:
            await pool.stream("POST", "/v1/responses", [], b"{}", timeout=5, read_timeout=5)
        assert ei.value.reused is True and ei.value.response_started is False
        assert len(srv.requests) == 2 and pool.open_connections == 0


def test_streams_under_uvloop():
    import uvloop  # a runtime dependency: never skipped

    async def main() -> None:
        await test_stream_pieces_arrive_as_sent_then_connection_reused()
        await test_stream_chunks_split_across_tcp_writes()
        await test_stream_idle_timeout_raises_and_closes()
        await test_stream_early_close_does_not_reuse()
        await test_stream_back_pressure_bounds_buffering()
        await test_stream_reset_mid_body()
        await test_stream_stale_keep_alive_rules()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
