"""vertex: Google Vertex AI. Gateway-managed files that live in Google Cloud Storage.

An upload streams into ``gs://{bucket}/{prefix}{tenant}/{file_id}/{filename}`` through a GCS
resumable-upload session (:class:`~proxy.providers.gcs_storage.GCSResumableSink`), one chunk
at a time; the object carries the metadata ``file_id``, ``purpose``, ``filename`` and
``tenant``. A ``purpose=batch`` file is translated line by line on its way into the bucket,
from OpenAI batch requests into Vertex AI Gemini batch-prediction rows
(:func:`~proxy.transforms.batch_vertex.vertex_batch_translator`), so the stored object is
ready to be the ``gcsSource`` of a batch prediction job. Its ``bytes`` is the translated size.

Per request, three headers override the configured defaults of an upload (retrieve, delete
and content always follow the record):

* ``x-tfy-vertex-storage-bucket-name`` — the bucket (checked against GCS's naming rules);
* ``x-tfy-vertex-region`` — the region recorded with the file;
* ``x-tfy-provider-model`` — the model recorded with the file (for the batch job).

The store's ``location`` is ``{"bucket", "name", "generation", "region", "model"}`` plus, for
batch files, ``"ids"``: each ``custom_id`` that a Vertex label cannot carry unchanged, keyed
by the label value written instead (``l<line>``), so results can be matched back.

Credentials: with ``endpoint_url`` (an emulator such as fake-gcs-server) no token is sent;
otherwise a gcloud-aio-auth ``Token`` from ``service_file`` or the default credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's application-default file, the metadata server).

Upload chunk size: 8 MiB (a multiple of GCS's 256 KiB quantum; the most the sink holds in
memory per upload); the provider key ``upload_chunk_size`` (e.g. ``16MiB``) changes it. Larger
chunks mean fewer requests, which matters for fake-gcs-server: its memory backend copies the
whole object on every chunk, so its cost grows with the square of the chunk count.
"""
from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import init_api_root

from ..errors import GatewayError
from ..transforms.batch_vertex import vertex_batch_translator
from ..transforms.batch_translate import BatchTranslator
from . import gcs_storage
from .base import Download, Provider
from .gcs_storage import UPLOAD_QUANTUM, GCSResumableSink, GCSStorageError
from .object_store import (MAX_TENANT_SEGMENT, HeaderRule, Target, TranslatingSink, bucket_not_found,
                           bucket_rule, first_piece, looks_like_ipv4, not_found, read_target, sanitise_segment,
                           unless_matches)
from .sink import SinkResult

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..exchange import Exchange
    from ..store.base import FileRecord

log = logging.getLogger("sluicegate.vertex")

BUCKET_HEADER = "x-tfy-vertex-storage-bucket-name"
REGION_HEADER = "x-tfy-vertex-region"
MODEL_HEADER = "x-tfy-provider-model"

DEFAULT_CHUNK_SIZE = 8 << 20
_MAX_CHUNK_SIZE = 256 << 20
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
# Vertex's documented per-job cap (docs/provider-facts.md §8.1). The batch_jsonl filter applies the
# operator's own, usually lower, limit before a line reaches the translator.
_MAX_BATCH_LINES = 200_000
# The id map lives in the store row; ids that labels carry unchanged cost nothing.
_MAX_IDS_BYTES = 4 << 20
_MAX_METADATA_VALUE = 1024
_TOKEN_FAILURE = "could not obtain a GCS access token"  # gcs_storage's message, and ours
_UPLOAD_START = "GCS upload start failed"  # gcs_storage's message when initiating a session fails

_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
_REGION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/-]{0,255}")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid GCS bucket name, or None if it is (GCS's naming rules)."""
    if not 3 <= len(name) <= 222:
        return "must be 3 to 63 characters long (up to 222 with dots)"
    if not _BUCKET_CHARS.fullmatch(name):
        return ("may contain only lowercase letters, digits, '-', '_' and '.', "
                "and must start and end with a letter or digit")
    if "." not in name and len(name) > 63:
        return "must be 3 to 63 characters long (up to 222 with dots)"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "each dot-separated part must be 1 to 63 characters long"
    if looks_like_ipv4(name):
        return "must not be an IP address"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return "must not start with 'goog' or contain 'google'"
    return None


_TARGET_HEADERS = (
    bucket_rule(BUCKET_HEADER, "GCS", bucket_name_problem),
    HeaderRule(REGION_HEADER, "invalid_region", unless_matches(_REGION, "is not a region name such as us-central1.")),
    HeaderRule(MODEL_HEADER, "invalid_model", unless_matches(
        _MODEL, "is not a model name such as gemini-2.5-flash or publishers/google/models/gemini-2.5-flash.")),
)


def _chunk_size(configured: int | None) -> int:
    if configured is None:
        return DEFAULT_CHUNK_SIZE
    if configured <= 0 or configured % UPLOAD_QUANTUM or configured > _MAX_CHUNK_SIZE:
        raise ValueError(f"upload_chunk_size: must be a multiple of 256KiB, at most 256MiB; got {configured}")
    return configured


