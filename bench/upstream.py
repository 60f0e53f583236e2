"""Serve a benchmark upstream in its own process (so it can be pinned to a core with taskset).

    python bench/upstream.py --port 9001 --data-dir /tmp/fake [--stream-delay 0.05]
    python bench/upstream.py --mode canned --port 9002

``--mode fake`` (default) serves ``tests.fakes.openai_upstream.FakeOpenAI("openai").app`` with
``aiohttp.web.run_app`` — the same faithful fake the integration tests use (uploads streamed
to disk and hashed, content served from disk, SSE with ``stream_delay`` between events). The
only change: its request log (``fake.requests``, a test-inspection aid) keeps nothing unless
``--record`` is given, so a load run does not grow the process without bound.

``--mode canned`` is a minimal raw-asyncio HTTP/1.1 server that answers ``GET
/v1/files/{id}``, ``POST /v1/files`` and ``POST /v1/responses`` (non-streaming) with
pre-rendered OpenAI-shaped JSON (a fresh ``resp_…`` id per response). It costs a few µs per
request, so it shows what the *gateway* can do when the upstream is not the limit.

``--mode floor --answers FILE`` is a bare ``aiohttp.web.Server`` (aiohttp's low-level server,
as the gateway's listener is, no application, no routing) answering each ``METHOD /path`` in
FILE (JSON: ``{"GET /v1/files/x": {"status": 200, "content_type": "...", "body": base64}}``)
with those bytes, after reading the request body: what aiohttp's request/response machinery
costs by itself, the floor under the gateway (``bench/run.py --default-config``).

``--mode forward --target URL`` is the floor under a *proxy* on this machine: a raw-asyncio
TCP forwarder that, for each client connection, opens one connection to ``URL``'s host and
port and copies bytes both ways as they arrive (no parsing, no HTTP at all). A proxied request
then costs exactly what any proxy must spend here: two socket reads, two socket writes, and
four hops between the cores (client → proxy → upstream → proxy → client). nginx or Envoy do
more than this per request, never less (``bench/run.py --default-config``).

All use uvloop when it is installed (``--no-uvloop`` to turn it off). The process prints
``READY <port>`` on stdout once it listens and exits on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# ============================================================================ fake mode
def serve_fake(args: argparse.Namespace) -> None:
    from aiohttp import web

    from tests.fakes.openai_upstream import FakeOpenAI, RecordLog

    class _NullLog(RecordLog):
        def append(self, record) -> None:  # type: ignore[no-untyped-def]
            pass

    fake = FakeOpenAI("openai", api_key=args.api_key, data_dir=args.data_dir)
    fake.stream_delay = args.stream_delay
    if not args.record:
        fake.requests = _NullLog()

    def ready(*_a: object, **_k: object) -> None:
        print(f"READY {args.port}", flush=True)

    web.run_app(fake.app, host=args.host, port=args.port, access_log=None, print=ready,
                shutdown_timeout=1.0, backlog=2048)


# ============================================================================ canned mode
_FILE_JSON = (b'{"id":"file-canned0000000000000000000","object":"file","bytes":1024,"created_at":%d,'
              b'"filename":"small.jsonl","purpose":"user_data","status":"processed","expires_at":null,'
              b'"status_details":null}')


def _response_template() -> bytes:
    """A non-streaming Response object as the fake renders it, with ``@ID@`` for the id."""
    import orjson

    from tests.fakes.openai_upstream import FakeOpenAI

    fake = FakeOpenAI("openai")
    try:
        obj = fake._build_response({"model": "gpt-4o-mini", "input": "hello", "store": False},
                                   fake._input_items("hello"))
    finally:
        fake.close()
    obj["id"] = "@ID@"
    return orjson.dumps(obj)


class _Canned(asyncio.Protocol):
    template: bytes = b""
    counter = itertools.count()
    prefix = secrets.token_hex(8)

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i])
            length = 0
            low = head.lower()
            j = low.find(b"\r\ncontent-length:")
            if j >= 0:
                k = low.find(b"\r\n", j + 2)
                length = int(low[j + 17: k if k >= 0 else len(low)])
            if len(buf) < i + 4 + length:
                return  # wait for the whole body (bodies here are small or drained below)
            del buf[: i + 4 + length]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/responses":
            rid = b"resp_%s%08x" % (self.prefix.encode(), next(self.counter))
            body = self.template.replace(b"@ID@", rid, 1)
            status = b"200 OK"
        elif path.startswith(b"/v1/files"):
            body = _FILE_JSON % int(time.time())
            status = b"200 OK"
        else:
            body = b'{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}'
            status = b"404 Not Found"
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nx-request-id: req_canned\r\n\r\n" + body)


def _serve_protocol(args: argparse.Namespace, factory: "type[asyncio.Protocol]") -> None:
    """Serve ``factory`` connections on ``args.host:args.port`` until SIGTERM/SIGINT."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, args.host, args.port, backlog=2048, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY {args.port}", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(main())


def serve_canned(args: argparse.Namespace) -> None:
    _Canned.template = _response_template()

    _serve_protocol(args, _Canned)


# ============================================================================ floor mode
def serve_floor(args: argparse.Namespace) -> None:
    import base64
    import json

    from aiohttp import web

    with open(args.answers) as fh:
        table = {key: (a["status"], base64.b64decode(a["body"]), a["content_type"])
                 for key, a in json.load(fh).items()}
    missing = (404, b'{"error":{"message":"not in the answers file","type":"invalid_request_error",'
                    b'"param":null,"code":null}}', "application/json")

    async def handler(request: web.BaseRequest) -> web.Response:
        if request.body_exists:
            await request.read()
        status, body, ctype = table.get(f"{request.method} {request.path}", missing)
        return web.Response(status=status, body=body, content_type=ctype)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = web.Server(handler, access_log=None)
        listener = await loop.create_server(server, args.host, args.port, backlog=2048, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY {args.port}", flush=True)
        async with listener:
            await stop.wait()
        await server.shutdown(1.0)

    asyncio.run(main())


# ============================================================================ forward mode
class _Pipe(asyncio.Protocol):
    """One side of a forwarded connection: what it receives is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.early: list[bytes] = []  # bytes from the client before the upstream connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()


def serve_forward(args: argparse.Namespace) -> None:
    from urllib.parse import urlsplit

    target = urlsplit(args.target)

    class _Client(_Pipe):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            asyncio.ensure_future(self._connect())

        async def _connect(self) -> None:
            loop = asyncio.get_running_loop()
            try:
                _, up = await loop.create_connection(_Pipe, target.hostname, target.port)
            except OSError:
                assert self.transport is not None
                self.transport.close()
                return
            up.peer, self.peer = self, up
            for data in self.early:
                up.transport.write(data)  # type: ignore[union-attr]
            self.early.clear()

    _serve_protocol(args, _Client)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("fake", "canned", "floor", "forward"), default="fake")
    p.add_argument("--answers", default=None, help="floor mode: the JSON file of answers")
    p.add_argument("--target", default=None, help="forward mode: the upstream URL (http://host:port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", default=None, help="fake mode: where uploaded files are stored")
    p.add_argument("--api-key", default="sk-upstream-test")
    p.add_argument("--stream-delay", type=float, default=0.0, help="fake mode: seconds between SSE events")
    p.add_argument("--record", action="store_true", help="fake mode: keep the fake's request log")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    if args.mode == "fake":
        serve_fake(args)
    elif args.mode == "floor":
        serve_floor(args)
    elif args.mode == "forward":
        serve_forward(args)
    else:
        serve_canned(args)


if __name__ == "__main__":
    main()
