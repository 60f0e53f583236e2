"""The one facade for a provider's upstream HTTP: buffered JSON calls (:meth:`Upstream.request`),
response streams -- SSE and downloads -- (:meth:`Upstream.stream`, :meth:`Upstream.download`) and
streamed uploads (:meth:`Upstream.open` with an async body), under one set of rules:

* **Retries** (:meth:`Upstream._exchange`, the only retry loop): a connection that could not
  be opened (nothing was sent) is retried for any call whose body can be sent again;
  idempotent calls (list, retrieve, delete, content) are also retried on other transport
  failures and on 408/409/429/5xx/529, with exponential backoff or the upstream's
  ``Retry-After`` (at most 30 s); a streamed request body is never retried (it cannot be
  replayed without buffering it), nor is a TLS certificate that failed verification.
* **Timeouts** (README ``timeouts``), the same meaning on every path: ``connect`` bounds
  opening a connection (TCP, proxy tunnel, TLS); ``read`` is the longest gap between two reads
  from the upstream (before the answer's first byte, and between any two pieces of it);
  ``total``, if set, bounds one attempt from the request to the end of the answer.
* **Errors** (:meth:`error_from_response`, :meth:`error_from_exception`, the only mapping):
  OpenAI-shaped :class:`GatewayError` s: 4xx keep their status and message, 5xx become 502,
  timeouts 504, an unreachable or TLS-failing upstream 502; the gateway's own credentials are
  scrubbed from any message, and an upstream 401/403 (the *gateway's* key was refused) is a
  502, not a 401 the client would blame on its own key.
* **Egress** (:mod:`.egress`): the provider's ``proxy`` or the environment's
  ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, and its ``tls`` settings, on every path.

Transports: the lean keep-alive HTTP/1.1 pool (:mod:`.h1`) serves buffered calls, SSE and
downloads; aiohttp's ``ClientSession`` serves uploads (a streamed request body).
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
from urllib.parse import urlencode
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Protocol, TypeVar

import aiohttp
import orjson

from ..errors import GatewayError, error_type_for
from .base import Download
from .egress import EgressProxy, proxy_for, ssl_context
from .h1 import H1ConnectError, H1Pool, H1ProtocolError, H1Response, H1Stream

if TYPE_CHECKING:
    from .configs import TimeoutConfig, TlsConfig

log = logging.getLogger("sluicegate.upstream")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})  # 529: Anthropic "overloaded"
_MAX_RETRY_AFTER = 30.0
_MAX_ERROR_BODY = 1 << 20


class _Answer(Protocol):
    """What the retry loop reads of an answer, whichever client produced it."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Any: ...


_A = TypeVar("_A", bound=_Answer)


