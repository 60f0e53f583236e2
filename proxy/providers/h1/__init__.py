"""A lean keep-alive HTTP/1.1 client for small buffered upstream calls, and SSE streams.

``aiohttp.ClientSession.request`` costs ~130 µs of CPU per small JSON exchange; this costs
~55 µs, of which ~20 µs is the kernel + event loop floor any client pays (bench/h1_client.py).
``H1Pool.request`` serves the buffered hot path (files.retrieve/list/delete, non-streaming
responses.create): the request body is in memory, the response body is read whole (bounded by
``max_body_size``). ``H1Pool.stream`` serves response streams (Responses API ``stream: true``):
the request body is in memory, the response body is handed over piece by piece as it arrives
(:class:`H1Stream`). Uploads and downloads are served by aiohttp, under the same facade
(:mod:`proxy.providers.upstream`). Callers use the facade, not this package.

Split as httpcore splits its files:

* :mod:`.parser` -- :class:`ResponseParser`, sans-IO (``bytes.find`` and compiled regexes, no
  per-byte Python loops): the head, then one body reader per framing (Content-Length,
  chunked, until close), h11's model. Feed it bytes, get an :class:`H1Response` back when the
  response is complete (``feed``), or the head then the body pieces as they come
  (``feed_stream``). bench/h1_parser.py compares it with aiohttp's C parser.
* :mod:`.connection` -- one connection (``asyncio.Protocol``) and its timer.
* :mod:`.stream` -- :class:`H1Stream`, a body delivered as it arrives, with back-pressure.
* :mod:`.pool` -- :class:`H1Pool`: one origin, keep-alive connections kept in a LIFO, at most
  ``limit`` open, waiters queued. A request on a reused connection that got no response byte
  before the connection died (stale keep-alive) is retried once on a new connection for
  idempotent methods; for POST (and PATCH) :class:`H1ConnectionError` tells the caller what
  happened (``reused``, ``response_started``) so it can decide.
* :mod:`.errors` -- the exceptions.

Timeouts (the gateway's one model, README ``timeouts``): ``connect_timeout`` bounds opening a
connection (TCP, proxy tunnel, TLS handshake); ``read_timeout`` is the longest gap between two
reads from the upstream -- from the request being sent to the first response byte, and between
any two pieces of the response, on buffered calls and streams alike; ``timeout``, if given,
bounds the whole exchange. Waiting for a slot / connecting runs under ``asyncio.timeout_at``;
the response wait is bounded by one lazily re-armed timer per connection instead (a uvloop
timer per request costs ~10 µs; steady-state this costs none). A pool belongs to the event
loop that first uses it.

Egress proxy (``proxy=``, an :class:`~proxy.providers.egress.EgressProxy`): an https origin
is reached through an HTTP ``CONNECT`` tunnel, then TLS to the origin over it
(``loop.start_tls``); an http origin gets absolute-form request targets. Both carry the
proxy's ``Proxy-Authorization`` when it has credentials.

Nothing is added to a request beyond ``Host`` and ``Content-Length``: no User-Agent, no
Accept-Encoding (bodies arrive as the upstream sent them, never decoded), no cookies. Header
text is encoded/decoded as UTF-8 with ``surrogateescape``, as aiohttp does, so non-ASCII bytes
round-trip unchanged.
"""
from __future__ import annotations

from .errors import H1ConnectError, H1ConnectionError, H1ProtocolError
from .parser import UNBOUNDED, H1Response, ResponseParser
from .pool import H1Pool
from .stream import H1Stream

__all__ = [
    "H1Response", "H1Stream", "H1ProtocolError", "H1ConnectionError", "H1ConnectError", "ResponseParser", "H1Pool",
    "UNBOUNDED",
]
