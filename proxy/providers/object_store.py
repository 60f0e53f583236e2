"""object_store: what the object-store providers (s3 and bedrock: S3; gcs and vertex: GCS) have
in common, so each of them holds only what its store or its translation needs.

All keep gateway-managed files in a bucket, one object per file under
``{prefix}{tenant}/{file_id}/{filename}``. ``s3`` and ``gcs`` store every file as sent;
``bedrock`` and ``vertex`` are those two plus the translation of ``purpose=batch`` files line
by line on their way in, and request headers that override the configured bucket, region and
model. The parts of that which do not depend on the store live here: reading and checking the
override headers, object-key naming, the OpenAI-shaped errors, the provider skeleton, and the
upload's sink wrapper that puts a batch translator in front of the store's own sink.

The upload's purpose is known when its sink is opened (the core holds a file sent before its
purpose, proxy/field_order.py), so an object is created with its final purpose.

Nothing here talks to S3 or GCS or imports their SDKs, so these rules are tested without either.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import GatewayError
from ..transforms.batch_translate import BatchTranslator
from ..transforms.jsonl import BatchLineError
from .base import Provider
from .sink import Sink, SinkResult

if TYPE_CHECKING:
    from .configs import BucketConfig
    from ..exchange import Exchange

MAX_FILENAME_SEGMENT = 200
MAX_TENANT_SEGMENT = 128

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_E = TypeVar("_E", bound=Exception)


def sanitise_segment(value: str, fallback: str, limit: int = MAX_FILENAME_SEGMENT) -> str:
    """``value`` as one safe object-key segment: ``[A-Za-z0-9._-]``, at most ``limit`` long,
    keeping a short extension when it has to be cut; ``fallback`` when nothing but dots is left."""
    clean = _UNSAFE.sub("_", value)
    if len(clean) > limit:
        root, dot, ext = clean.rpartition(".")
        clean = f"{root[:limit - len(ext) - 1]}.{ext}" if dot and 0 < len(ext) <= 16 else clean[:limit]
    return fallback if clean.strip(".") == "" else clean


def looks_like_ipv4(name: str) -> bool:
    """Whether a bucket name is a dotted IPv4 address (neither S3 nor GCS allows one)."""
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def content_type_for(purpose: str | None) -> str:
    """The stored object's content type: batch files are JSONL, everything else opaque bytes."""
    return "application/jsonl" if purpose == "batch" else "application/octet-stream"


def not_found(file_id: str) -> GatewayError:
    return GatewayError(404, f"No such File object: {file_id[:128]}", param="file_id", code="file_not_found")


def bucket_not_found(provider: str, store: str, header: str, target: Target | None) -> GatewayError:
    """The upload's bucket does not exist: the client's mistake (404) when its ``header`` named
    it, else the operator's (502)."""
    if target is not None and target.bucket_from_header:
        return GatewayError(404, f"{header}: the {store} bucket '{target.bucket}' does not exist.",
                            param=header, code="bucket_not_found")
    return GatewayError(502, f"Provider '{provider}': the configured {store} bucket does not exist.",
                        code="upstream_bucket_not_found")


def batch_error(service: str, err: BatchLineError) -> GatewayError:
    """A bad line of a batch file, as the 400 the client sees (``service``: "Bedrock"...)."""
    message = err.message.rstrip(".")
    return GatewayError(400, f"Invalid batch file for {service}: line {err.line}: {message}.",
                        param="file", code="invalid_batch_file")


async def first_piece(pieces: AsyncGenerator[bytes, None], storage_error: type[_E],
                      to_error: Callable[[_E], GatewayError]) -> bytes:
    """The first piece of a download (b"" for an empty object), read before the response
    starts: a ``storage_error`` becomes ``to_error(exc)``. ``pieces`` is closed when it fails."""
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        return b""
    except storage_error as exc:
        await pieces.aclose()
        raise to_error(exc) from None
    except BaseException:
        await pieces.aclose()
        raise


