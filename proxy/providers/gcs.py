"""gcs: the Files API over the operator's own Google Cloud Storage bucket. Gateway-managed
files, stored exactly as sent.

An upload streams into ``gs://{bucket}/{prefix}{tenant}/{file_id}/{filename}`` through a GCS
resumable-upload session (:class:`~proxy.providers.gcs_storage.GCSResumableSink`), one chunk
at a time; the object carries the metadata ``file_id``, ``purpose``, ``filename`` and
``tenant``. A ``purpose=batch`` file is kept byte for byte (the ``batch_jsonl`` filter has
checked its lines). This is the byte store of a multi-replica deployment: every replica reads the same bucket.

:class:`GCSProvider` is also the storage half of ``vertex``
(:class:`~proxy.providers.vertex.VertexProvider`), which adds the override headers and the
translation of batch files through the hooks :meth:`GCSProvider.target`,
:meth:`GCSProvider.batch_translator` and :attr:`GCSProvider.sink_class`.

The store's ``location`` is ``{"bucket", "name", "generation"}``.

Credentials: with ``endpoint_url`` (an emulator such as fake-gcs-server) no token is sent;
otherwise a gcloud-aio-auth ``Token`` from ``service_file`` or the default credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's application-default file, the metadata server).
Object operations need neither a project nor a region (the bucket has both).

Upload chunk size: 8 MiB (a multiple of GCS's 256 KiB quantum, docs/provider-facts.md §8.5; the
most the sink holds in
memory per upload); the provider key ``upload_chunk_size`` (e.g. ``16MiB``) changes it. Larger
chunks mean fewer requests, which matters for fake-gcs-server: its memory backend copies the
whole object on every chunk, so its cost grows with the square of the chunk count.
"""
from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import orjson
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import init_api_root

from ..errors import GatewayError
from ..transforms.batch_translate import BatchTranslator
from . import gcs_storage
from .base import Download
from .gcs_storage import UPLOAD_QUANTUM, GCSResumableSink, GCSStorageError
from .object_store import (BucketProvider, Target, TranslatingSink, bucket_not_found, content_type_for, first_piece,
                           not_found)
from .parts_gcs import GCSPartStore
from .sink import SinkResult

if TYPE_CHECKING:
    from .configs import GcsBucketConfig
    from ..exchange import Exchange
    from ..store.base import FileRecord

DEFAULT_CHUNK_SIZE = 8 << 20
_MAX_CHUNK_SIZE = 256 << 20
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_MAX_METADATA_VALUE = 1024
_TOKEN_FAILURE = "could not obtain a GCS access token"  # gcs_storage's message, and ours
_UPLOAD_START = "GCS upload start failed"  # gcs_storage's message when initiating a session fails


def chunk_size_setting(configured: int | None) -> int:
    if configured is None:
        return DEFAULT_CHUNK_SIZE
    if configured <= 0 or configured % UPLOAD_QUANTUM or configured > _MAX_CHUNK_SIZE:
        raise ValueError(f"upload_chunk_size: must be a multiple of 256KiB, at most 256MiB; got {configured}")
    return configured


class GCSSink(TranslatingSink):
    """The GCS sink of one upload (:class:`GCSResumableSink`), stored as sent; a subclass may
    put a translator in front of it. Holds at most one GCS chunk and one client chunk."""

    __slots__ = ("name",)

    provider: "GCSProvider"
    storage_error = GCSStorageError
    service = "Google Cloud Storage"

    def __init__(self, provider: "GCSProvider", ex: "Exchange", inner: GCSResumableSink,
                 translator: BatchTranslator | None, target: Target, name: str, *, max_ids_bytes: int = 0) -> None:
        super().__init__(provider, ex, inner, translator, target, max_ids_bytes=max_ids_bytes)
        self.name = name

    def upload_error(self, exc: Exception) -> GatewayError:
        assert isinstance(exc, GCSStorageError)
        return self.provider.gcs_error(exc, "upload", target=self.target)

    async def finish(self, stored: SinkResult) -> dict[str, Any]:
        return {"bucket": self.target.bucket, "name": self.name, "generation": stored.location.get("generation")}


