"""S3 object storage for the Bedrock provider, through an aiobotocore client.

* :class:`S3MultipartSink` streams an upload into one S3 object without ever holding the
  whole file: bytes collect in one part buffer; a full buffer becomes a background
  ``UploadPart`` while writes continue, with at most ``max_in_flight`` parts outstanding
  (``write`` then awaits the oldest: that is the back-pressure). Memory per upload is
  ``(max_in_flight + 1) * part_size``, plus one part for an instant while a full buffer is
  copied into its part body (over plain ``http://``, aiohttp also copies each body it sends).
  A file smaller than one part never starts a multipart upload: ``complete`` stores it with a
  single ``PutObject`` (this covers the empty file).
* Every upload declares a CRC32 checksum explicitly (``CreateMultipartUpload``, each
  ``UploadPart``, ``PutObject``) and ``CompleteMultipartUpload`` lists each part's CRC32, as
  S3 requires for an upload created with a checksum algorithm (a rule the sources do not
  cover: docs/provider-facts.md §12).
  The behaviour therefore does not depend on the client's ``request_checksum_calculation``
  setting.
* :func:`head`, :func:`delete`, :func:`iter_object`: the small operations the provider
  adapter needs.

Failures raise :class:`S3StorageError` (:class:`S3NotFound` for a missing key), whose message
names only the operation, the HTTP status and the S3 error code: never the bucket, key,
endpoint or credentials.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Final, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from .sink import SinkResult

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from .configs import TimeoutConfig
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef as _Part  # a "Parts" entry

log = logging.getLogger("sluicegate.s3")

# S3's part rules (docs/provider-facts.md §7.4).
MIN_PART_SIZE = 5 << 20          # S3 minimum for every part but the last
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
_CHECKSUM_ALGORITHM: Final = "CRC32"
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey"})   # HeadObject has no body: "404"

_T = TypeVar("_T")


class S3StorageError(Exception):
    """An S3 call failed. ``code`` is S3's error code (``None`` for transport errors)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class S3NotFound(S3StorageError):
    """The object does not exist."""


async def _call(operation: str, awaitable: Awaitable[_T]) -> _T:
    """Await one S3 call, translating its failure into :class:`S3StorageError`."""
    try:
        return await awaitable
    except ClientError as exc:
        raise _client_error(operation, exc) from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:   # aiohttp's: a truncated body
        raise S3StorageError(f"S3 {operation} failed: {type(exc).__name__}") from exc


def _client_error(operation: str, exc: ClientError) -> S3StorageError:
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    cls = S3NotFound if code in _NOT_FOUND_CODES else S3StorageError
    return cls(f"S3 {operation} failed: HTTP {status} {code}", code=code, status=status)