class VertexSink(TranslatingSink):
    """The GCS sink of one upload (:class:`GCSResumableSink`); for batch files, a translator in
    front of it. Holds at most one GCS chunk, one client chunk and one partial line."""

    __slots__ = ("name",)

    provider: "VertexProvider"
    storage_error = GCSStorageError
    service = "Vertex AI"
    translated_rows = "Gemini rows"
    id_carrier = "Vertex label"
    carried_ids = "63 lowercase letters, digits, '_' or '-'"

    def __init__(self, provider: "VertexProvider", ex: "Exchange", inner: GCSResumableSink,
                 translator: BatchTranslator | None, target: Target, name: str) -> None:
        super().__init__(provider, ex, inner, translator, target, max_ids_bytes=_MAX_IDS_BYTES)
        self.name = name

    def upload_error(self, exc: Exception) -> GatewayError:
        assert isinstance(exc, GCSStorageError)
        return self.provider.gcs_error(exc, "upload", target=self.target)

    async def finish(self, stored: SinkResult, new_purpose: str | None) -> dict[str, Any]:
        if new_purpose is not None:
            # The purpose came after the file part (curl's order): the session may have
            # started with an empty one. The store is authoritative; this is for humans.
            await self.provider.patch_purpose(self.target.bucket, self.name, new_purpose)
        return {
            "bucket": self.target.bucket,
            "name": self.name,
            "generation": stored.location.get("generation"),
            "region": self.target.region,
            "model": self.target.model,
        }


class VertexProvider(Provider):
    type = "vertex"

    def __init__(self, config: "ProviderConfig") -> None:
        super().__init__(config)
        if not config.bucket or not config.project_id:
            raise ValueError(f"provider {config.name}: vertex needs bucket and project_id")
        self.bucket = config.bucket
        self.project_id = config.project_id
        self.region = config.region or "us-central1"
        self.prefix = config.prefix or ""
        self.model = config.model
        self.chunk_size = _chunk_size(config.upload_chunk_size)
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
        if not self.api_is_dev:
            self.token = Token(service_file=self.config.service_file, session=self.session, scopes=_SCOPES)
        self.storage = Storage(api_root=self.api_root, api_is_dev=self.api_is_dev, token=self.token,
                               session=self.session)
        if self.api_is_dev:
            log.info("vertex provider %s: GCS at %s without credentials (emulator)", self.name, self.api_root)

    async def close(self) -> None:
        # The token and Storage share this session; closing it closes theirs.
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- uploads ---------------------------------------------------------------------------

    def _target(self, ex: "Exchange") -> Target:
        return read_target(ex.request.headers, _TARGET_HEADERS, self.bucket, self.region, self.model)

    def check_upload(self, ex: "Exchange") -> None:
        self._target(ex)  # refuse bad override headers before a byte is stored
        sink = ex.extra.get("vertex_sink")
        if isinstance(sink, VertexSink):
            sink.check_purpose()

    def object_name(self, tenant: str, file_id: str, filename: str) -> str:
        tenant_segment = sanitise_segment(tenant, "tenant", MAX_TENANT_SEGMENT)
        return f"{self.prefix}{tenant_segment}/{file_id}/{sanitise_segment(filename, 'upload')}"

    async def open_sink(self, ex: "Exchange", file_id: str) -> VertexSink:
        assert self.session is not None, "provider not started"
        target = self._target(ex)
        tenant = ex.tenant.name if ex.tenant is not None else "default"
        filename = ex.filename or "upload"
        name = self.object_name(tenant, file_id, filename)
        batch = ex.purpose == "batch"
        inner = GCSResumableSink(
            self.session, self.api_root, target.bucket, name, token=self.token,
            content_type="application/jsonl" if batch else "application/octet-stream",
            metadata={"file_id": file_id, "purpose": ex.purpose or "", "filename": filename[:_MAX_METADATA_VALUE],
                      "tenant": tenant[:_MAX_METADATA_VALUE]},
            chunk_size=self.chunk_size,
        )
        translator = vertex_batch_translator(max_lines=_MAX_BATCH_LINES) if batch else None
        sink = VertexSink(self, ex, inner, translator, target, name)
        ex.extra["vertex_sink"] = sink
        return sink

    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        uri = location.get("session_uri")
        if uri and self.session is not None:
            await gcs_storage.cancel_session(self.session, uri)

    async def patch_purpose(self, bucket: str, name: str, purpose: str) -> None:
        assert self.storage is not None
        try:
            await self._token_ready()
            await self.storage.patch_metadata(bucket, name, {"metadata": {"purpose": purpose}})
        except Exception as exc:  # best effort: the store holds the purpose
            log.warning("vertex %s: could not record the purpose in the object's metadata: %s",
                        self.name, getattr(exc, "message", type(exc).__name__))

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
            length: int | None = int(resource.get("size"))
        except (TypeError, ValueError):
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
        log.warning("vertex %s: %s", self.name, exc.message)
        if status == 404 and file_id is not None:
            return not_found(file_id)
        if status == 404 and exc.message.startswith(_UPLOAD_START):  # no such bucket
            return bucket_not_found(self.name, "GCS", BUCKET_HEADER, target)
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