# -- where an upload goes ------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """Where an upload goes (the bucket, and whether a header chose it), and the region and
    model recorded with it (the model its batch rows are made for)."""

    bucket: str
    bucket_from_header: bool
    region: str | None
    model: str | None


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One override header: its name, the error code of a bad value, and ``problem(value)``,
    the end of the 400's message ("is not a ... such as ...") or None for a good value."""

    name: str
    code: str
    problem: Callable[[str], str | None]

    def read(self, headers: Mapping[str, str]) -> str | None:
        """The header's value, stripped; None when it was not sent."""
        value = headers.get(self.name)
        if value is None:
            return None
        value = value.strip()
        problem = self.problem(value)
        if problem:
            raise GatewayError(400, f"{self.name}: '{value[:64]}' {problem}", param=self.name, code=self.code)
        return value


def bucket_rule(header: str, store: str, bucket_name_problem: Callable[[str], str | None]) -> HeaderRule:
    """The bucket override header: a name that breaks ``store``'s naming rules is a 400."""
    def problem(name: str) -> str | None:
        why = bucket_name_problem(name)
        return f"is not a valid {store} bucket name: {why}." if why else None
    return HeaderRule(header, "invalid_bucket_name", problem)


def unless_matches(pattern: re.Pattern[str], problem: str) -> Callable[[str], str | None]:
    """A :attr:`HeaderRule.problem` check: ``problem`` unless the whole value matches ``pattern``."""
    return lambda value: None if pattern.fullmatch(value) else problem


def read_target(headers: Mapping[str, str], rules: tuple[HeaderRule, HeaderRule, HeaderRule],
                bucket: str, region: str | None, model: str | None) -> Target:
    """The :class:`Target` of an upload: the configured ``bucket``, ``region`` and ``model``,
    each overridden by its header (``rules``, in that order) when one is sent; 400 for a bad one."""
    for_bucket, for_region, for_model = rules
    header_bucket = for_bucket.read(headers)
    return Target(header_bucket or bucket, header_bucket is not None,
                  for_region.read(headers) or region, for_model.read(headers) or model)


# -- the provider skeleton -------------------------------------------------------------------


class BucketProvider(Provider):
    """A provider whose files live in a bucket (``s3``, ``gcs``, and through them ``bedrock``,
    ``vertex``): stored as sent unless a subclass's :meth:`batch_translator` says otherwise."""

    #: The request header that may name the bucket (bedrock's, vertex's), for the
    #: bucket-not-found error; the plain types take no override headers.
    bucket_header: ClassVar[str] = ""

    def __init__(self, config: "BucketConfig") -> None:
        super().__init__(config)
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.region: str | None = None  # recorded with each file where the store has regions
        self.log = logging.getLogger(f"sluicegate.{self.type}")

    def target(self, ex: "Exchange") -> Target:
        """Where an upload goes: the configured bucket and region (a subclass: or its headers')."""
        return self.configured_target()

    def configured_target(self) -> Target:
        """The configured bucket and region, whatever a request's headers say (the sweeper's,
        which has no request)."""
        return Target(self.bucket, False, self.region, None)

    def batch_translator(self, ex: "Exchange", target: Target) -> BatchTranslator | None:
        """What rewrites the upload's lines on their way in; None: stored as sent."""
        return None

    def object_path(self, tenant: str, file_id: str, filename: str) -> str:
        """``{prefix}{tenant}/{file_id}/{filename}``, each segment made safe."""
        tenant_segment = sanitise_segment(tenant, "tenant", MAX_TENANT_SEGMENT)
        return f"{self.prefix}{tenant_segment}/{file_id}/{sanitise_segment(filename, 'upload')}"


# -- the sink of one upload ------------------------------------------------------------------