class S3MultipartSink:
    """A :class:`~proxy.providers.sink.Sink` writing one S3 object by multipart upload."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        part_size: int = 8 << 20,
        max_in_flight: int = 2,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._client = client
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._metadata = dict(metadata or {})
        self._part_size = part_size
        self._max_in_flight = max_in_flight
        self._buf = bytearray()
        self._total = 0
        self._upload_id: str | None = None
        self._next_part = 1
        self._in_flight: deque[asyncio.Task[_Part]] = deque()
        self._parts: list[_Part] = []
        self._finished = False           # completed or aborted

    async def write(self, chunk: bytes | memoryview) -> None:
        self._check_usable()
        view = memoryview(chunk)
        self._total += len(view)
        while len(self._buf) + len(view) >= self._part_size:
            take = self._part_size - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            await self._flush_part()
        self._buf += view

    async def complete(self) -> SinkResult:
        self._check_usable()
        if self._upload_id is None:
            put = await _call("PutObject", self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buf),
                ContentType=self._content_type, Metadata=self._metadata,
                ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
            ))
            etag = put["ETag"]
        else:
            if self._buf:
                await self._flush_part()
            while self._in_flight:          # oldest first: parts stay in ascending order
                await self._reap_oldest()
            completed = await _call("CompleteMultipartUpload", self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            ))
            etag = completed["ETag"]
        self._finished = True
        self._buf = bytearray()
        return SinkResult(
            bytes=self._total,
            location={"bucket": self._bucket, "key": self._key, "etag": etag},
        )

    async def abort(self) -> None:
        """Cancel outstanding parts and abort the multipart upload. Idempotent, never raises.

        After a successful :meth:`complete` this is a no-op: the object then belongs to the
        caller (remove it with :func:`delete`).
        """
        if self._finished:
            return
        self._finished = True
        self._buf = bytearray()
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight.clear()
        if self._upload_id is None:
            return
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                log.warning("S3 multipart abort failed: %s",
                            _client_error("AbortMultipartUpload", exc))
        except Exception as exc:  # abort must never raise
            log.warning("S3 multipart abort failed: %s", type(exc).__name__)

    def partial_location(self) -> dict[str, Any]:
        """Where the unfinished upload lives, for a janitor after a crash (empty before the
        multipart upload starts, and once it is completed or aborted)."""
        if self._upload_id is None or self._finished:
            return {}
        return {"bucket": self._bucket, "key": self._key, "upload_id": self._upload_id}

    def _check_usable(self) -> None:
        if self._finished:
            raise RuntimeError("S3 sink already completed or aborted")
        for task in self._in_flight:      # a failed part stays listed: the error is sticky
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _flush_part(self) -> None:
        """Hand the buffer to a background part upload, waiting for a free slot first."""
        if self._next_part > MAX_PARTS:
            raise S3StorageError(f"upload exceeds S3's {MAX_PARTS} parts; use a larger part_size")
        upload_id = self._upload_id
        if upload_id is None:
            resp = await _call("CreateMultipartUpload", self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type,
                Metadata=self._metadata, ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
            ))
            upload_id = self._upload_id = resp["UploadId"]
        while len(self._in_flight) >= self._max_in_flight:
            await self._reap_oldest()
        body, self._buf = bytes(self._buf), bytearray()
        self._in_flight.append(asyncio.create_task(self._upload_part(upload_id, self._next_part, body)))
        self._next_part += 1

    async def _reap_oldest(self) -> None:
        part = await self._in_flight[0]      # stays listed for abort() if this raises
        self._in_flight.popleft()
        self._parts.append(part)

    async def _upload_part(self, upload_id: str, number: int, body: bytes) -> _Part:
        resp = await _call("UploadPart", self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=upload_id, PartNumber=number,
            Body=body, ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
        ))
        part: _Part = {"PartNumber": number, "ETag": resp["ETag"]}
        if "ChecksumCRC32" in resp:      # absent only from stores that ignore checksums
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        return part


async def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    """``AbortMultipartUpload``; an upload already gone succeeds."""
    try:
        await _call("AbortMultipartUpload", client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
    except S3StorageError as exc:
        if exc.code != "NoSuchUpload":
            raise


async def stale_uploads(client: S3Client, bucket: str, prefix: str, older_than: float,
                        max_pages: int = 10) -> AsyncGenerator[tuple[str, str], None]:
    """``(key, upload_id)`` of the multipart uploads under ``prefix`` initiated before
    ``older_than`` (a Unix time); at most ``max_pages`` pages of ``ListMultipartUploads``."""
    paginator = client.get_paginator("list_multipart_uploads")
    pages = 0
    try:
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads") or ():
                initiated = upload.get("Initiated")
                if initiated is not None and initiated.timestamp() < older_than:
                    yield upload["Key"], upload["UploadId"]
            pages += 1
            if pages >= max_pages:
                return
    except ClientError as exc:
        raise _client_error("ListMultipartUploads", exc) from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise S3StorageError(f"S3 ListMultipartUploads failed: {type(exc).__name__}") from exc


async def list_keys(client: S3Client, bucket: str, prefix: str, max_pages: int = 10) -> list[str]:
    """The keys under ``prefix``, at most ``max_pages`` pages (1,000 keys each) of ``ListObjectsV2``."""
    paginator = client.get_paginator("list_objects_v2")
    found: list[str] = []
    pages = 0
    try:
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found.extend(o["Key"] for o in page.get("Contents") or ())
            pages += 1
            if pages >= max_pages:
                break
    except ClientError as exc:
        raise _client_error("ListObjectsV2", exc) from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise S3StorageError(f"S3 ListObjectsV2 failed: {type(exc).__name__}") from exc
    return found


async def head(client: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """``HeadObject`` without its ``ResponseMetadata``; ``None`` when the key does not exist."""
    try:
        resp = await _call("HeadObject", client.head_object(Bucket=bucket, Key=key))
    except S3NotFound:
        return None
    out: dict[str, Any] = dict(resp)
    out.pop("ResponseMetadata", None)
    return out


async def put(client: S3Client, bucket: str, key: str, body: bytes, content_type: str) -> None:
    """Store a small object in one ``PutObject``."""
    await _call("PutObject", client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type))


async def delete(client: S3Client, bucket: str, key: str) -> None:
    """Delete an object; deleting a missing key succeeds, as in S3."""
    await _call("DeleteObject", client.delete_object(Bucket=bucket, Key=key))


async def iter_object(
    client: S3Client, bucket: str, key: str, chunk_size: int = 256 << 10
) -> AsyncGenerator[bytes, None]:
    """Stream an object's bytes. Raises :class:`S3NotFound` on the first iteration if missing.

    The response body is closed when iteration ends, fails, or the generator is closed
    early (use ``contextlib.aclosing`` or call ``aclose()`` when stopping before the end).
    """
    resp = await _call("GetObject", client.get_object(Bucket=bucket, Key=key))
    async with resp["Body"] as body:
        while chunk := await _call("GetObject", body.read(chunk_size)):
            yield chunk


def retries(max_retries: int) -> dict[str, Any]:
    """botocore's ``retries`` setting for a provider's ``max_retries``: that many retries after
    the first attempt, in standard mode (throttling, transient 5xx such as a 500 on an
    ``UploadPart``, and connection errors are retried; every S3 call the gateway makes is
    idempotent, and a part body is bytes in memory, so it is safe to resend).

    ``total_max_attempts`` counts the first attempt too. botocore's other key,
    ``max_attempts``, counts retries only in a client ``Config`` (botocore adds one) but all
    attempts in ``~/.aws/config`` and ``AWS_MAX_ATTEMPTS``: easy to get off by one, so it is
    never used."""
    return {"total_max_attempts": max_retries + 1, "mode": "standard"}


def make_client_kwargs(
    region: str,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    *,
    max_pool_connections: int = 64,
    max_retries: int = 2,
    timeouts: "TimeoutConfig | None" = None,
) -> dict[str, Any]:
    """Keyword arguments for ``session.create_client(service, **kwargs)``: every aiobotocore
    client the gateway builds (S3, and Bedrock's control plane and runtime) is configured here.

    Without keys the default AWS credential chain applies. botocore's default checksum
    settings (``when_supported``) are kept: moto accepts them, and the sink declares CRC32
    explicitly anyway. ``max_pool_connections`` bounds the client's connections across all
    concurrent uploads and downloads (each upload uses up to ``max_in_flight``).
    ``max_retries`` (default: the provider key's default) and ``timeouts`` (``connect`` and
    ``read``; botocore's own defaults without them) are the provider's.
    """
    if (access_key is None) != (secret_key is None):
        raise ValueError("access_key and secret_key must be given together")
    options: dict[str, Any] = {"retries": retries(max_retries), "max_pool_connections": max_pool_connections}
    if timeouts is not None:
        options.update(connect_timeout=timeouts.connect, read_timeout=timeouts.read)
    kwargs: dict[str, Any] = {"region_name": region, "config": AioConfig(**options)}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    if access_key is not None:
        kwargs["aws_access_key_id"] = access_key
        kwargs["aws_secret_access_key"] = secret_key
    return kwargs


# -- server-side assembly (the Uploads API's parts, proxy/providers/parts_s3.py) ------------

#: CopyObject copies at most 5 GB in one call (docs/provider-facts.md §7.6); larger: UploadPartCopy.
MAX_COPY_OBJECT = 5 * 1000**3
_DELETE_BATCH = 1000             # keys per DeleteObjects (§7.6)


async def copy_object(client: S3Client, bucket: str, key: str, source_bucket: str, source_key: str, *,
                      content_type: str, metadata: dict[str, str]) -> str:
    """``CopyObject`` with the object's own content type and metadata (``REPLACE``); its ETag."""
    resp = await _call("CopyObject", client.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": source_key},
        MetadataDirective="REPLACE", ContentType=content_type, Metadata=metadata,
        ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
    ))
    return resp["CopyObjectResult"]["ETag"]


async def put_object(client: S3Client, bucket: str, key: str, body: bytes, *, content_type: str,
                     metadata: dict[str, str]) -> str:
    """``PutObject`` of a small body (with its CRC32, as the multipart sink's); its ETag."""
    resp = await _call("PutObject", client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata,
        ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
    ))
    return resp["ETag"]


