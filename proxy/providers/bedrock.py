"""bedrock: AWS Bedrock. Gateway-managed files that live in Amazon S3.

An upload streams into ``s3://{bucket}/{prefix}{tenant}/{file_id}/{filename}`` by S3
multipart upload (:class:`~proxy.providers.s3_storage.S3MultipartSink`), one part at a time;
the object carries the user metadata ``file-id``, ``purpose`` and ``tenant`` (ASCII; a
non-ASCII tenant name is percent-encoded). A ``purpose=batch`` file is translated line by
line on its way into the bucket, from OpenAI batch requests into Bedrock batch-inference
records ``{"recordId", "modelInput"}``
(:func:`~proxy.transforms.batch_bedrock.bedrock_batch_translator`), so the stored object is
ready to be the ``s3InputDataConfig`` of a model invocation job; its key always ends in
``.jsonl`` (Bedrock needs it) and its ``bytes`` is the translated size. Batch translation
needs the model (its family decides the record body); an unknown model or family is refused
when the sink opens, before any byte is stored. The purpose is known by then whatever the
form's field order (proxy/field_order.py).

Per request, three headers override the configured defaults of an upload (retrieve, delete
and content always follow the record):

* ``x-tfy-aws-s3-bucket`` — the bucket (checked against S3's naming rules);
* ``x-tfy-aws-region`` — the bucket's region (a small cache keeps one client per region);
* ``x-tfy-provider-model`` — the Bedrock model id rows are translated for (else ``model``).

The store's ``location`` is ``{"bucket", "key", "region", "etag"}``, plus for batch files
``"model"``, ``"invocation_type"`` (the job's ``modelInvocationType``) and, when any
``custom_id`` could not be carried as a ``recordId`` unchanged, ``"ids"`` (recordId →
custom_id).

The S3 side (clients per region, the multipart sink, retrieve / delete / content, the janitor
hooks, error mapping, credentials, memory per upload) is :class:`~proxy.providers.s3.S3Provider`,
the ``s3`` type; this module adds the headers and the translation.

The Responses API runs through the bridge (proxy/bridge/converse.py translates) on Converse /
ConverseStream, called with a ``bedrock-runtime`` client of its own: the provider's region and
credentials, its ``timeouts`` and ``max_retries``, and ``runtime_endpoint_url`` (an emulator;
else AWS's endpoint for the region). A gateway file given as model input goes to Bedrock as its
``s3://bucket/key`` location (Converse reads it from S3; its bytes never pass the gateway).
"""
from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, AsyncGenerator

from ..bridge.converse import ConverseDialect, call_converse, open_converse_stream, stream_events
from ..errors import GatewayError
from ..transforms.batch_bedrock import UnsupportedModel, bedrock_batch_translator, invocation_type
from ..transforms.batch_translate import BatchTranslator
from . import s3_storage
from .batch_jobs import ENDPOINTS as BATCH_ENDPOINTS
from .object_store import (MAX_FILENAME_SEGMENT, HeaderRule, Target, bucket_rule, looks_like_ipv4,
                           read_target, sanitise_segment, unless_matches)
from .s3 import S3Provider, S3Sink
from .sink import SinkResult

if TYPE_CHECKING:
    from .bedrock_batches import BedrockBatchRunner
    from .configs import BedrockConfig
    from ..bridge.events import ProviderCall
    from ..exchange import Exchange
    from ..store.base import FileRecord

BUCKET_HEADER = "x-tfy-aws-s3-bucket"
REGION_HEADER = "x-tfy-aws-region"
MODEL_HEADER = "x-tfy-provider-model"

# Bedrock's default "records per input file" quota (docs/provider-facts.md §7.2: quotas vary, check
# Service Quotas). The batch_jsonl filter applies the operator's own, usually lower, limit.
_MAX_BATCH_LINES = 50_000
# The recordId → custom_id map lives in the store row; ids Bedrock carries unchanged cost nothing.
_MAX_IDS_BYTES = 4 << 20

_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,511}")
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 general-purpose bucket name, or None if it is."""
    if not 3 <= len(name) <= 63:
        return "must be 3 to 63 characters long"
    if not _BUCKET_CHARS.fullmatch(name):
        return ("may contain only lowercase letters, digits, '.' and '-', "
                "and must start and end with a letter or digit")
    if ".." in name:
        return "must not contain two adjacent periods"
    if looks_like_ipv4(name):
        return "must not be formatted as an IP address"
    if name.startswith(_BUCKET_BAD_PREFIXES):
        return f"must not start with {', '.join(repr(p) for p in _BUCKET_BAD_PREFIXES)}"
    if name.endswith(_BUCKET_BAD_SUFFIXES):
        return f"must not end with {', '.join(repr(s) for s in _BUCKET_BAD_SUFFIXES)}"
    return None


_TARGET_HEADERS = (
    bucket_rule(BUCKET_HEADER, "S3", bucket_name_problem),
    HeaderRule(REGION_HEADER, "invalid_region", unless_matches(
        _REGION, "is not an AWS region name such as us-east-1.")),
    HeaderRule(MODEL_HEADER, "invalid_model", unless_matches(
        _MODEL, "is not a Bedrock model id such as anthropic.claude-3-haiku-20240307-v1:0.")),
)


class BedrockSink(S3Sink):
    """The S3 sink of one upload with, for batch files, a translator in front of it. Holds at
    most the S3 sink's parts, one client chunk and one partial line."""

    __slots__ = ()

    provider: "BedrockProvider"
    service = "Bedrock"
    translated_rows = "Bedrock records"
    id_carrier = "Bedrock recordId"
    carried_ids = "64 letters and digits"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, max_ids_bytes=_MAX_IDS_BYTES, **kwargs)

    async def finish(self, stored: SinkResult) -> dict[str, Any]:
        location = await super().finish(stored)
        if self.translator is not None:
            assert self.target.model is not None
            location["model"] = self.target.model
            location["invocation_type"] = invocation_type(self.target.model)
        return location


