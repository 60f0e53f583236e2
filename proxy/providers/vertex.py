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

import ipaddress
import logging
import re
from collections.abc import AsyncIterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import init_api_root

from ..errors import GatewayError
from ..transforms.batch_vertex import vertex_batch_translator
from ..transforms.batch_translate import BatchTranslator
from ..transforms.jsonl import BatchLineError
from . import gcs_storage
from .base import Download, Provider
from .gcs_storage import UPLOAD_QUANTUM, GCSResumableSink, GCSStorageError
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
# Vertex's documented per-job cap (provider-apis.md §8.1). The batch_jsonl filter applies the
# operator's own, usually lower, limit before a line reaches the translator.
_MAX_BATCH_LINES = 200_000
# The id map lives in the store row; ids that labels carry unchanged cost nothing.
_MAX_IDS_BYTES = 4 << 20
_MAX_FILENAME_SEGMENT = 200
_MAX_METADATA_VALUE = 1024
_TOKEN_FAILURE = "could not obtain a GCS access token"  # gcs_storage's message, and ours
_UPLOAD_START = "GCS upload start failed"  # gcs_storage's message when initiating a session fails

_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
_REGION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/-]{0,255}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "must not be an IP address"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return "must not start with 'goog' or contain 'google'"
    return None


def _segment(value: str, fallback: str, limit: int = _MAX_FILENAME_SEGMENT) -> str:
    """``value`` as one safe object-name segment: ``[A-Za-z0-9._-]``, at most ``limit`` long,
    keeping a short extension when it has to be cut."""
    clean = _UNSAFE.sub("_", value)
    if len(clean) > limit:
        root, dot, ext = clean.rpartition(".")
        clean = f"{root[:limit - len(ext) - 1]}.{ext}" if dot and 0 < len(ext) <= 16 else clean[:limit]
    return fallback if clean.strip(".") == "" else clean


def _chunk_size(configured: int | None) -> int:
    if configured is None:
        return DEFAULT_CHUNK_SIZE
    if configured <= 0 or configured % UPLOAD_QUANTUM or configured > _MAX_CHUNK_SIZE:
        raise ValueError(f"upload_chunk_size: must be a multiple of 256KiB, at most 256MiB; got {configured}")
    return configured


def _not_found(file_id: str) -> GatewayError:
    return GatewayError(404, f"No such File object: {file_id[:128]}", param="file_id", code="file_not_found")


class _Target:
    """Where an upload goes: the bucket, and what is recorded with it."""

    __slots__ = ("bucket", "bucket_from_header", "region", "model")

    def __init__(self, bucket: str, bucket_from_header: bool, region: str | None, model: str | None) -> None:
        self.bucket = bucket
        self.bucket_from_header = bucket_from_header
        self.region = region
        self.model = model


class VertexSink:
    """The GCS sink of one upload; for batch files, a translator in front of it.

    Holds at most one GCS chunk, one client chunk and (for batch files) one partial line.
    Every failure leaves the exchange as an OpenAI-shaped :class:`GatewayError`.
    """

    __slots__ = ("provider", "ex", "inner", "translator", "target", "name", "purpose_at_open",
                 "_ids_seen", "_ids_bytes")

    def __init__(self, provider: "VertexProvider", ex: "Exchange", inner: GCSResumableSink,
                 translator: BatchTranslator | None, target: _Target, name: str) -> None:
        self.provider = provider
        self.ex = ex
        self.inner = inner
        self.translator = translator
        self.target = target
        self.name = name
        self.purpose_at_open = ex.purpose
        self._ids_seen = 0
        self._ids_bytes = 0

    async def write(self, chunk: bytes | memoryview) -> None:
        if self.translator is None:
            await self._store(chunk)
            return
        try:
            rows = self.translator.feed(chunk)
        except BatchLineError as err:
            raise _batch_error(err) from None
        self._check_ids()
        if rows:
            await self._store(rows)

    async def complete(self) -> SinkResult:
        if self.translator is not None:
            try:
                rows = self.translator.close()
            except BatchLineError as err:
                raise _batch_error(err) from None
            self._check_ids()
            if rows:
                await self._store(rows)
        try:
            stored = await self.inner.complete()
        except GCSStorageError as exc:
            raise self.provider.gcs_error(exc, "upload", target=self.target) from None
        location: dict[str, Any] = {
            "bucket": self.target.bucket,
            "name": self.name,
            "generation": stored.location.get("generation"),
            "region": self.target.region,
            "model": self.target.model,
        }
        if self.translator is not None and self.translator.ids:
            location["ids"] = dict(self.translator.ids)
        purpose = self.ex.purpose or ""
        if purpose != (self.purpose_at_open or ""):
            # The purpose came after the file part (curl's order): the session may have
            # started with an empty one. The store is authoritative; this is for humans.
            await self.provider.patch_purpose(self.target.bucket, self.name, purpose)
        return SinkResult(bytes=stored.bytes, location=location)

    async def abort(self) -> None:
        await self.inner.abort()

    async def _store(self, data: bytes | memoryview) -> None:
        try:
            await self.inner.write(data)
        except GCSStorageError as exc:  # the inner sink has aborted itself
            raise self.provider.gcs_error(exc, "upload", target=self.target) from None

    def _check_ids(self) -> None:
        """Bound the id map: it goes into the store row."""
        ids = self.translator.ids  # type: ignore[union-attr]
        new = len(ids) - self._ids_seen
        if not new:
            return
        for label, custom_id in islice(reversed(ids.items()), new):
            self._ids_bytes += len(label) + len(custom_id.encode()) + 8
        self._ids_seen = len(ids)
        if self._ids_bytes > _MAX_IDS_BYTES:
            newest = next(reversed(ids))  # "l<line>"
            line = newest[1:] if newest[1:].isdigit() else "?"
            raise GatewayError(
                400, f"Invalid batch file for Vertex AI: line {line}: too many \"custom_id\" values that a "
                "Vertex label cannot carry unchanged (more than 4 MiB of them); use ids of at most 63 "
                "lowercase letters, digits, '_' or '-'.", param="file", code="invalid_batch_file")


