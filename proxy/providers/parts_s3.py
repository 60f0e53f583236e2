"""The parts of an Upload on ``s3`` and ``bedrock``: objects in the upload's bucket, assembled
by S3 itself.

A part streams into ``{prefix}uploads/<upload_id>/<part_id>`` through the provider's own
multipart machinery (:class:`~proxy.providers.s3_storage.S3MultipartSink`: parts of
``upload_chunk_size``, two in flight; a part smaller than that is one ``PutObject``).

``compose`` builds the file with one multipart upload whose parts S3 copies from the part
objects (``UploadPartCopy``), so the bytes never pass through the gateway. S3 wants every
part but the last to be at least 5 MiB and each at most 5 GiB, and at most 10,000 of them
(docs/provider-facts.md §7.4, §7.6), while an Upload's parts may be of any size; :func:`plan`
maps the client's parts onto S3 parts:

* a stretch of at least 5 MiB inside one client part is copied (split in equal ranges of at
  most 5 GiB; a range copy needs a source over 5 MB, which such a part is);
* shorter stretches (small parts, and the head of a large part needed to top a run of small
  ones up to 5 MiB) are read with ranged ``GetObject`` into one buffer of at most
  ``upload_chunk_size`` and sent as an ordinary ``UploadPart``, one such buffer at a time.

So the gateway holds at most one buffer (plus its copy as a request body) whatever the file's
size, and every S3 part but the last is at least 5 MiB (so 8 GB need at most 1,526 of them).
A file that is one whole part of at most 5 GB is a ``CopyObject``, one short buffer a
``PutObject``. Any failure, or a cancellation, aborts the multipart upload, so nothing is left
at the destination; the finished object's size is checked against the parts' sum.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..upload_parts import PartRef, check_part_size, part_name, parts_by_upload, run_bounded
from . import s3_storage
from .s3_storage import (MAX_COPY_OBJECT, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MultipartAssembly, S3MultipartSink,
                         S3StorageError)
from .sink import SinkResult

if TYPE_CHECKING:
    from .object_store import Target
    from .s3 import S3Provider, _Lease

PART_UPLOADS_IN_FLIGHT = 2     # per part being received, as the provider's own uploads
COPIES_IN_FLIGHT = 4           # UploadPartCopy calls of one compose at once (server-side: no memory)


# -- the plan: which S3 part is made of which bytes -------------------------------------------


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes ``[start, end)`` of the client's part number ``index`` (in compose order)."""

    index: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class OutPart:
    """One S3 part: a copy (one piece, copied by S3) or a buffer (pieces read and uploaded)."""

    pieces: tuple[Piece, ...]
    copy: bool

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)


