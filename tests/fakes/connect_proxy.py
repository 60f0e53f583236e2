"""A tiny HTTP egress proxy on loopback, for the gateway's ``HTTPS_PROXY``/``proxy:`` tests.

* ``CONNECT host:port`` opens a tunnel (counted in :attr:`FakeProxy.tunnels`) and splices bytes
  both ways -- TLS to the origin then runs end to end through it, as through a real proxy.
* An absolute-form request (``GET http://host:port/path HTTP/1.1``: an http:// origin through
  a proxy) is forwarded with its target rewritten to origin-form (:attr:`forwards`); the rest
  of the connection is then spliced (the gateway's client sends absolute-form on every request
  of a kept-alive connection, which aiohttp's server accepts as is).
* ``require_auth="user:password"``: a request without that ``Proxy-Authorization: Basic`` is
  answered 407 (:attr:`refused`). :attr:`authorizations` keeps each header value seen.

Served from its own thread and event loop, on ``127.0.0.1:<free port>``.
"""
from __future__ import annotations

import asyncio
import base64
import threading
from urllib.parse import urlsplit


class FakeProxy:
    def __init__(self, *, require_auth: str | None = None) -> None:
        self.expected = None if require_auth is None else "Basic " + base64.b64encode(require_auth.encode()).decode()
        self.tunnels = 0
        self.forwards = 0
        self.refused = 0
        self.authorizations: list[str | None] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, credentials: str) -> str:
        return f"http://{credentials}@127.0.0.1:{self.port}"

    def __enter__(self) -> FakeProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("FakeProxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        fields = [line.split(":", 1) for line in lines[1:] if ":" in line]
        auth = next((v.strip() for k, v in fields if k.strip().lower() == "proxy-authorization"), None)
        self.authorizations.append(auth)
        if self.expected is not None and auth != self.expected:
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"fake\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            self.tunnels += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._splice(reader, writer, up_reader, up_writer)
            return
        u = urlsplit(target)
        up_reader, up_writer = await asyncio.open_connection(u.hostname, u.port or 80)
        self.forwards += 1
        origin_form = (u.path or "/") + (f"?{u.query}" if u.query else "")
        kept = "".join(f"{k}:{v}\r\n" for k, v in fields if k.strip().lower() != "proxy-authorization")
        up_writer.write(f"{method} {origin_form} {version}\r\n{kept}\r\n".encode("latin-1"))
        await self._splice(reader, writer, up_reader, up_writer)

    @staticmethod
    async def _splice(a_reader, a_writer, b_reader, b_writer) -> None:
        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(a_reader, b_writer), pipe(b_reader, a_writer))
