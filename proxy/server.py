"""The listener: aiohttp's low-level server, uvloop, worker processes, graceful drain.

``--workers N`` forks N processes that each bind the port with ``SO_REUSEPORT`` and run their
own event loop (Envoy's one-loop-per-worker model); the kernel spreads connections. On
SIGTERM (or SIGINT) a worker stops being ready at once (``/readyz`` → 503, new API requests →
503 with ``Retry-After``), lets in-flight exchanges finish, and exits within
``server.drain_timeout``.
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .gateway import Gateway
from .http_server import GatewayServer
from .logs import setup_logging  # noqa: F401 - where callers import it from

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("sluicegate")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(config: "Config", *, reuse_port: bool = False) -> None:
    gw = Gateway(config)
    await gw.start()
    # Everything allocated so far lives for the whole process: move it out of the cyclic
    # collector's sight, and collect less often, so full collections stop costing tens of
    # milliseconds of tail latency on a busy worker.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    srv = config.server
    # handler_cancellation: a client that disconnects cancels its exchange at once, so an
    # upstream stream or upload it was feeding is closed instead of running on.
    # GatewayServer: malformed requests answered in JSON, header/body/keep-alive timeouts,
    # max_connections, a FIN right after a closing response (proxy/http_server.py).
    server = GatewayServer(gw.handle, srv, access_log=None, read_bufsize=srv.chunk_size, max_field_size=16384,
                           handler_cancellation=True)
    # The drain below already waited for in-flight requests; aiohttp's own shutdown wait
    # would add a second drain_timeout on top.
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, srv.host, srv.port, reuse_port=reuse_port or None, backlog=2048)
    await site.start()
    if not config.auth.enabled and not _is_loopback(srv.host):
        log.warning("auth is off and the gateway listens on %s: anyone who can reach it shares one tenant. "
                    "Configure auth.keys.", srv.host)
    log.info("sluicegate listening on http://%s:%d (pid %d, providers: %s)", srv.host, srv.port, os.getpid(),
             ", ".join(gw.providers))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    gw.draining = True
    log.info("draining: %d request(s) in flight, up to %.1fs", gw.inflight, srv.drain_timeout)
    deadline = time.monotonic() + srv.drain_timeout
    while gw.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if gw.inflight:
        log.warning("drain timeout: closing %d request(s) still in flight", gw.inflight)
    await site.stop()
    await runner.cleanup()
    await gw.close()
    log.info("stopped")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(config: "Config") -> int:
    """Run the gateway in the foreground with ``server.workers`` processes; returns an exit code."""
    _install_uvloop()
    workers = config.server.workers
    if workers <= 1:
        asyncio.run(serve(config))
        return 0
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # child
            try:
                asyncio.run(serve(config, reuse_port=True))
            except BaseException:  # pragma: no cover
                log.exception("worker failed")
                os._exit(1)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                break
            except InterruptedError:  # pragma: no cover
                continue
        if os.waitstatus_to_exitcode(st) not in (0, -signal.SIGTERM, -signal.SIGINT):
            status = 1
    return status