async def read_range(client: S3Client, bucket: str, key: str, start: int, end: int, into: bytearray,
                     chunk_size: int = 256 << 10) -> None:
    """Append the bytes ``[start, end)`` of an object to ``into``; fewer than asked is an error."""
    resp = await _call("GetObject", client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"))
    before = len(into)
    async with resp["Body"] as body:
        while chunk := await _call("GetObject", body.read(chunk_size)):
            into += chunk
            if len(into) - before > end - start:
                break
    if len(into) - before != end - start:
        raise S3StorageError("S3 GetObject returned another length than the range asked for")


class MultipartAssembly:
    """One multipart upload assembled from copied ranges and uploaded buffers, parts in any
    order; :meth:`complete` lists them ascending. ``abort`` is idempotent and never raises."""

    def __init__(self, client: S3Client, bucket: str, key: str, upload_id: str) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.upload_id = upload_id
        self._parts: dict[int, _Part] = {}

    @classmethod
    async def start(cls, client: S3Client, bucket: str, key: str, *, content_type: str,
                    metadata: dict[str, str]) -> MultipartAssembly:
        resp = await _call("CreateMultipartUpload", client.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata,
            ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
        ))
        return cls(client, bucket, key, resp["UploadId"])

    async def copy_part(self, number: int, source_bucket: str, source_key: str,
                        byte_range: tuple[int, int] | None) -> None:
        """``UploadPartCopy`` of the source's ``[start, end)`` (None: the whole source)."""
        kwargs: dict[str, Any] = {}
        if byte_range is not None:
            kwargs["CopySourceRange"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        resp = await _call("UploadPartCopy", self.client.upload_part_copy(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
            CopySource={"Bucket": source_bucket, "Key": source_key}, **kwargs,
        ))
        result = resp["CopyPartResult"]
        part: _Part = {"PartNumber": number, "ETag": result["ETag"]}
        if "ChecksumCRC32" in result:    # S3 gives it for an upload created with CRC32 (§7.6); moto does not
            part["ChecksumCRC32"] = result["ChecksumCRC32"]
        self._parts[number] = part

    async def upload_part(self, number: int, body: bytes) -> None:
        resp = await _call("UploadPart", self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
            Body=body, ChecksumAlgorithm=_CHECKSUM_ALGORITHM,
        ))
        part: _Part = {"PartNumber": number, "ETag": resp["ETag"]}
        if "ChecksumCRC32" in resp:
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        self._parts[number] = part

    async def complete(self) -> str:
        parts = [self._parts[n] for n in sorted(self._parts)]
        resp = await _call("CompleteMultipartUpload", self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts},
        ))
        return resp["ETag"]

    async def abort(self) -> None:
        try:
            await abort_upload(self.client, self.bucket, self.key, self.upload_id)
        except Exception as exc:  # abort must never raise
            log.warning("S3 multipart abort failed: %s", exc if isinstance(exc, S3StorageError) else type(exc).__name__)


async def delete_many(client: S3Client, bucket: str, keys: list[str]) -> None:
    """Delete these objects (``DeleteObjects``, 1,000 keys a call); missing keys are fine."""
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start:start + _DELETE_BATCH]
        resp = await _call("DeleteObjects", client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}))
        errors = [e for e in resp.get("Errors") or () if e.get("Code") != "NoSuchKey"]
        if errors:
            code = errors[0].get("Code")
            raise S3StorageError(f"S3 DeleteObjects failed: {code} for {len(errors)} key(s)", code=code)