class BedrockProvider(S3Provider):
    type = "bedrock"
    sink_class = BedrockSink
    bucket_header = BUCKET_HEADER
    serves_responses = True          # through the bridge (proxy/bridge): Converse
    batch_endpoints = frozenset(BATCH_ENDPOINTS)  # run by proxy/providers/bedrock_batches.py

    config: "BedrockConfig"

    def __init__(self, config: "BedrockConfig") -> None:
        super().__init__(config)
        self.model = config.model
        self._batches: "BedrockBatchRunner | None" = None
        self._dialect = ConverseDialect()
        self._runtime: Any = None
        self._runtime_stack = AsyncExitStack()

    async def start(self) -> None:
        await super().start()
        cfg = self.config
        # botocore retries a call only before its answer began (a stream is never replayed).
        kwargs = s3_storage.make_client_kwargs(
            self.region, cfg.runtime_endpoint_url, cfg.aws_access_key_id, cfg.aws_secret_access_key,
            max_pool_connections=64, max_retries=cfg.max_retries, timeouts=cfg.timeouts)
        self._runtime = await self._runtime_stack.enter_async_context(
            self._session.create_client("bedrock-runtime", **kwargs))

    async def close(self) -> None:
        try:
            if self._batches is not None:
                await self._batches.close()
            await self._runtime_stack.aclose()
        finally:
            self._runtime = None
            await super().close()

    # -- batches (proxy/providers/bedrock_batches.py) ----------------------------------------

    def batch_runner(self) -> "BedrockBatchRunner":
        if self._batches is None:
            from .bedrock_batches import BedrockBatchRunner

            self._batches = BedrockBatchRunner(self)
        return self._batches

    # -- responses, through the bridge (proxy/bridge/converse.py translates) -------------------
    def responses_dialect(self) -> ConverseDialect:
        return self._dialect

    async def bridge_call(self, ex: "Exchange", call: "ProviderCall") -> Any:
        assert self._runtime is not None, "provider not started"
        return await call_converse(self._runtime, call, self.name)

    async def bridge_stream(self, ex: "Exchange", call: "ProviderCall") -> AsyncGenerator[Any, None]:
        assert self._runtime is not None, "provider not started"
        stream = await open_converse_stream(self._runtime, call, self.name)   # refusals: before any event
        return stream_events(stream, self.name)                                # aclose() closes the call

    def bridge_file_id(self, rec: "FileRecord") -> str | None:
        bucket, key = rec.location.get("bucket"), rec.location.get("key")
        if rec.purpose == "batch" or not (isinstance(bucket, str) and isinstance(key, str)):
            return None     # a batch file holds translated records, not the client's document
        return f"s3://{bucket}/{key}"

    # -- uploads ---------------------------------------------------------------------------

    def target(self, ex: "Exchange") -> Target:
        return read_target(ex.request.headers, _TARGET_HEADERS, self.bucket, self.region, self.model)

    def _batch_model(self, target: Target) -> str:
        """The model batch rows are translated for; 400 when none is known or its family has
        no translation (checked before any byte is stored)."""
        if not target.model:
            raise GatewayError(
                400, f"Provider '{self.name}' (Bedrock) translates batch files into the record format of "
                f"one model family; name the Bedrock model with the {MODEL_HEADER} header (for example "
                "anthropic.claude-3-haiku-20240307-v1:0) or configure the provider's 'model'.",
                param=MODEL_HEADER, code="missing_model")
        try:
            invocation_type(target.model)
        except UnsupportedModel as exc:
            raise GatewayError(400, f"{MODEL_HEADER}: {exc}.", param=MODEL_HEADER, code="unsupported_model") from None
        return target.model

    def batch_translator(self, ex: "Exchange", target: Target) -> BatchTranslator | None:
        if ex.purpose != "batch":
            return None
        try:
            return bedrock_batch_translator(self._batch_model(target), max_lines=_MAX_BATCH_LINES)
        except UnsupportedModel as exc:  # _batch_model checked it already
            raise GatewayError(400, f"{MODEL_HEADER}: {exc}.", param=MODEL_HEADER,
                               code="unsupported_model") from None

    def object_key(self, tenant: str, file_id: str, filename: str, *, batch: bool) -> str:
        if batch:  # Bedrock reads only *.jsonl inputs
            name = sanitise_segment(filename, "upload")
            if not name.endswith(".jsonl"):
                stem = name[:-6] if name.lower().endswith(".jsonl") else name
                filename = f"{stem[:MAX_FILENAME_SEGMENT - 6]}.jsonl"
        return super().object_key(tenant, file_id, filename, batch=batch)
