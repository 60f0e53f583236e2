"""s3: the Files API over the operator's own S3 bucket (AWS S3, or any S3-compatible store:
MinIO, Cloudflare R2...). Gateway-managed files, stored exactly as sent.

An upload streams into ``s3://{bucket}/{prefix}{tenant}/{file_id}/{filename}`` by S3
multipart upload (:class:`~proxy.providers.s3_storage.S3MultipartSink`), one part at a time;
the object carries the user metadata ``file-id``, ``purpose`` and ``tenant`` (ASCII; a
non-ASCII tenant name is percent-encoded). A ``purpose=batch`` file is kept byte for byte (the
``batch_jsonl`` filter has checked its lines). This is the byte store of a multi-replica deployment: every replica reads the
same bucket.

:class:`S3Provider` is also the storage half of ``bedrock``
(:class:`~proxy.providers.bedrock.BedrockProvider`), which adds the override headers and the
translation of batch files through the hooks :meth:`S3Provider.target`,
:meth:`S3Provider.batch_translator`, :meth:`S3Provider.object_key` and
:attr:`S3Provider.sink_class`.

The store's ``location`` is ``{"bucket", "key", "region", "etag"}``.

Credentials: ``aws_access_key_id``/``aws_secret_access_key`` from the config, else the default
AWS credential chain (environment, profile, container/instance role). ``endpoint_url`` points
the client at an S3-compatible store (moto in the tests); ``region`` defaults to us-east-1
(R2 takes ``auto``).

Memory per upload: S3 parts of 5 MiB (S3's minimum, so at most 10,000 parts hold ~48 GiB,
docs/provider-facts.md §7.4; a
larger configured file limit raises the part size), at most two part uploads in flight. The
provider key ``upload_chunk_size`` (5 MiB to 5 GiB) sets a larger part size: fewer requests,
about three times as much memory per upload. The sink then holds about three parts (plus
aiohttp's copy of each body over plain ``http://``): a 512 MiB upload into moto raises the
gateway's peak RSS by ≈ 35 MiB, inside its 64 MiB budget.
"""
from __future__ import annotations

import asyncio
import builtins
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, AsyncIterator, ClassVar
from urllib.parse import quote

import aiohttp
import orjson
from aiobotocore.session import get_session
from botocore.exceptions import (
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from ..errors import GatewayError
from ..transforms.batch_translate import BatchTranslator
from . import s3_storage
from .base import Download
from .object_store import (BucketProvider, Target, TranslatingSink, bucket_not_found, content_type_for, first_piece,
                           not_found)
from .parts_s3 import S3PartStore
from .s3_storage import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3MultipartSink, S3NotFound, S3StorageError
from .sink import SinkResult

if TYPE_CHECKING:
    from .configs import BedrockConfig, S3Config
    from ..exchange import Exchange
    from ..store.base import FileRecord

MAX_IN_FLIGHT = 2
# Parts are sized so that the largest allowed upload needs at most this many (S3: 10,000).
_PARTS_TARGET = 9_000
_DEFAULT_FILE_LIMIT = 512 << 20
_MAX_METADATA_VALUE = 512        # S3 user metadata: 2 KB in total
# Regions other than the configured one get their own client; this many are kept, idle
# ones are closed beyond it (least recently used first).
_MAX_REGION_CLIENTS = 8

_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId", "UnrecognizedClientException",
})
_THROTTLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "ServiceUnavailable", "503", "429",
})
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_RETRY_AFTER = "2"