class TranslatingSink:
    """The store's sink of one upload; for batch files, a translator in front of it.

    Holds what the inner sink holds, one client chunk and (for batch files) one partial line.
    Every failure leaves the exchange as an OpenAI-shaped :class:`GatewayError`.

    A subclass names its service and its id carrier for the error texts and implements the
    hooks: :meth:`upload_error` (a ``storage_error`` of the inner sink, as the client sees it)
    and :meth:`finish` (the stored object's location; the place to release clients and fix up
    metadata).
    """

    __slots__ = ("provider", "ex", "inner", "translator", "target",
                 "_max_ids_bytes", "_ids_seen", "_ids_bytes")

    #: The inner sink's failure type, mapped by :meth:`upload_error`.
    storage_error: ClassVar[type[Exception]]
    #: For error texts: the service ("Bedrock"), what batch lines become ("Bedrock records"),
    #: what carries a ``custom_id`` ("Bedrock recordId") and the ids it carries unchanged.
    service: ClassVar[str]
    translated_rows: ClassVar[str] = ""
    id_carrier: ClassVar[str] = ""
    carried_ids: ClassVar[str] = ""

    def __init__(self, provider: Provider, ex: "Exchange", inner: Sink, translator: BatchTranslator | None,
                 target: Target, *, max_ids_bytes: int) -> None:
        self.provider = provider
        self.ex = ex
        self.inner = inner
        self.translator = translator
        self.target = target
        self._max_ids_bytes = max_ids_bytes
        self._ids_seen = 0
        self._ids_bytes = 0

    # -- hooks -----------------------------------------------------------------------------

    def upload_error(self, exc: Exception) -> GatewayError:
        raise NotImplementedError

    async def finish(self, stored: SinkResult) -> dict[str, Any]:
        """The location of the stored object (the id map is added to it afterwards)."""
        raise NotImplementedError

    # -- the flow --------------------------------------------------------------------------

    async def write(self, chunk: bytes | memoryview) -> None:
        translator = self.translator
        if translator is None:
            await self._store(chunk)
        else:
            await self._store_rows(lambda: translator.feed(chunk))

    async def complete(self) -> SinkResult:
        if self.translator is not None:
            await self._store_rows(self.translator.close)
        try:
            stored = await self.inner.complete()
        except self.storage_error as exc:
            raise self.upload_error(exc) from None
        location = await self.finish(stored)
        if self.translator is not None:
            if self.translator.ids:
                location["ids"] = dict(self.translator.ids)
        return SinkResult(bytes=stored.bytes, location=location)

    async def abort(self) -> None:
        await self.inner.abort()

    def partial_location(self) -> dict[str, Any]:
        """The inner sink's locator of its unfinished upload (for the crash janitor)."""
        partial = getattr(self.inner, "partial_location", None)
        return partial() if partial is not None else {}

    async def _store_rows(self, translate: Callable[[], bytes]) -> None:
        """Store what ``translate`` (the translator's feed or close) turns out, if anything."""
        try:
            rows = translate()
        except BatchLineError as err:
            raise batch_error(self.service, err) from None
        self._check_ids()
        if rows:
            await self._store(rows)

    async def _store(self, data: bytes | memoryview) -> None:
        try:
            await self.inner.write(data)
        except self.storage_error as exc:  # the core then aborts the sink (and so the inner one)
            raise self.upload_error(exc) from None

    def _check_ids(self) -> None:
        """Bound the id map: it goes into the store row."""
        assert self.translator is not None  # rows come only from a translator
        ids = self.translator.ids
        new = len(ids) - self._ids_seen
        if not new:
            return
        for carried, custom_id in islice(reversed(ids.items()), new):
            self._ids_bytes += len(carried) + len(custom_id.encode()) + 8
        self._ids_seen = len(ids)
        if self._ids_bytes > self._max_ids_bytes:
            newest = next(reversed(ids))  # the carrier's prefix letter + the line number
            line = str(int(newest[1:])) if newest[1:].isdigit() else "?"
            raise GatewayError(
                400, f"Invalid batch file for {self.service}: line {line}: too many \"custom_id\" values that "
                f"a {self.id_carrier} cannot carry unchanged (more than {self._max_ids_bytes >> 20} MiB of "
                f"them); use ids of at most {self.carried_ids}.", param="file", code="invalid_batch_file")
