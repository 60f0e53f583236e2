"""The h1 client's failures: what went wrong, and whether the request may be sent again."""
from __future__ import annotations

class H1ProtocolError(Exception):
    """The peer sent something that is not a valid HTTP/1.x response (or more than one)."""


class H1ConnectionError(ConnectionError):
    """The connection failed before a complete response arrived.

    ``reused``: the connection had already served a response (keep-alive reuse).
    ``response_started``: at least one response byte had been received.
    ``reused and not response_started`` is the stale keep-alive case: the server most likely
    closed the idle connection before reading the request, so it is safe to send again.
    """

    def __init__(self, message: str, *, reused: bool, response_started: bool) -> None:
        super().__init__(message)
        self.reused = reused
        self.response_started = response_started


class H1ConnectError(H1ConnectionError):
    """Could not open a connection (refused, unreachable, DNS, TLS handshake): nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reused=False, response_started=False)