def plan(sizes: list[int], *, buffer: int, min_part: int = MIN_PART_SIZE,
         max_part: int = MAX_PART_SIZE) -> list[OutPart]:
    """The S3 parts that assemble the client's parts of these ``sizes``, in order.

    Every part but the last is at least ``min_part``; copies are at most ``max_part``; a
    buffered part is at most ``buffer`` (``min_part`` ≤ ``buffer`` ≤ ``max_part``, and
    ``2 * min_part`` ≤ ``max_part``, so that equal ranges of a long stretch stay ≥ ``min_part``). Greedy: a
    rest of a client part that, once a pending buffer is topped up to ``min_part``, still holds
    ``min_part`` is copied; anything shorter goes into the buffer.
    """
    if not min_part <= buffer <= max_part or 2 * min_part > max_part:
        raise ValueError("need min_part <= buffer <= max_part and 2 * min_part <= max_part")
    out: list[OutPart] = []
    pending: list[Piece] = []
    held = 0

    def flush() -> None:
        nonlocal pending, held
        if pending:
            out.append(OutPart(tuple(pending), copy=False))
        pending, held = [], 0

    for index, size in enumerate(sizes):
        pos = 0
        while pos < size:
            rest = size - pos
            need = max(0, min_part - held) if pending else 0
            if rest - need >= min_part:
                if need:
                    pending.append(Piece(index, pos, pos + need))
                    pos += need
                flush()
                rest = size - pos
                count = -(-rest // max_part)
                for k in range(count):   # equal ranges: each ≥ min_part, ≤ max_part
                    out.append(OutPart((Piece(index, pos + rest * k // count, pos + rest * (k + 1) // count),),
                                       copy=True))
                pos = size
            else:
                take = min(rest, buffer - held)
                pending.append(Piece(index, pos, pos + take))
                held += take
                pos += take
                if held == buffer:
                    flush()
    flush()
    return out


# -- one part being received -------------------------------------------------------------------


class S3PartSink:
    """One part into its own object; the client lease is taken at the first byte (``open_part``
    is not a coroutine) and returned at the end."""

    def __init__(self, store: S3PartStore, key: str) -> None:
        self.store = store
        self.key = key
        self.lease: _Lease = store.provider.lease(store.region)
        self.inner: S3MultipartSink | None = None

    async def _sink(self) -> S3MultipartSink:
        if self.inner is None:
            client = await self.lease.acquire()
            self.inner = S3MultipartSink(client, self.store.bucket, self.key,
                                         part_size=self.store.provider.min_part_size,
                                         max_in_flight=PART_UPLOADS_IN_FLIGHT)
        return self.inner

    async def write(self, chunk: bytes | memoryview) -> None:
        try:
            await (await self._sink()).write(chunk)
        except S3StorageError as exc:   # the caller then aborts the sink
            raise self.store.error(exc, "part upload") from None

    async def complete(self) -> SinkResult:
        try:
            stored = await (await self._sink()).complete()
        except S3StorageError as exc:
            raise self.store.error(exc, "part upload") from None
        await self.lease.release()
        return SinkResult(bytes=stored.bytes, location={
            "bucket": self.store.bucket, "key": self.key, "region": self.store.region,
            "etag": stored.location.get("etag")})

    async def abort(self) -> None:
        try:
            if self.inner is not None:
                await self.inner.abort()   # AbortMultipartUpload; never raises
        finally:
            await self.lease.release()

    def partial_location(self) -> dict[str, Any]:
        """The unfinished multipart upload, for the crash janitor (as the provider's sinks)."""
        location = self.inner.partial_location() if self.inner is not None else {}
        if location:
            location["region"] = self.store.region
        return location


# -- the store ---------------------------------------------------------------------------------


class S3PartStore:
    """The :class:`~proxy.upload_parts.PartStore` of an ``s3``/``bedrock`` provider, for the
    bucket and region an exchange chose (:meth:`S3Provider.target`)."""

    def __init__(self, provider: S3Provider, target: Target) -> None:
        self.provider = provider
        self.target = target
        self.bucket = target.bucket
        self.region = target.region or provider.region
        # A buffered S3 part: the provider's part size (upload_chunk_size, 5 MiB by default).
        self.buffer = provider.min_part_size
        self.max_part = MAX_PART_SIZE   # the largest copied range (S3's part maximum)

    def error(self, exc: S3StorageError, what: str) -> GatewayError:
        return self.provider.s3_error(exc, what, target=self.target)

    def open_part(self, upload_id: str, part_id: str) -> S3PartSink:
        return S3PartSink(self, f"{self.provider.prefix}{part_name(upload_id, part_id)}")

    def destination(self, file_id: str, *, tenant: str, filename: str, purpose: str) -> dict[str, Any]:
        key, content_type, metadata = self.provider.object_attributes(tenant, file_id, filename, purpose)
        return {"bucket": self.bucket, "key": key, "content_type": content_type, "metadata": metadata}

    @staticmethod
    def _source(part: PartRef) -> tuple[str, str]:
        bucket, key = part.location.get("bucket"), part.location.get("key")
        if not (isinstance(bucket, str) and isinstance(key, str) and bucket and key):
            raise GatewayError(500, f"Upload part {part.part_id[:64]} has no S3 location.", code="upload_part_missing")
        return bucket, key

    # -- read --------------------------------------------------------------------------------

    async def read(self, parts: list[PartRef], chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
        for part in parts:
            bucket, key = self._source(part)
            seen = 0
            async with self.provider.lease(part.location.get("region") or self.region) as client:
                try:
                    async with aclosing(s3_storage.iter_object(client, bucket, key, chunk_size)) as pieces:
                        async for piece in pieces:
                            seen += len(piece)
                            yield piece
                except S3StorageError as exc:
                    raise self.error(exc, "part download") from None
            check_part_size(part, seen)

    # -- compose -----------------------------------------------------------------------------

    async def compose(self, parts: list[PartRef], dest: dict[str, Any]) -> SinkResult:
        bucket = str(dest.get("bucket") or self.bucket)
        key = str(dest["key"])
        content_type = str(dest.get("content_type") or "application/octet-stream")
        metadata = dict(dest.get("metadata") or {})
        sources = [self._source(p) for p in parts]
        sizes = [p.bytes for p in parts]
        total = sum(sizes)
        layout = plan(sizes, buffer=self.buffer, max_part=self.max_part)
        if len(layout) > MAX_PARTS:
            raise GatewayError(413, f"The upload is too large for provider '{self.provider.name}': it needs more "
                               f"than {MAX_PARTS} S3 parts.", code="file_too_large")
        async with self.provider.lease(self.region) as client:
            try:
                whole = layout[0].pieces[0] if len(layout) == 1 and layout[0].copy else None
                if whole is not None and whole.size <= MAX_COPY_OBJECT:
                    src_bucket, src_key = sources[whole.index]
                    etag = await s3_storage.copy_object(client, bucket, key, src_bucket, src_key,
                                                        content_type=content_type, metadata=metadata)
                elif len(layout) <= 1 and not (layout and layout[0].copy):
                    body = await self._gather(client, sources, layout[0].pieces) if layout else bytearray()
                    etag = await s3_storage.put_object(client, bucket, key, bytes(body),
                                                       content_type=content_type, metadata=metadata)
                else:
                    etag = await self._multipart(client, bucket, key, content_type, metadata, sources, sizes, layout)
                await self._check_size(client, bucket, key, total)
            except S3StorageError as exc:
                raise self.error(exc, "compose") from None
        return SinkResult(bytes=total, location={"bucket": bucket, "key": key, "region": self.region, "etag": etag})

    async def _multipart(self, client: Any, bucket: str, key: str, content_type: str, metadata: dict[str, str],
                         sources: list[tuple[str, str]], sizes: list[int], layout: list[OutPart]) -> str:
        assembly = await MultipartAssembly.start(client, bucket, key, content_type=content_type, metadata=metadata)
        one_buffer = asyncio.Lock()   # at most one buffered part in memory at a time

        async def make(number: int, out: OutPart) -> None:
            if out.copy:
                piece = out.pieces[0]
                src_bucket, src_key = sources[piece.index]
                whole = piece.start == 0 and piece.end == sizes[piece.index]
                await assembly.copy_part(number, src_bucket, src_key, None if whole else (piece.start, piece.end))
            else:
                async with one_buffer:
                    body = await self._gather(client, sources, out.pieces)
                    await assembly.upload_part(number, bytes(body))

        try:
            await run_bounded(COPIES_IN_FLIGHT, [partial(make, n, out) for n, out in enumerate(layout, start=1)])
            return await assembly.complete()
        except BaseException:
            await assembly.abort()
            raise

    @staticmethod
    async def _gather(client: Any, sources: list[tuple[str, str]], pieces: Iterable[Piece]) -> bytearray:
        body = bytearray()
        for piece in pieces:
            src_bucket, src_key = sources[piece.index]
            await s3_storage.read_range(client, src_bucket, src_key, piece.start, piece.end, body)
        return body

    async def _check_size(self, client: Any, bucket: str, key: str, total: int) -> None:
        """The object holds the parts' sum (a part object changed behind the gateway would not);
        else it is removed again and the compose fails."""
        meta = await s3_storage.head(client, bucket, key)
        size = meta.get("ContentLength") if meta is not None else None
        if size != total:
            await s3_storage.delete(client, bucket, key)
            raise S3StorageError(f"S3 compose stored {size} bytes of {total}")

    # -- delete ------------------------------------------------------------------------------

    async def stored_parts(self) -> dict[str, list[PartRef]]:
        root = f"{self.provider.prefix}uploads/"
        async with self.provider.lease(self.region) as client:
            try:
                found = await s3_storage.list_keys(client, self.bucket, root)
            except S3StorageError as exc:
                raise self.error(exc, "part listing") from None
        return parts_by_upload(found, root, lambda key: {"bucket": self.bucket, "key": key, "region": self.region})

    async def delete(self, parts: list[PartRef]) -> None:
        by_place: dict[tuple[str, str], list[str]] = {}
        for part in parts:
            bucket, key = part.location.get("bucket"), part.location.get("key")
            if isinstance(bucket, str) and isinstance(key, str) and bucket and key:
                region = str(part.location.get("region") or self.region)
                by_place.setdefault((region, bucket), []).append(key)
        for (region, bucket), keys in by_place.items():
            async with self.provider.lease(region) as client:
                try:
                    await s3_storage.delete_many(client, bucket, keys)
                except S3StorageError as exc:
                    raise self.error(exc, "part delete") from None

