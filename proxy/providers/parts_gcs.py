"""The parts of an Upload on ``gcs`` and ``vertex``: objects in the upload's bucket, assembled
by GCS itself.

A part streams into ``{prefix}uploads/<upload_id>/<part_id>`` through the provider's own
resumable-upload sink (:class:`~proxy.providers.gcs_storage.GCSResumableSink`: one chunk of
``upload_chunk_size`` held at a time).

``compose`` is GCS's compose, which concatenates up to 32 objects of one bucket into a new
one inside GCS (docs/provider-facts.md §8.8), so the bytes never pass through the gateway.
More parts are composed in rounds: each group of 32 into an intermediate object
(``…/uploads/<upload_id>/compose-<random>-<round>-<n>``), then the intermediates, until at
most 32 are left for the last compose into the destination, which alone gets the file's
content type and metadata. The intermediates are removed whatever happens; a compose is
atomic, so a failure leaves no destination object. Sources are named with their generation,
so a part replaced behind the gateway's back is not silently used; the result's size is
checked against the parts' sum.
"""
from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..upload_parts import PartRef, check_part_size, part_name, parts_by_upload, run_bounded
from . import gcs_storage
from .gcs_storage import MAX_COMPOSE_SOURCES, GCSResumableSink, GCSStorageError
from .sink import SinkResult

if TYPE_CHECKING:
    from .gcs import GCSProvider
    from .object_store import Target

COMPOSES_IN_FLIGHT = 4   # compose (and delete) calls of one assembly at once


class GCSPartSink:
    """One part into its own object (the provider's resumable sink, failures as GatewayErrors)."""

    def __init__(self, store: GCSPartStore, name: str) -> None:
        provider = store.provider
        assert provider.session is not None, "provider not started"
        self.store = store
        self.inner = GCSResumableSink(provider.session, provider.api_root, store.bucket, name, token=provider.token,
                                      chunk_size=provider.chunk_size)

    async def write(self, chunk: bytes | memoryview) -> None:
        try:
            await self.inner.write(chunk)
        except GCSStorageError as exc:   # the inner sink has aborted itself
            raise self.store.error(exc, "part upload") from None

    async def complete(self) -> SinkResult:
        try:
            stored = await self.inner.complete()
        except GCSStorageError as exc:
            raise self.store.error(exc, "part upload") from None
        return stored   # {"bucket", "name", "generation"}

    async def abort(self) -> None:
        await self.inner.abort()

    def partial_location(self) -> dict[str, Any]:
        """The open session, for the crash janitor (as the provider's own sinks)."""
        return self.inner.partial_location()


