"""The listener: aiohttp's low-level server, uvloop, worker processes, graceful drain.

The starting process binds the listening socket first (:func:`proxy.startup.bind_listeners`,
no ``SO_REUSEPORT``, so a second gateway on the port fails instead of sharing it), then opens
the store and providers. ``--workers N`` forks N processes that inherit that one socket and
each accept on it with their own event loop (Envoy's one-loop-per-worker model); the parent
only supervises. Any start-up failure is one ``sluicegate: …`` line on stderr and a non-zero
exit, in either mode: a worker reports its failure to the parent, which stops the others and
exits. A worker that ends on its own stops the whole gateway, so a supervisor restarts it
whole. On SIGTERM (or SIGINT) a worker stops being ready at once (``/readyz`` → 503, new API
requests → 503 with ``Retry-After``), lets in-flight exchanges finish, and exits within
``server.drain_timeout``.
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Callable

from aiohttp import web

from .gateway import Gateway
from .http_server import GatewayServer
from .logs import flush_access_log, setup_logging  # noqa: F401 - where callers import it from
from .metrics_dir import private_metrics_dir, worker_exited
from .providers.local import replica_only_providers
from .startup import BACKLOG, StartupError, bind_listeners, reason

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


async def serve(config: "Config", sockets: list[socket.socket]) -> None:
    """Serve on the already bound ``sockets`` until SIGTERM/SIGINT, then drain. A failure
    before the gateway serves is a :class:`StartupError`, with everything opened closed again."""
    gw: Gateway | None = None
    try:
        gw = Gateway(config)
        await gw.start()
    except BaseException as exc:
        log.debug("start-up failed", exc_info=True)
        if gw is not None:
            await _close_quietly(gw)    # the store's thread would keep the process alive
        if isinstance(exc, StartupError) or not isinstance(exc, Exception):
            raise
        raise StartupError(f"cannot start: {reason(exc)}") from exc
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
    sites = [web.SockSite(runner, sock, backlog=BACKLOG) for sock in sockets]
    try:
        for site in sites:
            await site.start()
    except Exception as exc:
        await runner.cleanup()
        await _close_quietly(gw)
        raise StartupError(f"cannot serve on {srv.host}:{srv.port}: {reason(exc)}") from exc
    if not config.auth.enabled and not _is_loopback(srv.host):
        log.warning("auth is off and the gateway listens on %s: anyone who can reach it shares one tenant. "
                    "Configure auth.keys.", srv.host)
    host = f"[{srv.host}]" if ":" in srv.host else srv.host  # an IPv6 address in a URL
    log.info("sluicegate listening on http://%s:%d (pid %d, providers: %s)", host, srv.port, os.getpid(),
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
    for site in sites:
        await site.stop()
    await runner.cleanup()
    await gw.close()
    log.info("stopped")


async def _close_quietly(gw: Gateway) -> None:
    """Close what a failed start-up opened; the start-up failure is what gets reported."""
    try:
        await gw.close()
    except Exception:
        log.debug("closing after a failed start-up", exc_info=True)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _print_failure(line: str) -> None:
    print(f"sluicegate: {line}", file=sys.stderr, flush=True)


def _serve_here(config: "Config", sockets: list[socket.socket], report: Callable[[str], object]) -> int:
    """Run one gateway event loop in this process; the exit code (1: it could not start)."""
    try:
        asyncio.run(serve(config, sockets))
    except StartupError as exc:
        report(str(exc))
        return 1
    finally:
        for sock in sockets:
            sock.close()
        # The access log's queued lines, before a worker's os._exit (which skips atexit).
        flush_access_log()
    return 0


def _log_where_data_goes(config: "Config") -> None:
    for warning in config.warnings:     # once, here in the starting process (not per worker)
        log.warning("config: %s", warning)
    log.info("data directory %s; store %s", config.server.data_dir, config.store.masked_url)
    for p in config.providers:
        if p.disk_path:
            log.info("provider %s (type %s) keeps files in %s", p.name, p.type, p.disk_path)
    for p in replica_only_providers(config):
        log.warning("provider %s (type local): its files in %s are visible only to this replica, but the "
                    "PostgreSQL store is shared; use an s3 or gcs provider, or set shared_filesystem: true "
                    "if that path is a filesystem every replica mounts", p.name, p.path)


def run(config: "Config") -> int:
    """Run the gateway in the foreground with ``server.workers`` processes; returns an exit code."""
    srv = config.server
    try:
        sockets = bind_listeners(srv.host, srv.port)
    except StartupError as exc:
        _print_failure(str(exc))
        return 1
    _log_where_data_goes(config)
    _install_uvloop()
    try:
        with private_metrics_dir():  # before the fork: every worker writes its samples there
            if srv.workers <= 1:
                return _serve_here(config, sockets, _print_failure)
            return _supervise_workers(config, sockets)
    except StartupError as exc:  # only the directory's: serving reports its own failures
        for sock in sockets:
            sock.close()
        _print_failure(str(exc))
        return 1


_EXITED_NORMALLY = (0, -signal.SIGTERM, -signal.SIGINT)


def _supervise_workers(config: "Config", sockets: list[socket.socket]) -> int:
    """Fork ``server.workers`` workers on the inherited ``sockets`` and wait for them. The first
    worker that ends (a start-up failure, a crash, a signal) stops the others; the exit code is
    1 if any worker failed. Workers write start-up failures to a pipe, so the same failure of N
    workers is printed once."""
    reports, report_end = os.pipe()
    children: set[int] = set()
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # Installed before forking, so a signal during the forks is not lost; each child resets them.
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    parent = os.getpid()
    for _ in range(config.server.workers):
        if stopping:
            break
        pid = os.fork()
        if pid == 0:  # worker: whatever happens, it never returns into the parent's loop
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.close(reports)
                _end_with_parent(parent)
                code = _serve_here(config, sockets, lambda line: os.write(report_end, (line + "\n").encode()))
            except KeyboardInterrupt:
                pass
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        children.add(pid)
    os.close(report_end)
    for sock in sockets:  # the workers hold the port now
        sock.close()
    os.set_blocking(reports, False)
    printed: set[str] = set()
    status = 0
    while children:
        pid, st = os.wait()
        children.discard(pid)
        worker_exited(pid)
        _print_reports(reports, printed)
        code = os.waitstatus_to_exitcode(st)
        if code not in _EXITED_NORMALLY:
            status = 1
        if children and not stopping:
            if code not in _EXITED_NORMALLY and not printed:
                log.error("worker %d exited with %d; stopping the gateway", pid, code)
            stop_all()
    _print_reports(reports, printed)
    os.close(reports)
    return status


def _print_reports(reports: int, printed: set[str]) -> None:
    """Print the start-up failures workers wrote so far, each distinct line once."""
    data = b""
    while True:
        try:
            chunk = os.read(reports, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line not in printed:
            printed.add(line)
            _print_failure(line)


def _end_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGTERM this worker when the parent dies (even by SIGKILL), so
    workers are never orphaned serving a port their supervisor no longer watches."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

