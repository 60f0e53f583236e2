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

The GCS side (the resumable sink, retrieve / delete / content, the janitor hook, error
mapping, credentials, chunk size) is :class:`~proxy.providers.gcs.GCSProvider`, the ``gcs``
type; this module adds the headers and the translation.

The Responses API runs through the bridge (proxy/bridge/gemini.py translates) on Gemini
``generateContent`` / ``streamGenerateContent?alt=sse`` of the configured ``project_id`` and
``region``, posted to ``api_endpoint`` (else the region's Vertex AI host) through the upstream
facade, with ``Authorization: Bearer`` and the provider's access token (its scopes include
``cloud-platform``; none is sent when ``endpoint_url`` names an emulator, as for GCS). Errors are
Google's ``{"error": {code, message, status}}``, mapped by :func:`~proxy.bridge.gemini.gemini_error`.
A gateway file given as model input goes to Gemini as its ``gs://bucket/name`` (read from
Cloud Storage; its bytes never pass the gateway).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, AsyncGenerator, ClassVar

import orjson

from ..bridge.gemini import GeminiDialect, gemini_error, vertex_host
from ..errors import GatewayError
from ..transforms.batch_translate import BatchTranslator
from ..transforms.batch_vertex import vertex_batch_translator
from .batch_jobs import ENDPOINTS as BATCH_ENDPOINTS
from .gcs import _SCOPES, GCSProvider, GCSSink
from .object_store import HeaderRule, Target, bucket_rule, looks_like_ipv4, read_target, unless_matches
from .sink import SinkResult
from .upstream import Upstream, json_events

if TYPE_CHECKING:
    from .configs import VertexConfig
    from .vertex_batches import VertexBatchRunner
    from ..bridge.events import ProviderCall
    from ..exchange import Exchange
    from ..store.base import FileRecord

BUCKET_HEADER = "x-tfy-vertex-storage-bucket-name"
REGION_HEADER = "x-tfy-vertex-region"
MODEL_HEADER = "x-tfy-provider-model"

# Vertex's documented per-job cap (docs/provider-facts.md §8.1). The batch_jsonl filter applies the
# operator's own, usually lower, limit before a line reaches the translator.
_MAX_BATCH_LINES = 200_000
# The id map lives in the store row; ids that labels carry unchanged cost nothing.
_MAX_IDS_BYTES = 4 << 20

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


class VertexSink(GCSSink):
    """The GCS sink of one upload with, for batch files, a translator in front of it. Holds at
    most one GCS chunk, one client chunk and one partial line."""

    __slots__ = ()

    provider: "VertexProvider"
    service = "Vertex AI"
    translated_rows = "Gemini rows"
    id_carrier = "Vertex label"
    carried_ids = "63 lowercase letters, digits, '_' or '-'"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, max_ids_bytes=_MAX_IDS_BYTES, **kwargs)

    async def finish(self, stored: SinkResult) -> dict[str, Any]:
        return {**await super().finish(stored), **self.provider.recorded_target(self.target)}


class GeminiUpstream(Upstream):
    """:class:`Upstream` (pool, retries, scrubbing) reading Google's error shape."""

    def error_from_response(self, status: int, body: bytes, headers: Any) -> GatewayError:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        err = gemini_error(status, parsed)
        err.message = self.scrub(err.message)
        return err


class VertexProvider(GCSProvider):
    type = "vertex"
    sink_class = VertexSink
    bucket_header = BUCKET_HEADER
    serves_responses = True          # through the bridge (proxy/bridge): Gemini generateContent
    # the Vertex AI API wants the cloud-platform scope (docs/provider-facts.md §8.7)
    scopes: ClassVar[list[str]] = [*_SCOPES, "https://www.googleapis.com/auth/cloud-platform"]
    batch_endpoints = frozenset(BATCH_ENDPOINTS)  # run by proxy/providers/vertex_batches.py

    config: "VertexConfig"

    def __init__(self, config: "VertexConfig") -> None:
        super().__init__(config)
        self.project_id = config.project_id
        self.region = config.region
        self.model = config.model
        self._batches: "VertexBatchRunner | None" = None
        self._dialect = GeminiDialect(config.project_id, config.region)
        self.api_host = (config.api_endpoint or vertex_host(config.region)).rstrip("/")
        self.gemini = GeminiUpstream(
            provider=config.name, headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            timeouts=config.timeouts, max_retries=config.max_retries)

    async def start(self) -> None:
        await super().start()
        await self.gemini.start()

    async def close(self) -> None:
        try:
            if self._batches is not None:
                await self._batches.close()
            await self.gemini.close()
        finally:
            await super().close()

    # -- batches (proxy/providers/vertex_batches.py) -----------------------------------------

    def batch_runner(self) -> "VertexBatchRunner":
        if self._batches is None:
            from .vertex_batches import VertexBatchRunner

            self._batches = VertexBatchRunner(self)
        return self._batches

    def target(self, ex: "Exchange") -> Target:
        return read_target(ex.request.headers, _TARGET_HEADERS, self.bucket, self.region, self.model)

    def recorded_target(self, target: Target) -> dict[str, Any]:
        return {"region": target.region, "model": target.model}

    def batch_translator(self, ex: "Exchange", target: Target) -> BatchTranslator | None:
        return vertex_batch_translator(max_lines=_MAX_BATCH_LINES) if ex.purpose == "batch" else None

    # -- responses, through the bridge (proxy/bridge/gemini.py translates) ---------------------
    def responses_dialect(self) -> GeminiDialect:
        return self._dialect

    async def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self.token is not None:
            try:
                headers["Authorization"] = f"Bearer {await self.token.get()}"
            except Exception as exc:
                self.log.warning("%s: could not obtain a Google access token: %s", self.name, type(exc).__name__)
                raise GatewayError(502, f"Provider '{self.name}': could not obtain an access token for Vertex AI.",
                                   code="upstream_auth_failed") from None
        return headers

    async def bridge_call(self, ex: "Exchange", call: "ProviderCall") -> Any:
        _, data = await self.gemini.request(
            "POST", self.api_host + call.path, body=orjson.dumps(call.body),
            headers=await self._headers("application/json"), idempotent=False)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GatewayError(502, f"Provider '{self.name}' answered with a body that is not JSON.",
                               code="upstream_bad_response") from None

    async def bridge_stream(self, ex: "Exchange", call: "ProviderCall") -> AsyncGenerator[Any, None]:
        st = await self.gemini.stream(
            "POST", self.api_host + call.path, body=orjson.dumps(call.body),
            headers=await self._headers("text/event-stream"), idempotent=False)
        return json_events(st, self.gemini)

    def bridge_file_id(self, rec: "FileRecord") -> str | None:
        bucket, name = rec.location.get("bucket"), rec.location.get("name")
        if rec.purpose == "batch" or not (isinstance(bucket, str) and isinstance(name, str)):
            return None     # a batch file holds translated rows, not the client's document
        return f"gs://{bucket}/{name}"