class GCSProvider(BucketProvider):
    type = "gcs"
    #: The sink class of one upload (vertex's translates batch rows).
    sink_class: ClassVar[builtins.type[GCSSink]] = GCSSink  # builtins': `type` is the attribute above

    config: "GcsBucketConfig"  # gcs's or vertex's model
    #: The OAuth scopes of the access token (vertex's also calls the Vertex AI API).
    scopes: ClassVar[list[str]] = _SCOPES

    def __init__(self, config: "GcsBucketConfig") -> None:
        super().__init__(config)
        self.chunk_size = chunk_size_setting(config.upload_chunk_size)
        self.api_is_dev, self.api_root = init_api_root(config.endpoint_url)
        self.api_root = self.api_root.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.token: Token | None = None
        self.storage: Storage | None = None

    async def start(self) -> None:
        timeouts = self.config.timeouts
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read),
            connector=aiohttp.TCPConnector(limit=100, ssl=not self.api_is_dev),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # gcloud-aio declares ``session: Session``, whose type depends on a build constant: mypy
        # reads the requests-based build's (requests.Session); the aiohttp build, the one
        # installed, takes an aiohttp.ClientSession.
        if not self.api_is_dev:
            self.token = Token(service_file=self.config.service_file, session=self.session,  # type: ignore[arg-type]
                               scopes=self.scopes)
        self.storage = Storage(api_root=self.api_root, api_is_dev=self.api_is_dev, token=self.token,
                               session=self.session)  # type: ignore[arg-type]
        if self.api_is_dev:
            self.log.info("%s provider %s: GCS at %s without credentials (emulator)", self.type, self.name,
                          self.api_root)

    async def close(self) -> None:
        # The token and Storage share this session; closing it closes theirs.
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- uploads ---------------------------------------------------------------------------

    def object_name(self, tenant: str, file_id: str, filename: str) -> str:
        return self.object_path(tenant, file_id, filename)

    def object_attributes(self, tenant: str, file_id: str, filename: str,
                          purpose: str | None) -> tuple[str, str, dict[str, str]]:
        """The name, content type and metadata of the object a file is stored as."""
        metadata = {"file_id": file_id, "purpose": purpose or "", "filename": filename[:_MAX_METADATA_VALUE],
                    "tenant": tenant[:_MAX_METADATA_VALUE]}
        return self.object_name(tenant, file_id, filename), content_type_for(purpose), metadata

    def recorded_target(self, target: Target) -> dict[str, Any]:
        """What a file's location records of its target besides the object (vertex: more)."""
        return {}

    def part_store(self, ex: "Exchange | None") -> GCSPartStore:
        """Parts as objects in the bucket the request chose (proxy/providers/parts_gcs.py), so
        every replica sees them and ``complete`` assembles them by GCS ``compose``. The sweeper
        (``ex`` None) gets the configured bucket's store; its ``delete`` goes by each part's
        recorded bucket, so parts are removed where they were written."""
        return GCSPartStore(self, self.target(ex) if ex is not None else self.configured_target())

    async def open_sink(self, ex: "Exchange", file_id: str) -> GCSSink:
        assert self.session is not None, "provider not started"
        target = self.target(ex)
        translator = self.batch_translator(ex, target)
        tenant = ex.tenant.name if ex.tenant is not None else "default"
        name, content_type, metadata = self.object_attributes(tenant, file_id, ex.filename or "upload", ex.purpose)
        inner = GCSResumableSink(
            self.session, self.api_root, target.bucket, name, token=self.token,
            content_type=content_type, metadata=metadata, chunk_size=self.chunk_size,
        )
        return self.sink_class(self, ex, inner, translator, target, name)

    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        uri = location.get("session_uri")
        if uri and self.session is not None:
            await gcs_storage.cancel_session(self.session, uri)

    # -- retrieve / delete / content -----------------------------------------------------

    def _located(self, rec: "FileRecord | None", file_id: str) -> tuple[str, str]:
        if rec is None or not rec.location.get("bucket") or not rec.location.get("name"):
            raise not_found(file_id)
        return rec.location["bucket"], rec.location["name"]

    async def _head(self, bucket: str, name: str, file_id: str) -> dict[str, Any]:
        """The object's resource; 404 when it was removed from the bucket behind the gateway's back."""
        assert self.storage is not None
        try:
            await self._token_ready()
            resource = await gcs_storage.head(self.storage, bucket, name)
        except GCSStorageError as exc:
            raise self.gcs_error(exc, "metadata request", file_id=file_id) from None
        if resource is None:
            raise not_found(file_id)
        return resource

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        bucket, name = self._located(rec, file_id)
        assert rec is not None
        await self._head(bucket, name, file_id)
        return orjson.dumps(rec.to_openai())

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        # ex is None when the expiry sweeper calls.
        bucket, name = self._located(rec, file_id)
        assert self.storage is not None
        try:
            await self._token_ready()
            await gcs_storage.delete(self.storage, bucket, name)  # already gone: fine
        except GCSStorageError as exc:
            raise self.gcs_error(exc, "delete", file_id=file_id) from None
        return orjson.dumps({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        bucket, name = self._located(rec, file_id)
        resource = await self._head(bucket, name, file_id)
        assert self.storage is not None
        pieces = gcs_storage.iter_object(self.storage, bucket, name)
        first = await first_piece(pieces, GCSStorageError, lambda exc: self.gcs_error(exc, "download", file_id=file_id))

        async def chunks() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for piece in pieces:
                yield piece

        try:
            length: int | None = int(resource["size"])
        except (KeyError, TypeError, ValueError):
            length = None
        return Download(content_type="application/octet-stream", length=length, chunks=chunks(),
                        release=pieces.aclose)

    # -- errors ------------------------------------------------------------------------------

    async def _token_ready(self) -> None:
        """Get (or reuse) the access token before a gcloud-aio-storage call, so that a
        credentials problem is reported as one, whatever the library would raise."""
        if self.token is None:
            return
        try:
            await self.token.get()
        except Exception as exc:
            raise GCSStorageError(_TOKEN_FAILURE) from exc

    def gcs_error(self, exc: GCSStorageError, what: str, *, file_id: str | None = None,
                  target: Target | None = None) -> GatewayError:
        """A GCS failure as the client should see it. GCSStorageError messages name only the
        operation, the status and GCS's reason code: never a token or a session URI."""
        status = exc.status
        self.log.warning("%s: %s", self.name, exc.message)
        if status == 404 and file_id is not None:
            return not_found(file_id)
        if status == 404 and exc.message.startswith(_UPLOAD_START):  # no such bucket
            return bucket_not_found(self.name, "GCS", self.bucket_header, target)
        if status in (401, 403) or exc.message.startswith(_TOKEN_FAILURE):
            return GatewayError(502, f"Provider '{self.name}': Google Cloud Storage refused the gateway's "
                                "credentials.", code="upstream_auth_failed")
        if status == 429:
            return GatewayError(429, f"Provider '{self.name}': Google Cloud Storage is rate limiting the gateway; "
                                "retry later.", code="rate_limit_exceeded", retryable=True)
        if status is None and exc.retryable:  # no answer at all
            if isinstance(exc.__cause__, TimeoutError):
                return GatewayError(504, f"Provider '{self.name}': Google Cloud Storage did not answer in time "
                                    f"({what}).", code="upstream_timeout", retryable=True)
            return GatewayError(502, f"Could not reach provider '{self.name}' (Google Cloud Storage {what}).",
                                code="upstream_unreachable", retryable=True)
        if status == 404:  # the upload session vanished (expired or cancelled)
            return GatewayError(502, f"Provider '{self.name}': {exc.message}.", code="upstream_error", retryable=True)
        if status is not None and status >= 500:
            return GatewayError(502, f"Provider '{self.name}': {exc.message}.", code="upstream_error", retryable=True)
        return GatewayError(502, f"Provider '{self.name}': {exc.message}.", code="upstream_error")
