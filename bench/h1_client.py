"""CPU µs per request: sequential keep-alive GETs of a ~700-byte JSON response, ``H1Pool`` vs
``aiohttp.ClientSession`` vs a raw Protocol (the kernel + event loop floor), uvloop, client
pinned to core 0 and a raw asyncio server in another process pinned to core 1 (``taskset -c 1``)::

    python bench/h1_client.py bench [requests] [rounds]
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.providers.h1 import H1Pool  # noqa: E402

BENCH_BODY = (b'{"id":"file-abc123def456ghi789","object":"file","bytes":120000,"created_at":1700000000,'
              b'"filename":"batch_input_2024_01_01_with_a_long_descriptive_name.jsonl","purpose":"batch",'
              b'"status":"processed","status_details":null,"expires_at":null,"metadata":{"team":"ml-platform",'
              b'"project":"sluicegate","owner":"someone@example.com","run":"2024-01-01T00:00:00Z"},'
              b'"padding":"' + b"x" * 118 + b'"}')
BENCH_RESPONSE = (b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: keep-alive\r\nopenai-processing-ms: 12\r\n"
                  b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n\r\n%s" % (len(BENCH_BODY), BENCH_BODY))


def _bench_serve() -> None:
    """Raw keep-alive server: answers every request head with BENCH_RESPONSE (GETs only)."""
    import uvloop

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            buf = self.buf + data
            n = buf.count(b"\r\n\r\n")
            if n:
                self.t.write(BENCH_RESPONSE * n)
                buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
            self.buf = buf

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def _bench(requests: int = 20000, rounds: int = 5) -> None:
    import os
    import resource
    import statistics

    import aiohttp
    import uvloop

    server = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "serve"],
                              stdout=subprocess.PIPE, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        port = int(server.stdout.readline())
        os.sched_setaffinity(0, {0})
        url = f"http://127.0.0.1:{port}"
        headers = [("Authorization", "Bearer sk-upstream-test"), ("OpenAI-Beta", "assistants=v2")]

        async def h1_run(n: int, pool: H1Pool) -> None:
            for _ in range(n):
                r = await pool.request("GET", "/v1/files/file-abc123def456ghi789", headers, timeout=30.0)
                assert len(r.body) == len(BENCH_BODY)

        async def aiohttp_run(n: int, session: aiohttp.ClientSession) -> None:
            for _ in range(n):
                async with session.get(url + "/v1/files/file-abc123def456ghi789", headers=headers) as resp:
                    body = await resp.read()
                assert len(body) == len(BENCH_BODY)

        raw_request = (b"GET /v1/files/file-abc123def456ghi789 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                       b"Authorization: Bearer sk-upstream-test\r\nOpenAI-Beta: assistants=v2\r\n\r\n" % port)

        class Floor(asyncio.Protocol):
            """No HTTP at all: write the request bytes, wait for len(BENCH_RESPONSE) bytes."""

            def connection_made(self, transport):
                self.transport, self.got, self.waiter = transport, 0, None

            def data_received(self, data):
                self.got += len(data)
                if self.got >= len(BENCH_RESPONSE):
                    self.waiter.set_result(None)

        async def floor_run(n: int, proto: Floor) -> None:
            loop = asyncio.get_running_loop()
            for _ in range(n):
                proto.got, proto.waiter = 0, loop.create_future()
                proto.transport.write(raw_request)
                await proto.waiter

        def rusage() -> tuple[float, float]:
            r = resource.getrusage(resource.RUSAGE_SELF)
            return r.ru_utime, r.ru_stime

        async def measure(run, client) -> tuple[float, float, float]:
            await run(2000, client)  # warm-up (connection open, caches)
            (u0, s0), w0 = rusage(), time.perf_counter()
            await run(requests, client)
            (u1, s1), w1 = rusage(), time.perf_counter()
            return tuple(x / requests * 1e6 for x in (u1 - u0 + s1 - s0, u1 - u0, w1 - w0))  # type: ignore[return-value]

        async def main() -> dict[str, list[tuple[float, float, float]]]:
            out: dict[str, list[tuple[float, float, float]]] = {"H1Pool": [], "aiohttp": [], "floor": []}
            pool = H1Pool(url)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=30),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"))
            _, floor = await asyncio.get_running_loop().create_connection(Floor, "127.0.0.1", port)
            for _ in range(rounds):
                out["H1Pool"].append(await measure(h1_run, pool))
                out["aiohttp"].append(await measure(aiohttp_run, session))
                out["floor"].append(await measure(floor_run, floor))
            floor.transport.close()
            await pool.close()
            await session.close()
            return out

        results = uvloop.run(main())
    finally:
        server.kill()
        server.wait()
    print(f"{requests} sequential keep-alive GETs x {rounds} rounds, {len(BENCH_RESPONSE)}-byte response "
          f"({len(BENCH_BODY)}-byte JSON body); uvloop; client on core 0, server on core 1")
    names = {"H1Pool": "H1Pool", "aiohttp": "aiohttp", "floor": "floor (raw Protocol, no HTTP)"}
    for name, rs in results.items():
        cpu, user, wall = (sorted(x[i] for x in rs) for i in range(3))
        print(f"  {names[name]:30s} CPU µs/request: min {cpu[0]:6.1f}  median {statistics.median(cpu):6.1f}"
              f"  (user {statistics.median(user):5.1f})   wall µs/request: median {statistics.median(wall):6.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _bench_serve()
    elif sys.argv[1:2] == ["bench"]:
        _bench(*(int(a) for a in sys.argv[2:4]))
    else:
        print(__doc__)