class GCSPartStore:
    """The :class:`~proxy.upload_parts.PartStore` of a ``gcs``/``vertex`` provider, for the
    bucket an exchange chose (:meth:`GCSProvider.target`)."""

    def __init__(self, provider: GCSProvider, target: Target) -> None:
        self.provider = provider
        self.target = target
        self.bucket = target.bucket

    def error(self, exc: GCSStorageError, what: str) -> GatewayError:
        return self.provider.gcs_error(exc, what, target=self.target)

    def open_part(self, upload_id: str, part_id: str) -> GCSPartSink:
        return GCSPartSink(self, f"{self.provider.prefix}{part_name(upload_id, part_id)}")

    def destination(self, file_id: str, *, tenant: str, filename: str, purpose: str) -> dict[str, Any]:
        name, content_type, metadata = self.provider.object_attributes(tenant, file_id, filename, purpose)
        return {"bucket": self.bucket, "name": name, "content_type": content_type, "metadata": metadata}

    @staticmethod
    def _source(part: PartRef) -> tuple[str, str, str | None]:
        bucket, name, generation = part.location.get("bucket"), part.location.get("name"), part.location.get("generation")
        if not (isinstance(bucket, str) and isinstance(name, str) and bucket and name):
            raise GatewayError(500, f"Upload part {part.part_id[:64]} has no GCS location.", code="upload_part_missing")
        return bucket, name, str(generation) if generation is not None else None

    # -- read --------------------------------------------------------------------------------

    async def read(self, parts: list[PartRef], chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
        storage = self.provider.storage
        assert storage is not None, "provider not started"
        for part in parts:
            bucket, name, _ = self._source(part)
            seen = 0
            try:
                await self.provider._token_ready()
                async with aclosing(gcs_storage.iter_object(storage, bucket, name, chunk_size)) as pieces:
                    async for piece in pieces:
                        seen += len(piece)
                        yield piece
            except GCSStorageError as exc:
                raise self.error(exc, "part download") from None
            check_part_size(part, seen)

    # -- compose -----------------------------------------------------------------------------

    async def compose(self, parts: list[PartRef], dest: dict[str, Any]) -> SinkResult:
        bucket = str(dest.get("bucket") or self.bucket)
        name = str(dest["name"])
        content_type = str(dest.get("content_type") or "application/octet-stream")
        metadata = {str(k): str(v) for k, v in (dest.get("metadata") or {}).items()}
        located = [self._source(p) for p in parts if p.bytes]
        if any(b != bucket for b, _, _ in located):
            raise GatewayError(400, "The upload's parts are in another bucket than the one this request names; "
                               "complete it with the bucket its parts were sent to.", code="upload_bucket_mismatch")
        total = sum(p.bytes for p in parts)
        try:
            if not located:
                stored = await self._empty(bucket, name, content_type, metadata)
                return SinkResult(bytes=0, location=self._location(stored.location))
            resource = await self._compose_all(bucket, name, [(n, g) for _, n, g in located],
                                               content_type, metadata, located[0][1])
            size = resource.get("size")
            if str(size) != str(total):
                await self._remove(bucket, [name])
                raise GCSStorageError(f"GCS compose stored {size} bytes of {total}")
        except GCSStorageError as exc:
            raise self.error(exc, "compose") from None
        return SinkResult(bytes=total, location=self._location(
            {"bucket": bucket, "name": name, "generation": resource.get("generation")}))

    def _location(self, stored: dict[str, Any]) -> dict[str, Any]:
        """What the provider's own sink records for a file (vertex: its region and model too)."""
        return {**stored, **self.provider.recorded_target(self.target)}

    async def _empty(self, bucket: str, name: str, content_type: str, metadata: dict[str, str]) -> SinkResult:
        """A compose needs a source: an empty file is an empty upload."""
        provider = self.provider
        assert provider.session is not None, "provider not started"
        sink = GCSResumableSink(provider.session, provider.api_root, bucket, name, token=provider.token,
                                content_type=content_type, metadata=metadata, chunk_size=provider.chunk_size)
        return await sink.complete()

    async def _compose_all(self, bucket: str, name: str, sources: list[tuple[str, str | None]], content_type: str,
                           metadata: dict[str, str], first_part: str) -> dict[str, Any]:
        """Compose in rounds of at most 32 sources; the intermediates are always removed."""
        assert self.provider.session is not None, "provider not started"
        session, token = self.provider.session, self.provider.token
        stem = f"{first_part.rsplit('/', 1)[0]}/compose-{secrets.token_hex(6)}"
        intermediates: list[str] = []
        try:
            level = 0
            while len(sources) > MAX_COMPOSE_SOURCES:
                groups = [sources[i:i + MAX_COMPOSE_SOURCES] for i in range(0, len(sources), MAX_COMPOSE_SOURCES)]

                def one(n: int, group: list[tuple[str, str | None]], level: int = level) -> Callable[
                        [], Awaitable[tuple[str, str | None]]]:
                    async def run() -> tuple[str, str | None]:
                        if len(group) == 1:
                            return group[0]    # a lone tail needs no compose of its own
                        target = f"{stem}-{level}-{n}"
                        intermediates.append(target)
                        made = await gcs_storage.compose(session, self.provider.api_root, bucket, target, group,
                                                         token=token, content_type="application/octet-stream")
                        generation = made.get("generation")
                        return target, str(generation) if generation is not None else None
                    return run

                sources = await run_bounded(COMPOSES_IN_FLIGHT, [one(n, g) for n, g in enumerate(groups)])
                level += 1
            return await gcs_storage.compose(session, self.provider.api_root, bucket, name, sources, token=token,
                                             content_type=content_type, metadata=metadata)
        finally:
            await self._remove(bucket, intermediates, quiet=True)

    async def _remove(self, bucket: str, names: list[str], *, quiet: bool = False) -> None:
        storage = self.provider.storage
        assert storage is not None, "provider not started"

        try:
            if names:
                await self.provider._token_ready()
                await run_bounded(COMPOSES_IN_FLIGHT, [partial(gcs_storage.delete, storage, bucket, n) for n in names])
        except GCSStorageError as exc:
            if not quiet:
                raise
            self.provider.log.warning("%s: removing compose intermediates failed: %s", self.provider.name,
                                      exc.message)

    # -- delete ------------------------------------------------------------------------------

    async def stored_parts(self) -> dict[str, list[PartRef]]:
        storage = self.provider.storage
        assert storage is not None, "provider not started"
        root = f"{self.provider.prefix}uploads/"
        try:
            await self.provider._token_ready()
            found = await gcs_storage.list_names(storage, self.bucket, root)
        except GCSStorageError as exc:
            raise self.error(exc, "part listing") from None
        return parts_by_upload(found, root, lambda name: {"bucket": self.bucket, "name": name})

    async def delete(self, parts: list[PartRef]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for part in parts:
            bucket, name = part.location.get("bucket"), part.location.get("name")
            if isinstance(bucket, str) and isinstance(name, str) and bucket and name:
                by_bucket.setdefault(bucket, []).append(name)
        try:
            for bucket, names in by_bucket.items():
                await self._remove(bucket, names)
        except GCSStorageError as exc:
            raise self.error(exc, "part delete") from None