class Upstream:
    def __init__(
        self,
        *,
        provider: str,
        headers: Mapping[str, str],
        timeouts: "TimeoutConfig",
        max_retries: int,
        secrets: Iterable[str | None] = (),
        limit: int = 1000,
        proxy: str | None = None,
        tls: "TlsConfig | None" = None,
    ) -> None:
        self.provider = provider
        self.headers = dict(headers)
        self.connect_timeout = timeouts.connect
        self.read_timeout = timeouts.read
        self.total_timeout = timeouts.total
        self.timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                             sock_read=timeouts.read)
        self._proxy_setting = proxy     # a URL, "none", or None: the environment decides
        self._proxies: dict[str, EgressProxy | None] = {}
        self._ssl: ssl.SSLContext = ssl_context(tls)
        self._pools: dict[str, H1Pool] = {}
        self.max_retries = max_retries
        self.secrets = [s for s in secrets if s]
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, keepalive_timeout=60,
                                             ssl=self._ssl)
            # auto_decompress off: bytes reach the client as the upstream sent them.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=False,
                # A shared session must never carry one tenant's upstream cookies to another.
                cookie_jar=aiohttp.DummyCookieJar(),
                # No Accept-Encoding: the gateway forwards bodies without decoding them, so
                # they must arrive uncompressed (the client never asked for an encoding).
                skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"), json_serialize=lambda o: orjson.dumps(o).decode(),
                trust_env=False,   # the proxy is chosen by .egress, the same way for both transports
            )

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "upstream not started"
        return self._session

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "[REDACTED]")
            # OpenAI echoes keys masked as "sk-abc****wxyz": drop any fragment long enough to matter.
            if len(s) > 12:
                for frag in (s[:8], s[-6:]):
                    text = text.replace(frag, "***")
        return text

    # -- calls ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: Any,
        *,
        params: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> tuple[int, bytes]:
        """A buffered request for small JSON bodies; returns ``(status, body)`` of a 2xx answer
        and raises a translated GatewayError otherwise (no caller reads a success's headers,
        so the parser never cuts them: issue 10).

        Served by the lean keep-alive HTTP/1.1 pool (:mod:`.h1`): a fraction of a generic
        client's cost per call on the gateway's hottest path.
        """
        origin, target = _split_url(url if type(url) is str else str(url))
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        pool = self._pool(origin)
        hdrs = list(self._merge(headers).items())

        def send() -> Awaitable[H1Response]:
            return pool.request(method, target, hdrs, body, timeout=self.total_timeout, read_timeout=self.read_timeout)

        # The first attempt is awaited here, not in _exchange: one coroutine less per call on the
        # gateway's hottest path (issue 10); a failure or a non-2xx answer goes on in _exchange.
        try:
            resp = await send()
        except _TRANSPORT_ERRORS as exc:
            resp = await self._exchange(send, idempotent, _buffered_body, first=exc)
        else:
            if resp.status >= 400:
                resp = await self._exchange(send, idempotent, _buffered_body, first=resp)
        return resp.status, resp.body

    async def _exchange(self, send: Callable[[], Awaitable[_A]], idempotent: bool,
                        error_body: Callable[[_A], Awaitable[bytes]], *, replayable: bool = True,
                        first: "_A | BaseException | None" = None) -> _A:
        """Run ``send()`` with the retry rules: connect failures (nothing sent) whenever the
        body can be sent again (``replayable``), other transport failures and retryable
        statuses only for idempotent calls. Returns the 2xx answer; raises a translated
        GatewayError otherwise. ``first``: the outcome (an answer or a transport error) of a
        first attempt the caller already made."""
        attempt = 0
        outcome = first
        while True:
            if outcome is None:
                try:
                    outcome = await send()
                except _TRANSPORT_ERRORS as exc:
                    outcome = exc
            if isinstance(outcome, BaseException):
                failure, outcome = outcome, None
                safe = (idempotent or (replayable and _nothing_sent(failure))) and not _certificate_failure(failure)
                if safe and attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt, None))
                    continue
                raise self.error_from_exception(failure) from None
            resp, outcome = outcome, None
            if resp.status < 400:
                return resp
            data = await error_body(resp)
            if idempotent and resp.status in RETRY_STATUSES and attempt < self.max_retries:
                attempt += 1
                await asyncio.sleep(self._backoff(attempt, resp.headers))
                continue
            raise self.error_from_response(resp.status, data, resp.headers)

    def _pool(self, origin: str) -> H1Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = H1Pool(origin, limit=self._limit, connect_timeout=self.connect_timeout,
                                                ssl_context=self._ssl, proxy=self._proxy(origin))
        return pool

    def _proxy(self, origin: str) -> EgressProxy | None:
        """The egress proxy for an origin (decided once per origin, as the pool is)."""
        if origin not in self._proxies:
            self._proxies[origin] = proxy_for(origin, self._proxy_setting)
        return self._proxies[origin]

    async def stream(
        self,
        method: str,
        url: Any,
        *,
        params: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> H1Stream:
        """Start a request whose 2xx body is read piece by piece as it arrives (SSE, a
        download); the caller must close the stream. Non-2xx answers raise a translated
        GatewayError."""
        origin, target = _split_url(str(url))
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        pool = self._pool(origin)
        hdrs = list(self._merge(headers).items())
        return await self._exchange(
            lambda: pool.stream(method, target, hdrs, body, timeout=self.total_timeout, read_timeout=self.read_timeout),
            idempotent, _drain_error_body)

    async def download(self, url: Any, *, params: Any = None,
                       headers: Mapping[str, str] | None = None) -> Download:
        """A file's content from ``GET url``, streamed (with back-pressure) as it arrives."""
        st = await self.stream("GET", url, params=params, headers=headers)
        length = st.headers.get("Content-Length")
        chunked = "chunked" in st.headers.get("Transfer-Encoding", "").lower()

        async def release() -> None:
            st.close()   # a complete body has already given its connection back to the pool

        return Download(content_type=st.headers.get("Content-Type", "application/octet-stream"),
                        length=int(length) if length is not None and not chunked else None,
                        chunks=_pieces(st, self), release=release, hand_over=st.hand_over)

    async def open(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> aiohttp.ClientResponse:
        """Start a request and return the live 2xx response for streaming (the caller must
        release it); non-2xx answers raise a translated GatewayError. ``data`` may be an async
        iterator (a streamed upload): such a call is never retried."""
        hdrs = self._merge(headers)
        replayable = data is None or isinstance(data, (bytes, bytearray, str))
        origin, _ = _split_url(str(url))
        proxy = self._proxy(origin)
        return await self._exchange(
            lambda: self.session.request(method, url, params=params, data=data, headers=hdrs,
                                         proxy=None if proxy is None else proxy.url,
                                         proxy_headers=None if proxy is None else proxy.headers),
            idempotent and replayable, _aiohttp_error_body, replayable=replayable)

    def _merge(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        if not headers:
            return self.headers
        merged = dict(self.headers)
        merged.update(headers)
        return merged

    @staticmethod
    def _backoff(attempt: int, headers: Any) -> float:
        if headers is not None:
            ra = headers.get("Retry-After")
            if ra:
                try:
                    return min(float(ra), _MAX_RETRY_AFTER)
                except ValueError:
                    pass
        return min(0.25 * 2.0 ** (attempt - 1), 4.0) * (1 - 0.25 * random.random())

    # -- error translation ---------------------------------------------------------------

    def error_from_response(self, status: int, body: bytes, headers: Any) -> GatewayError:
        message, type_, param, code = self._parse_error(body)
        message = self.scrub(message or f"HTTP {status}")
        if status in (401, 403):
            log.warning("provider %s refused the gateway's credentials (HTTP %s)", self.provider, status)
            return GatewayError(502, f"Provider '{self.provider}' refused the gateway's credentials.",
                                code="upstream_auth_failed")
        if status >= 500:
            return GatewayError(502, f"Provider '{self.provider}' failed (HTTP {status}): {message}",
                                code=code or "upstream_error", retryable=True)
        extra = {}
        retry_after = headers.get("Retry-After") if headers is not None else None
        if retry_after:
            extra["Retry-After"] = retry_after
        if not type_ or type_ == "error":   # Azure's type is always "error"
            type_ = error_type_for(status)
        return GatewayError(status, message, type=type_, param=param, code=code,
                            retryable=status in (408, 409, 429), headers=extra)

    def error_from_exception(self, exc: BaseException) -> GatewayError:
        """The one mapping of a transport failure, from either transport."""
        if isinstance(exc, (H1ProtocolError, aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
            return GatewayError(502, f"Provider '{self.provider}' sent a malformed HTTP response.",
                                code="upstream_bad_response", retryable=True)
        if isinstance(exc, asyncio.TimeoutError):
            return GatewayError(504, f"Provider '{self.provider}' did not answer in time.",
                                code="upstream_timeout", retryable=True)
        cert = _certificate_failure(exc)
        if cert is not None:
            # the verifier's reason ("unable to get local issuer certificate", "Hostname
            # mismatch", ...) carries no secret, and is what an operator needs to fix tls:
            return GatewayError(502, f"Could not reach provider '{self.provider}': its TLS certificate was "
                                     f"not accepted ({cert.verify_message}).",
                                code="upstream_tls_error", retryable=False)
        if _tls_failure(exc):
            return GatewayError(502, f"Could not reach provider '{self.provider}': the TLS handshake failed.",
                                code="upstream_tls_error", retryable=True)
        return GatewayError(502, f"Could not reach provider '{self.provider}': {type(exc).__name__}.",
                            code="upstream_unreachable", retryable=True)

    @staticmethod
    def _parse_error(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace").strip()
            return (text or None), None, None, None
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = err.get("code")
            return (str(err.get("message") or "") or None, err.get("type"), err.get("param"),
                    None if code is None else str(code))
        if isinstance(err, str):
            return err, None, None, None
        return None, None, None, None


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):   # bounded: a cause chain is short
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _nothing_sent(exc: BaseException) -> bool:
    """The connection could not be opened: no byte of the request left."""
    return isinstance(exc, (H1ConnectError, aiohttp.ClientConnectorError, aiohttp.ClientProxyConnectionError))


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    for e in _causes(exc):
        if isinstance(e, aiohttp.ClientConnectorCertificateError):  # (itself an ssl.CertificateError)
            cert = e.certificate_error
            return cert if isinstance(cert, ssl.SSLCertVerificationError) else None
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
    return None


def _tls_failure(exc: BaseException) -> bool:
    return any(isinstance(e, (ssl.SSLError, aiohttp.ClientSSLError)) for e in _causes(exc))


async def _aiohttp_error_body(resp: aiohttp.ClientResponse) -> bytes:
    """The (bounded) body of a non-2xx aiohttp answer; the response is released afterwards."""
    try:
        return await resp.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return b""
    finally:
        resp.release()


async def _pieces(st: H1Stream, upstream: Upstream) -> AsyncIterator[bytes]:
    """A streamed body piece by piece; a transport failure mid-body as a translated error."""
    try:
        async for piece in st:
            yield piece
    except (ConnectionError, asyncio.TimeoutError, H1ProtocolError) as exc:
        raise upstream.error_from_exception(exc) from None


async def json_events(st: H1Stream, upstream: Upstream) -> AsyncGenerator[Any, None]:
    """An SSE body's events, each ``data`` parsed as JSON, as they arrive (for the bridge's
    dialects: Anthropic Messages, Gemini ``alt=sse``). A transport failure or an event that is not
    JSON raises a translated GatewayError; closing the generator closes the stream."""
    from ..transforms.sse import EventTooLarge, SSEParser

    parser = SSEParser()
    try:
        while True:
            try:
                chunk = await st.read()
                events = parser.feed(chunk) if chunk else parser.close()
            except asyncio.TimeoutError as exc:   # the words of pipe_sse, the pass-through path
                raise GatewayError(504, f"Provider '{upstream.provider}' sent no event in time: {exc}.",
                                   code="upstream_timeout") from None
            except (ConnectionError, H1ProtocolError) as exc:
                raise GatewayError(502, f"The stream from provider '{upstream.provider}' broke: "
                                        f"{type(exc).__name__}.", code="upstream_stream_error") from None
            except EventTooLarge:
                raise GatewayError(502, f"Provider '{upstream.provider}' sent an SSE event too large to read.",
                                   code="upstream_bad_response") from None
            for event in events:
                if event.data[:6] == b"[DONE]":
                    continue
                try:
                    yield orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise GatewayError(502, f"Provider '{upstream.provider}' sent an SSE event that is not JSON.",
                                       code="upstream_bad_response") from None
            if not chunk:
                return
    finally:
        st.close()


# What an attempt can fail with before it has an answer (then retried by the rules above).
_TRANSPORT_ERRORS = (ConnectionError, asyncio.TimeoutError, H1ProtocolError, aiohttp.ClientError)


def _split_url(url: str) -> tuple[str, str]:
    """``"https://h:1/v1/files?x=1"`` → ``("https://h:1", "/v1/files?x=1")``."""
    start = url.find("://")
    slash = url.find("/", start + 3 if start >= 0 else 0)
    if slash < 0:
        return url, "/"
    return url[:slash], url[slash:]


async def _buffered_body(resp: H1Response) -> bytes:
    return resp.body


async def _drain_error_body(st: H1Stream) -> bytes:
    """The (bounded) body of a non-2xx streamed answer; the stream is closed afterwards."""
    data = b""
    try:
        while len(data) < _MAX_ERROR_BODY:
            piece = await st.read()
            if not piece:
                break
            data += piece
    except (ConnectionError, asyncio.TimeoutError, H1ProtocolError):
        pass
    finally:
        st.close()
    return data
