"""Reading a request body from the client: the one place every body read goes through.

:func:`client_chunks` yields the body chunk by chunk and

* answers ``Expect: 100-continue`` just before the first read — so a request refused on what
  its headers say (auth, route, ``Content-Length``) gets its final status without the client
  ever sending the body, and one that may proceed gets its ``100 Continue`` at once;
* bounds the wait for each chunk by ``server.body_idle_timeout`` (408 when it passes: a client
  that stalls, or announced a ``Content-Length`` larger than what it sends);
* bounds the whole body by a minimum average rate, ``server.body_min_rate``, after a grace of
  :data:`BODY_RATE_GRACE` seconds, or ``body_idle_timeout`` if shorter (Apache mod_reqtimeout's
  ``MinRate``): each byte received
  extends the deadline by ``1 / body_min_rate`` seconds, so a client that trickles (1 byte/s
  is never idle) cannot hold a connection and a partial upload open for ever, while a fast
  upload earns all the time a later pause could need;
* turns aiohttp's payload errors into gateway errors: a disconnect (or an EOF before the
  body's end) is :class:`ClientDisconnected`, broken framing a 400.

Callers abort whatever they were writing on any exception from the iterator (sinks remove
their partial data), so each of these ends an upload cleanly.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator

from aiohttp.http_exceptions import ContentLengthError, HttpProcessingError, TransferEncodingError
from aiohttp.web_protocol import RequestPayloadError

from .errors import GatewayError, bad_request
from .http_server import CONTINUE, CONTINUED, MalformedBody

if TYPE_CHECKING:
    from aiohttp.web import BaseRequest


class ClientDisconnected(GatewayError):
    def __init__(self) -> None:
        super().__init__(400, "The client closed the connection before the upload was complete.",
                         code="client_disconnected")


BODY_RATE_GRACE = 10.0


def body_timeout(seconds: float) -> GatewayError:
    # Not retryable: a re-sent body stalls the same way, and the SDK would re-send it whole.
    return GatewayError(408, f"The request body stalled: no data arrived for {seconds:g}s.",
                        code="request_timeout")


def body_too_slow(rate: int) -> GatewayError:
    return GatewayError(408, f"The request body arrived too slowly: under {rate} bytes/s on average.",
                        code="request_timeout")


async def send_continue(request: "BaseRequest") -> None:
    """Answer ``Expect: 100-continue`` once, when the gateway is about to read the body."""
    if request.get(CONTINUED) or request.version < (1, 1):
        return
    if request.headers.get("Expect", "").lower() == "100-continue":
        request[CONTINUED] = True
        await request.writer.write(CONTINUE)


def arrived_body(request: "BaseRequest") -> bytes | None:
    """The whole body, if it already arrived with the headers (a small JSON request almost
    always does): nothing is left to wait for, so no 100-continue (RFC 9110 §10.1.1 lets a
    server skip it once the content is in), no timer and no await. ``None`` otherwise, or
    when the payload carries an error (the normal read reports it)."""
    content = request.content
    if not content.is_eof() or content.exception() is not None:
        return None
    return content.read_nowait()


async def client_chunks(request: "BaseRequest") -> AsyncIterator[bytes]:
    whole = arrived_body(request)
    if whole is not None:
        if whole:
            yield whole
        return
    await send_continue(request)
    content = request.content
    protocol = request.protocol
    idle = getattr(protocol, "body_idle_timeout", None) or None
    rate = getattr(protocol, "body_min_rate", None) or 0
    loop = asyncio.get_running_loop()
    # Moved on by every byte received, when rate > 0.
    deadline = loop.time() + min(BODY_RATE_GRACE, idle or BODY_RATE_GRACE)
    while True:
        wait = idle
        slow = False
        if rate:
            left = deadline - loop.time()
            if wait is None or left < wait:
                wait, slow = max(left, 0.0), True
        try:
            async with asyncio.timeout(wait):
                chunk = await content.readany()
        except TimeoutError:
            raise (body_too_slow(rate) if slow else body_timeout(idle or 0)) from None
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            raise ClientDisconnected() from exc
        except (ContentLengthError, TransferEncodingError) as exc:  # the body ended short
            raise ClientDisconnected() from exc
        except (MalformedBody, HttpProcessingError, RequestPayloadError):
            raise bad_request("Malformed request body: invalid body framing.", code="malformed_request") from None
        if not chunk:
            return
        deadline += len(chunk) / rate if rate else 0.0
        yield chunk