def metadata_value(value: str) -> str:
    """An ASCII, printable metadata value (S3 refuses others): percent-encode the rest."""
    return quote(value, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~")[:_MAX_METADATA_VALUE]


def part_size_setting(configured: int | None) -> int:
    if configured is None:
        return MIN_PART_SIZE
    if not MIN_PART_SIZE <= configured <= MAX_PART_SIZE:
        raise ValueError(f"upload_chunk_size: an S3 part must be 5MiB to 5GiB; got {configured}")
    return configured


class _RegionClient:
    """One aiobotocore S3 client, leased by the operations that use it."""

    __slots__ = ("region", "client", "stack", "users", "last_used")

    def __init__(self, region: str, client: Any, stack: AsyncExitStack) -> None:
        self.region = region
        self.client = client
        self.stack = stack
        self.users = 0
        self.last_used = time.monotonic()


class _Lease:
    """``async with provider.lease(region) as client`` for short operations; ``release()``
    (idempotent) for leases that outlive one call (uploads, downloads)."""

    __slots__ = ("provider", "region", "entry")

    def __init__(self, provider: "S3Provider", region: str) -> None:
        self.provider = provider
        self.region = region
        self.entry: _RegionClient | None = None

    async def acquire(self) -> Any:
        self.entry = await self.provider._acquire(self.region)
        return self.entry.client

    async def release(self) -> None:
        entry, self.entry = self.entry, None
        if entry is not None:
            await self.provider._release(entry)

    async def __aenter__(self) -> Any:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class S3Sink(TranslatingSink):
    """The S3 sink of one upload (:class:`S3MultipartSink`), stored as sent; a subclass may put
    a translator in front of it. Holds at most the S3 sink's parts and one client chunk."""

    __slots__ = ("key", "lease", "content_type", "metadata")

    provider: "S3Provider"
    storage_error = S3StorageError
    service = "Amazon S3"

    def __init__(self, provider: "S3Provider", ex: "Exchange", inner: S3MultipartSink,
                 translator: BatchTranslator | None, target: Target, key: str, lease: _Lease,
                 content_type: str, metadata: dict[str, str], *, max_ids_bytes: int = 0) -> None:
        super().__init__(provider, ex, inner, translator, target, max_ids_bytes=max_ids_bytes)
        self.key = key
        self.lease = lease
        self.content_type = content_type
        self.metadata = metadata

    def upload_error(self, exc: Exception) -> GatewayError:
        assert isinstance(exc, S3StorageError)
        return self.provider.s3_error(exc, "upload", target=self.target)

    async def finish(self, stored: SinkResult) -> dict[str, Any]:
        etag = stored.location.get("etag")
        await self.lease.release()
        return {"bucket": self.target.bucket, "key": self.key, "region": self.target.region, "etag": etag}

    async def abort(self) -> None:
        try:
            await super().abort()  # AbortMultipartUpload
        finally:
            await self.lease.release()

    def partial_location(self) -> dict[str, Any]:
        location = super().partial_location()
        if location:
            location["region"] = self.target.region
        return location


class S3Provider(BucketProvider):
    type = "s3"
    #: The sink class of one upload (bedrock's translates batch rows).
    sink_class: ClassVar[builtins.type[S3Sink]] = S3Sink  # builtins': `type` is the attribute above
    config: "S3Config | BedrockConfig"
    region: str  # the configured region (a bucket provider's may be None)

    def __init__(self, config: "S3Config | BedrockConfig") -> None:
        super().__init__(config)
        self.region = config.region
        self.min_part_size = part_size_setting(config.upload_chunk_size)
        self._session: Any = None
        self._clients: dict[str, _RegionClient] = {}
        self._create_lock = asyncio.Lock()
        # Multipart upload ids the last partial sweep found unowned (see sweep_partials).
        self._unowned_uploads: set[str] = set()

    # -- clients ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = get_session()
        entry = await self._create_client(self.region)
        entry.users = 1  # the configured region's client lives as long as the provider
        self._clients[self.region] = entry
        where = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        self.log.info("%s provider %s: S3 bucket %s in %s%s", self.type, self.name, self.bucket, self.region, where)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for entry in clients:
            try:
                await entry.stack.aclose()
            except Exception as exc:  # pragma: no cover - closing is best effort
                self.log.warning("%s: closing the S3 client for %s failed: %s",
                            self.name, entry.region, type(exc).__name__)

    def _client_kwargs(self, region: str) -> dict[str, Any]:
        cfg = self.config
        return s3_storage.make_client_kwargs(  # S3 calls are idempotent: all may be retried
            region, cfg.endpoint_url, cfg.aws_access_key_id, cfg.aws_secret_access_key,
            max_retries=cfg.max_retries, timeouts=cfg.timeouts)

    async def _create_client(self, region: str) -> _RegionClient:
        assert self._session is not None, "provider not started"
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                self._session.create_client("s3", **self._client_kwargs(region)))
        except BaseException:
            await stack.aclose()
            raise
        return _RegionClient(region, client, stack)

    def lease(self, region: str) -> _Lease:
        return _Lease(self, region)

    async def _acquire(self, region: str) -> _RegionClient:
        entry = self._clients.get(region)
        if entry is None:
            async with self._create_lock:
                entry = self._clients.get(region)
                if entry is None:
                    try:
                        entry = await self._create_client(region)
                    except Exception as exc:
                        self.log.warning("%s: could not create an S3 client for %s: %s",
                                    self.name, region, type(exc).__name__)
                        raise GatewayError(502, f"Provider '{self.name}': could not set up an S3 client for "
                                           f"region {region}.", code="upstream_error") from None
                    self._clients[region] = entry
        entry.users += 1
        entry.last_used = time.monotonic()
        return entry

    async def _release(self, entry: _RegionClient) -> None:
        entry.users -= 1
        entry.last_used = time.monotonic()
        while len(self._clients) > _MAX_REGION_CLIENTS:
            idle = [e for e in self._clients.values() if e.users == 0]
            if not idle:
                break
            oldest = min(idle, key=lambda e: e.last_used)
            del self._clients[oldest.region]
            try:
                await oldest.stack.aclose()
            except Exception as exc:  # pragma: no cover
                self.log.warning("%s: closing the S3 client for %s failed: %s",
                            self.name, oldest.region, type(exc).__name__)

    # -- uploads ---------------------------------------------------------------------------

    def object_key(self, tenant: str, file_id: str, filename: str, *, batch: bool) -> str:
        """The upload's key (``batch``: bedrock makes it end in ``.jsonl``)."""
        return self.object_path(tenant, file_id, filename)

    def part_size(self, ex: "Exchange", batch: bool) -> int:
        """``upload_chunk_size`` (default: S3's 5 MiB minimum), unless the upload limit needs more
        than ~9,000 such parts. ``batch``: the rows are translated (and may grow)."""
        limit = ex.size_limit or _DEFAULT_FILE_LIMIT
        if batch:
            limit *= 2  # translated rows can be longer than the lines they come from
        per_part = -(-limit // _PARTS_TARGET)
        return min(MAX_PART_SIZE, max(self.min_part_size, -(-per_part // (1 << 20)) << 20))

    def object_attributes(self, tenant: str, file_id: str, filename: str,
                          purpose: str | None) -> tuple[str, str, dict[str, str]]:
        """The key, content type and user metadata of the object a file is stored as."""
        key = self.object_key(tenant, file_id, filename, batch=purpose == "batch")
        metadata = {"file-id": file_id, "purpose": purpose or "", "tenant": metadata_value(tenant)}
        return key, content_type_for(purpose), metadata

    def part_store(self, ex: "Exchange | None") -> S3PartStore:
        """Parts as objects in the bucket the request chose (proxy/providers/parts_s3.py), so
        every replica sees them and ``complete`` assembles them inside S3. The sweeper (``ex``
        None) gets the configured bucket's store; its ``delete`` goes by each part's recorded
        bucket and region, so parts are removed where they were written."""
        return S3PartStore(self, self.target(ex) if ex is not None else self.configured_target())

    async def open_sink(self, ex: "Exchange", file_id: str) -> S3Sink:
        target = self.target(ex)
        translator = self.batch_translator(ex, target)
        tenant = ex.tenant.name if ex.tenant is not None else "default"
        key, content_type, metadata = self.object_attributes(tenant, file_id, ex.filename or "upload", ex.purpose)
        lease = self.lease(target.region or self.region)
        client = await lease.acquire()
        inner = S3MultipartSink(client, target.bucket, key, content_type=content_type, metadata=metadata,
                                part_size=self.part_size(ex, translator is not None), max_in_flight=MAX_IN_FLIGHT)
        return self.sink_class(self, ex, inner, translator, target, key, lease, content_type, metadata)

    # -- retrieve / delete / content -----------------------------------------------------

    @staticmethod
    def _located(rec: "FileRecord | None", file_id: str) -> tuple[str, str, str | None]:
        if rec is None or not rec.location.get("bucket") or not rec.location.get("key"):
            raise not_found(file_id)
        return rec.location["bucket"], rec.location["key"], rec.location.get("region")

    async def _head(self, client: Any, bucket: str, key: str, file_id: str) -> dict[str, Any]:
        """The object's metadata; 404 when it was removed from the bucket behind the gateway's back."""
        try:
            meta = await s3_storage.head(client, bucket, key)
        except S3StorageError as exc:
            raise self.s3_error(exc, "metadata request", file_id=file_id) from None
        if meta is None:
            raise not_found(file_id)
        return meta

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        bucket, key, region = self._located(rec, file_id)
        assert rec is not None
        async with self.lease(region or self.region) as client:
            await self._head(client, bucket, key, file_id)
        return orjson.dumps(rec.to_openai())

    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        upload_id, bucket, key = location.get("upload_id"), location.get("bucket"), location.get("key")
        if not (upload_id and bucket and key):
            return  # the multipart upload had not started: nothing in S3
        async with self.lease(location.get("region") or self.region) as client:
            await s3_storage.abort_upload(client, bucket, key, upload_id)

    async def sweep_partials(self, owned: list[dict[str, Any]], max_age: float) -> int:
        """Abort multipart uploads under the configured bucket and prefix that no reservation
        owns, started more than ``max_age`` ago (a crash before the reservation learnt the
        upload id, or an upload of another gateway whose store is lost), once two sweeps in a
        row have found it so.

        ``owned`` was read before the listing: an upload begun in between is listed without its
        reservation. S3's ``Initiated`` shows it young, but an S3-compatible store may not say
        (moto reports 2010-11-10 for every upload) and clocks drift, so its age alone is not
        trusted: by the next sweep its reservation, which names the file id from the upload's
        first chunks on (and the upload id once a part is sent), is in ``owned``."""
        owned_ids = {loc.get("upload_id") for loc in owned}
        # By file id too: an upload records its file id at its first chunk, its S3 upload id
        # only once the first part is sent.
        owned_files = {loc.get("file_id") for loc in owned}
        seen_before, unowned = self._unowned_uploads, set()
        aborted = 0
        async with self.lease(self.region) as client:
            async for key, upload_id in s3_storage.stale_uploads(client, self.bucket, self.prefix,
                                                                 time.time() - max_age):
                segments = key[len(self.prefix):].split("/")
                # Only keys of the gateway's layout: {prefix}{tenant}/{file id}/{name}, and the
                # parts of Uploads, {prefix}uploads/{upload id}/{part id} (parts_s3.py).
                if (len(segments) == 3 and (segments[1].startswith("file-") or segments[0] == "uploads")
                        and upload_id not in owned_ids and segments[1] not in owned_files):
                    unowned.add(upload_id)
                    if upload_id in seen_before:
                        await s3_storage.abort_upload(client, self.bucket, key, upload_id)
                        aborted += 1
        self._unowned_uploads = unowned - seen_before   # less the ones aborted now
        return aborted

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        # ex is None when the expiry sweeper calls.
        bucket, key, region = self._located(rec, file_id)
        async with self.lease(region or self.region) as client:
            try:
                await s3_storage.delete(client, bucket, key)  # already gone: fine
            except S3StorageError as exc:
                raise self.s3_error(exc, "delete", file_id=file_id) from None
        return orjson.dumps({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        bucket, key, region = self._located(rec, file_id)
        lease = self.lease(region or self.region)
        client = await lease.acquire()
        try:
            meta = await self._head(client, bucket, key, file_id)
            pieces = s3_storage.iter_object(client, bucket, key)
            first = await first_piece(pieces, S3StorageError,
                                      lambda exc: self.s3_error(exc, "download", file_id=file_id))
        except BaseException:
            await lease.release()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            if first:
                yield first
            try:
                async for piece in pieces:
                    yield piece
            except S3StorageError as exc:  # headers are out: the core cuts the connection
                raise self.s3_error(exc, "download", file_id=file_id) from None

        async def release() -> None:
            try:
                await pieces.aclose()
            finally:
                await lease.release()

        length = meta.get("ContentLength")
        return Download(content_type="application/octet-stream",
                        length=length if isinstance(length, int) else None, chunks=chunks(), release=release)

    # -- errors ------------------------------------------------------------------------------

    def s3_error(self, exc: S3StorageError, what: str, *, file_id: str | None = None,
                 target: Target | None = None) -> GatewayError:
        """An S3 failure as the client should see it. S3StorageError messages name only the
        operation, the HTTP status and S3's error code: never a bucket, key or credential."""
        code, status, cause = exc.code, exc.status, exc.__cause__
        self.log.warning("%s: %s", self.name, exc)
        if file_id is not None and (isinstance(exc, S3NotFound) or code == "NoSuchBucket"):
            return not_found(file_id)
        if code == "NoSuchBucket":
            return bucket_not_found(self.name, "S3", self.bucket_header, target)
        if code in _AUTH_CODES or status in (401, 403) or isinstance(cause, _CREDENTIAL_ERRORS):
            return GatewayError(502, f"Provider '{self.name}': Amazon S3 refused the gateway's credentials "
                                f"({what}).", code="upstream_auth_failed")
        if code in _THROTTLE_CODES or status in (429, 503):
            rate = status == 429 or code in ("Throttling", "ThrottlingException", "TooManyRequestsException", "429")
            return GatewayError(
                429 if rate else 503,
                f"Provider '{self.name}': Amazon S3 is {'rate limiting' if rate else 'asking the gateway to slow down'} "
                f"({what}); retry in a few seconds.", code="rate_limit_exceeded" if rate else "upstream_throttled",
                retryable=True, headers={"Retry-After": _RETRY_AFTER})
        if code == "RequestTimeout" or isinstance(cause, (ReadTimeoutError, ConnectTimeoutError, asyncio.TimeoutError)):
            return GatewayError(504, f"Provider '{self.name}': Amazon S3 did not answer in time ({what}).",
                                code="upstream_timeout", retryable=True)
        if isinstance(cause, EndpointConnectionError) or (status is None and isinstance(cause, aiohttp.ClientError)):
            return GatewayError(502, f"Could not reach provider '{self.name}' (Amazon S3 {what}).",
                                code="upstream_unreachable", retryable=True)
        if code is None and status is None and f"{MAX_PARTS} parts" in str(exc):
            return GatewayError(413, f"File is too large for provider '{self.name}': it needs more than "
                                f"{MAX_PARTS} S3 parts.", param="file", code="file_too_large")
        retryable = status is None or status >= 500
        return GatewayError(502, f"Provider '{self.name}': {exc}.", code="upstream_error", retryable=retryable)