def _batch_error(err: BatchLineError) -> GatewayError:
    message = err.message.rstrip(".")
    return GatewayError(400, f"Invalid batch file for Vertex AI: line {err.line}: {message}.",
                        param="file", code="invalid_batch_file")


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

    def _target(self, ex: "Exchange") -> _Target:
        headers = ex.request.headers
        bucket = headers.get(BUCKET_HEADER)
        if bucket is not None:
            bucket = bucket.strip()
            problem = bucket_name_problem(bucket)
            if problem:
                raise GatewayError(400, f"{BUCKET_HEADER}: '{bucket[:64]}' is not a valid GCS bucket name: {problem}.",
                                   param=BUCKET_HEADER, code="invalid_bucket_name")
        region = headers.get(REGION_HEADER)
        if region is not None:
            region = region.strip()
            if not _REGION.fullmatch(region):
                raise GatewayError(400, f"{REGION_HEADER}: '{region[:64]}' is not a region name such as us-central1.",
                                   param=REGION_HEADER, code="invalid_region")
        model = headers.get(MODEL_HEADER)
        if model is not None:
            model = model.strip()
            if not _MODEL.fullmatch(model):
                raise GatewayError(400, f"{MODEL_HEADER}: '{model[:64]}' is not a model name such as "
                                   "gemini-2.5-flash or publishers/google/models/gemini-2.5-flash.",
                                   param=MODEL_HEADER, code="invalid_model")
        return _Target(bucket or self.bucket, bucket is not None, region or self.region, model or self.model)

    def check_upload(self, ex: "Exchange") -> None:
        self._target(ex)  # refuse bad override headers before a byte is stored
        sink = ex.extra.get("vertex_sink")
        if not isinstance(sink, VertexSink) or (sink.translator is not None) == (ex.purpose == "batch"):
            return
        if sink.translator is not None:  # a second purpose field changed it
            raise GatewayError(400, "The 'purpose' field was sent twice with different values.",
                               param="purpose", code="invalid_purpose")
        raise GatewayError(
            400, f"Provider '{self.name}' (Vertex AI) translates batch files into Gemini rows while they "
            "stream, so it needs the 'purpose' field before the 'file' part of the form; send purpose "
            "first (the OpenAI SDK does).", param="purpose", code="purpose_after_file")

    def object_name(self, tenant: str, file_id: str, filename: str) -> str:
        return f"{self.prefix}{_segment(tenant, 'tenant', 128)}/{file_id}/{_segment(filename, 'upload')}"

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
            raise _not_found(file_id)
        return rec.location["bucket"], rec.location["name"]

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        bucket, name = self._located(rec, file_id)
        assert rec is not None and self.storage is not None
        try:
            await self._token_ready()
            resource = await gcs_storage.head(self.storage, bucket, name)
        except GCSStorageError as exc:
            raise self.gcs_error(exc, "metadata request", file_id=file_id) from None
        if resource is None:
            raise _not_found(file_id)  # removed from the bucket behind the gateway's back
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
        assert self.storage is not None
        try:
            await self._token_ready()
            resource = await gcs_storage.head(self.storage, bucket, name)
        except GCSStorageError as exc:
            raise self.gcs_error(exc, "metadata request", file_id=file_id) from None
        if resource is None:
            raise _not_found(file_id)
        pieces = gcs_storage.iter_object(self.storage, bucket, name)
        try:
            first = await pieces.__anext__()  # fail as an error response, not a cut stream
        except StopAsyncIteration:
            first = b""
        except GCSStorageError as exc:
            await pieces.aclose()
            raise self.gcs_error(exc, "download", file_id=file_id) from None
        except BaseException:
            await pieces.aclose()
            raise

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
                  target: _Target | None = None) -> GatewayError:
        """A GCS failure as the client should see it. GCSStorageError messages name only the
        operation, the status and GCS's reason code: never a token or a session URI."""
        status = exc.status
        log.warning("vertex %s: %s", self.name, exc.message)
        if status == 404 and file_id is not None:
            return _not_found(file_id)
        if status == 404 and exc.message.startswith(_UPLOAD_START):  # no such bucket
            if target is not None and target.bucket_from_header:
                return GatewayError(404, f"{BUCKET_HEADER}: the GCS bucket '{target.bucket}' does not exist.",
                                    param=BUCKET_HEADER, code="bucket_not_found")
            return GatewayError(502, f"Provider '{self.name}': the configured GCS bucket does not exist.",
                                code="upstream_bucket_not_found")
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
