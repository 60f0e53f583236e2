"""Start-up: the listening sockets, and start-up failures as one line for the operator.

The process that starts the gateway binds the listening sockets once, before anything else is
opened, and forked workers inherit them (see :mod:`proxy.server`). They are bound without
``SO_REUSEPORT``: a second gateway on the same port then fails to bind, instead of silently
joining the port and having the kernel split clients between two gateways with two stores.
"""
from __future__ import annotations

import socket

BACKLOG = 2048


class StartupError(Exception):
    """The gateway cannot start; ``str()`` is the one line the operator reads, without a traceback."""


def reason(exc: BaseException) -> str:
    """What went wrong, in words: ``address already in use``, ``permission denied: '/data'``."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[:1].lower() + exc.strerror[1:]
        return f"{text}: {exc.filename!r}" if exc.filename else text
    return str(exc) or type(exc).__name__


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listeners(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (as asyncio's create_server
    binds them); raises :class:`StartupError` naming the address and the reason."""
    where = _where(host, port)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: cannot resolve host {host!r} ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            # SO_REUSEADDR only lets a restart bind while old connections sit in TIME_WAIT; on
            # Linux it never lets two sockets listen on one port (SO_REUSEPORT would).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise StartupError(f"cannot listen on {where}: {reason(exc)}") from None
    return sockets
