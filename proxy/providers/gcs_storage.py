"""Google Cloud Storage for the Vertex provider: a streaming upload sink and a few object helpers.

Uploads run GCS's resumable-upload protocol by hand over aiohttp, because gcloud-aio-storage
uploads only seekable, known-length sources in one PUT (docs/provider-facts.md §8.5-8.6):

1. ``POST {api_root}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=...`` with the
   object metadata as JSON; the session URI comes back in ``Location``.
2. ``PUT <session>`` one chunk at a time, each a multiple of 256 KiB, with
   ``Content-Range: bytes a-b/*``. GCS answers ``308`` with ``Range: bytes=0-N`` (what it has
   persisted, possibly less than was sent); the unacknowledged bytes are sent again.
3. The last ``PUT`` names the total, ``bytes a-b/total`` (or ``bytes */total`` when the stream
   ended on a chunk boundary), and gets ``200``/``201`` with the object resource.

A chunk PUT that gets no answer or a retryable status (408, 429, 5xx) is followed, after a
short backoff, by a status query (an empty ``PUT`` with ``Content-Range: bytes */*``); the upload
resumes from whatever the session reports. Each chunk goes out through a one-shot async iterator
so aiohttp can neither replay it on its own (it re-sends idempotent requests once after a
dropped connection) nor warn about large raw bodies; every resend is one this module decided.

Reads, deletes and metadata use gcloud-aio-storage's ``Storage``, which handles auth itself.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp
import orjson
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage
from multidict import CIMultiDictProxy
from yarl import URL

from .sink import SinkResult

log = logging.getLogger("sluicegate.gcs")

UPLOAD_QUANTUM = 256 << 10  # every chunk but the last must be a multiple of this
_PIECE = 1 << 20  # a chunk is written to the socket in slices of this size
_MAX_ATTEMPTS = 5  # consecutive failed requests before an upload gives up
_BACKOFF = 0.05  # seconds before the first retry; doubles with each further failure
# gcloud-aio-storage's default is a 10 s *total* timeout, which would cut any long download.
_DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


class GCSStorageError(Exception):
    """A GCS request failed. ``status`` is GCS's HTTP status, ``None`` when no answer came;
    ``code`` is GCS's error reason (``"forbidden"``, ``"notFound"``...) when it gave one.

    The message names only the operation, the status and the reason: never a token, a session
    URI, the bucket or the object. ``retryable`` tells whether trying again later could help.
    """

    def __init__(
        self, message: str, status: int | None = None, *, code: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable


class GCSNotFound(GCSStorageError):
    """The bucket or object does not exist."""


def _is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _status_error(what: str, status: int, body: bytes = b"") -> GCSStorageError:
    # GCS's free-text message may name the bucket, object or service account; its reason
    # code (error.errors[0].reason) does not.
    try:
        code = orjson.loads(body)["error"]["errors"][0]["reason"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        code = None
    if not isinstance(code, str) or not code.isidentifier():
        code = None
    message = f"GCS {what} failed with HTTP {status}" + (f" ({code})" if code else "")
    cls = GCSNotFound if status == 404 else GCSStorageError
    return cls(message, status, code=code, retryable=_is_retryable(status))


class _Reply(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def _pieces(chunk: bytearray) -> AsyncIterator[memoryview]:
    view = memoryview(chunk)
    for start in range(0, len(view), _PIECE):
        yield view[start : start + _PIECE]


class GCSResumableSink:
    """Streams one object into GCS through a resumable upload session.

    Holds at most one chunk plus the latest write (``chunk_size`` + one write); ``write`` awaits
    the chunk's PUT, so a slow bucket slows the client down instead of growing memory. The
    session is opened by the first full chunk or by ``complete``, so an upload aborted early
    costs no request at all.

    ``token`` supplies ``Authorization: Bearer ...``; ``None`` is emulator mode (no header).
    Timeouts are the ``session``'s. If ``write`` or ``complete`` fails, the sink aborts itself
    before raising; ``abort`` afterwards is a no-op, as it is after a successful ``complete``
    (the object then belongs to the caller: remove it with :func:`delete`). Not safe for
    concurrent calls: cancel a pending ``write`` before calling ``abort``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_root: str,
        bucket: str,
        name: str,
        *,
        token: Token | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        chunk_size: int = 8 << 20,
    ) -> None:
        if chunk_size <= 0 or chunk_size % UPLOAD_QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of {UPLOAD_QUANTUM}, got {chunk_size}")
        self._session = session
        self._api_root = api_root.rstrip("/")
        self._bucket = bucket
        self._name = name
        self._token = token
        self._content_type = content_type
        self._metadata = dict(metadata or {})
        self._chunk_size = chunk_size
        self._buffer = bytearray()  # bytes not yet acknowledged, starting at offset _persisted
        self._persisted = 0
        self._received = 0
        self._session_uri: URL | None = None
        self._resource: dict[str, Any] | None = None  # set once GCS has finalised the object
        self._unsure = False  # the last PUT got no usable answer: ask the session first
        self._failures = 0  # consecutive failed rounds
        self._error: GCSStorageError | None = None  # the latest of those failures
        self._finished = False  # completed or aborted

    async def write(self, chunk: bytes | memoryview) -> None:
        self._ensure_open()
        self._buffer += chunk
        self._received += len(chunk)
        try:
            while len(self._buffer) >= self._chunk_size:
                await self._round(self._chunk_size, final=False)
        except GCSStorageError:
            await self.abort()
            raise

    async def complete(self) -> SinkResult:
        self._ensure_open()
        try:
            while self._resource is None:
                await self._round(len(self._buffer), final=True)
            stored = self._resource.get("size")
            if str(stored) != str(self._received):
                raise GCSStorageError(f"GCS stored {stored} bytes of an upload of {self._received}")
        except GCSStorageError:
            await self.abort()
            raise
        self._finished = True
        return SinkResult(
            bytes=self._received,
            location={"bucket": self._bucket, "name": self._name, "generation": self._resource.get("generation")},
        )

    async def abort(self) -> None:
        """Cancel the session, or delete the object if GCS finalised it although the upload
        did not complete. Idempotent; failures are logged, never raised."""
        if self._finished:
            return
        self._finished = True
        self._buffer = bytearray()
        if self._resource is not None:
            url = f"{self._api_root}/storage/v1/b/{quote(self._bucket, safe='')}/o/{quote(self._name, safe='')}"
            # ifGenerationMatch: never remove a newer object another upload wrote under this name.
            params = {"ifGenerationMatch": str(self._resource.get("generation"))}
            await self._best_effort("object delete", url, (200, 204, 404, 412), params=params)
        elif self._session_uri is not None:
            await self._best_effort("upload cancel", self._session_uri, (204, 404, 410, 499))

    def partial_location(self) -> dict[str, Any]:
        """The open session, for a janitor after a crash (empty before it opens and once the
        upload completed or was aborted). The session URI is a credential: store it, never log it."""
        if self._session_uri is None or self._finished:
            return {}
        return {"session_uri": str(self._session_uri)}

    # -- one round: a single request that moves the upload forward --------------------------

    async def _round(self, size: int, *, final: bool) -> None:
        """Open the session, or ask it what it persisted, or PUT the first ``size`` buffered bytes
        (the whole rest, naming the total, when ``final``). A retryable failure is counted and
        backed off here; after ``_MAX_ATTEMPTS`` in a row the last one is raised."""
        if self._failures:
            if self._failures >= _MAX_ATTEMPTS:
                assert self._error is not None
                raise self._error
            await asyncio.sleep(_BACKOFF * 2 ** (self._failures - 1))
        try:
            if self._session_uri is None:
                await self._initiate()
            elif self._unsure:
                await self._query(self._session_uri, final=final)
            else:
                await self._put(self._session_uri, size, final=final)
        except GCSStorageError as exc:
            if not exc.retryable:
                raise
            self._failures += 1
            self._error = exc

    async def _initiate(self) -> None:
        body: dict[str, Any] = {"name": self._name, "contentType": self._content_type}
        if self._metadata:
            body["metadata"] = self._metadata
        reply = await self._call(
            "POST",
            f"{self._api_root}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o",
            "upload start",
            (200, 201),
            params={"uploadType": "resumable", "name": self._name},
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json; charset=UTF-8", "X-Upload-Content-Type": self._content_type},
        )
        location = reply.headers.get("Location")
        if not location:
            raise GCSStorageError("GCS upload start returned no session URI", reply.status)
        self._session_uri = URL(location, encoded=True)
        self._failures = 0

    async def _put(self, uri: URL, size: int, *, final: bool) -> None:
        chunk, self._buffer = self._buffer, self._buffer[size:]
        del chunk[size:]  # the chunk is never resized again: slices of it may still be in flight
        start = self._persisted
        end = start + len(chunk)
        if chunk:
            content_range = f"bytes {start}-{end - 1}/{end if final else '*'}"
        else:
            content_range = f"bytes */{end}"
        try:
            reply = await self._call(
                "PUT",
                uri,
                "chunk upload",
                (200, 201, 308),
                data=_pieces(chunk),
                headers={"Content-Range": content_range, "Content-Length": str(len(chunk))},
            )
        except GCSStorageError:
            self._buffer[0:0] = chunk
            self._unsure = True
            raise
        self._settle(reply, limit=end, final=final)
        acked = self._persisted - start
        if acked < len(chunk):
            self._buffer[0:0] = chunk[acked:]
        if acked == 0 and self._resource is None:
            raise GCSStorageError("GCS persisted none of the chunk", reply.status, retryable=True)
        self._failures = 0

    async def _query(self, uri: URL, *, final: bool) -> None:
        reply = await self._call(
            "PUT", uri, "upload status query", (200, 201, 308), headers={"Content-Range": "bytes */*"}
        )
        self._unsure = False
        start = self._persisted
        self._settle(reply, limit=start + len(self._buffer), final=final)
        del self._buffer[: self._persisted - start]

    def _settle(self, reply: _Reply, *, limit: int, final: bool) -> None:
        """Take in a session's answer: the persisted offset (``308``) or the object (``2xx``)."""
        if reply.status == 308:
            persisted = _persisted_offset(reply.headers.get("Range"))
            if persisted is None or not self._persisted <= persisted <= limit:
                raise GCSStorageError("GCS reported an inconsistent upload offset", 308)
            self._persisted = persisted
            return
        try:
            resource = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            resource = None
        if not isinstance(resource, dict):
            raise GCSStorageError("GCS finalised the upload without an object resource", reply.status)
        self._resource = resource
        self._persisted = limit  # a finalised object holds everything sent: nothing to keep
        if not final:
            raise GCSStorageError("GCS finalised the upload before the stream ended", reply.status)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str | URL,
        what: str,
        ok: tuple[int, ...],
        *,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> _Reply:
        """One request without redirects; any status outside ``ok`` raises GCSStorageError."""
        if method == "PUT":
            # Without it aiohttp sends application/octet-stream, which fake-gcs-server applies to
            # the object; GCS itself ignores it (python-storage sends it the same way).
            headers["Content-Type"] = self._content_type
        if self._token is not None:
            try:
                headers["Authorization"] = f"Bearer {await self._token.get()}"
            except Exception as exc:
                raise GCSStorageError("could not obtain a GCS access token") from exc
        try:
            async with self._session.request(method, url, headers=headers, allow_redirects=False, **kwargs) as resp:
                reply = _Reply(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GCSStorageError(f"GCS {what} failed: {type(exc).__name__}", retryable=True) from exc
        if reply.status not in ok:
            raise _status_error(what, reply.status, reply.body)
        return reply

    async def _best_effort(self, what: str, url: str | URL, ok: tuple[int, ...], **kwargs: Any) -> None:
        try:
            await self._call("DELETE", url, what, ok, headers={}, **kwargs)
        except GCSStorageError as exc:
            log.warning("GCS upload abort: %s", exc.message)

    def _ensure_open(self) -> None:
        if self._finished:
            raise RuntimeError("GCS sink already completed or aborted")


def _persisted_offset(range_header: str | None) -> int | None:
    """Bytes persisted according to a 308's ``Range: bytes=0-N`` (no header: none yet)."""
    if range_header is None:
        return 0
    unit, _, span = range_header.partition("=")
    first, _, last = span.partition("-")
    if unit.strip() != "bytes" or first != "0" or not last.isdigit():
        return None
    return int(last) + 1


# -- object helpers on gcloud-aio-storage ------------------------------------------------------


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn the library's aiohttp errors into GCSStorageError / GCSNotFound."""
    try:
        yield
    except aiohttp.ClientResponseError as exc:
        raise _status_error(what, exc.status) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GCSStorageError(f"GCS {what} failed: {type(exc).__name__}", retryable=True) from exc


async def cancel_session(session: aiohttp.ClientSession, session_uri: str) -> None:
    """Cancel a resumable upload session (``DELETE`` on its URI, GCS answers 499); a session
    already gone (404/410) is fine. The URI itself authorises the call."""
    try:
        async with session.delete(URL(session_uri, encoded=True), headers={"Content-Length": "0"},
                                  allow_redirects=False) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GCSStorageError(f"GCS upload cancel failed: {type(exc).__name__}", retryable=True) from exc
    if status not in (200, 204, 404, 410, 499):
        raise _status_error("upload cancel", status, body)


async def head(storage: Storage, bucket: str, name: str) -> dict[str, Any] | None:
    """The object resource (``size`` is a decimal string), or ``None`` if there is no object."""
    try:
        with _translated("metadata request"):
            return await storage.download_metadata(bucket, name)
    except GCSNotFound:
        return None


async def delete(storage: Storage, bucket: str, name: str) -> bool:
    """Delete the object; ``False`` if there was none."""
    try:
        with _translated("delete"):
            await storage.delete(bucket, name)
    except GCSNotFound:
        return False
    return True


async def iter_object(storage: Storage, bucket: str, name: str, chunk_size: int = 256 << 10) -> AsyncGenerator[bytes, None]:
    """The object's bytes in pieces of at most ``chunk_size``, streamed, never buffered whole.

    A missing object raises GCSNotFound from the first ``__anext__``, before any byte, so a
    caller can fetch the first piece before committing its own response. Closing the iterator
    early releases the connection.
    """
    with _translated("download"):
        # gcloud-aio declares ``timeout: int`` here, but hands it to AioSession.get, which
        # takes an aiohttp.ClientTimeout as well (a per-read gap, not a whole-download cap).
        stream = await storage.download_stream(bucket, name, timeout=_DOWNLOAD_TIMEOUT)  # type: ignore[arg-type]
    async with stream:
        while True:
            with _translated("download"):
                piece = await stream.read(chunk_size)
            if not piece:
                return
            yield piece


#: Source objects one compose request may name (docs/provider-facts.md §8.8).
MAX_COMPOSE_SOURCES = 32


async def compose(session: aiohttp.ClientSession, api_root: str, bucket: str, name: str,
                  sources: list[tuple[str, str | None]], *, token: Token | None, content_type: str,
                  metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """``POST …/o/{name}/compose``: the object ``name`` as the concatenation of ``sources``
    (``(name, generation or None)``, at most 32, all in ``bucket``); the new object's resource.
    gcloud-aio-storage's ``compose`` sends neither source generations nor metadata."""
    if not 1 <= len(sources) <= MAX_COMPOSE_SOURCES:
        raise ValueError(f"a compose takes 1 to {MAX_COMPOSE_SOURCES} sources, not {len(sources)}")
    destination: dict[str, Any] = {"contentType": content_type}
    if metadata:
        destination["metadata"] = metadata
    body = {"kind": "storage#composeRequest", "destination": destination,
            "sourceObjects": [{"name": n, "generation": g} if g else {"name": n} for n, g in sources]}
    headers = {"Content-Type": "application/json; charset=UTF-8"}
    if token is not None:
        try:
            headers["Authorization"] = f"Bearer {await token.get()}"
        except Exception as exc:
            raise GCSStorageError("could not obtain a GCS access token") from exc
    url = f"{api_root.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}/compose"
    try:
        async with session.post(url, data=orjson.dumps(body), headers=headers, allow_redirects=False) as resp:
            status, reply = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GCSStorageError(f"GCS compose failed: {type(exc).__name__}", retryable=True) from exc
    if status != 200:
        raise _status_error("compose", status, reply)
    try:
        resource = orjson.loads(reply)
    except orjson.JSONDecodeError:
        resource = None
    if not isinstance(resource, dict):
        raise GCSStorageError("GCS compose answered without an object resource", status)
    return resource


async def put(storage: Storage, bucket: str, name: str, data: bytes, content_type: str) -> None:
    """Store a small object in one simple upload."""
    with _translated("upload"):
        await storage.upload(bucket, name, data, content_type=content_type, force_resumable_upload=False)


async def list_names(storage: Storage, bucket: str, prefix: str) -> list[str]:
    """The names of the objects under ``prefix``, every page of them, in name order."""
    names: list[str] = []
    params = {"prefix": prefix}
    for _ in range(10_000):  # bounded: 1,000 names a page
        with _translated("list"):
            page = await storage.list_objects(bucket, params=params)
        names.extend(item["name"] for item in page.get("items") or [])
        token = page.get("nextPageToken")
        if not token:
            break
        params = {"prefix": prefix, "pageToken": token}
    return sorted(names)
