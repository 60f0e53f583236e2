"""files.create: the multipart body streamed through the filter chain into the provider.

The body is read chunk by chunk; each chunk goes through the sans-IO multipart parser and
the resulting events through the filters; the next chunk is read only when the provider has
taken this one (back-pressure end to end). Two ways into a provider:

* **tee** (pass-through providers) — the raw client bytes go upstream unchanged, with the
  client's Content-Length, while the parser only observes them. Each chunk is parsed and
  checked *before* it is forwarded, so the chunk that would complete an invalid upload is
  never sent: the upstream sees a truncated body and stores nothing.
* **sink** (gateway-managed providers) — only the file's bytes go to a Sink (disk, S3, GCS…).

Form-field order has one rule (:mod:`proxy.field_order`): a file whose ``purpose`` is not
known when it starts is held on local disk and replayed once the purpose arrives, so filters,
provider and upstream all see the purpose at the file's start.

Any failure aborts: the sink's ``abort`` removes partial data, the upstream request is
closed, nothing is recorded, no quota is charged.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

import orjson


from .body import client_chunks
from .errors import GatewayError, bad_request, quota_error
from .field_order import SPOOL_DIR, FileHold, RawHold, Spool, largest_file_limit
from .ids import new_id
from .limits import FORM_ALLOWANCE
from .multipart import Done, Field, FileData, FileEnd, FileStart, MultipartError, MultipartParser
from .providers.base import UploadResult
from .reservations import UploadReservation
from .store.base import BATCH_URL_KEY, FileRecord, QuotaExceeded
from .units import size_and_bytes

if TYPE_CHECKING:
    from .exchange import Exchange
    from filters.base import FilterChain

    from .context import OperationContext
    from .providers.sink import Sink

log = logging.getLogger("sluicegate.uploads")

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
MIN_EXPIRES, MAX_EXPIRES = 3600, 2_592_000
# Most raw body bytes a pass-through upload holds in memory before it connects upstream (the
# form fields before the file); beyond it they are held on disk (proxy/field_order.py).
PREAMBLE_LIMIT = 1 << 20
# Form fields the gateway does not read are ignored (OpenAI adds fields over time; a
# pass-through provider receives them unchanged and applies its own rules), but bounded:
# at most this many named parts, each value at most MAX_FIELD_SIZE (so all fields together
# stay within the 1 MiB FORM_ALLOWANCE of proxy.limits).
MAX_FORM_PARTS = 16
MAX_FIELD_SIZE = 64 << 10


def _param(field: str) -> str:
    """A form field's name as an error's ``param``: ``expires_after[anchor]`` → ``expires_after.anchor``."""
    return field[:64].replace("[", ".").replace("]", "")


class UploadDriver:
    """Feeds body chunks through the parser and the filters; in sink mode, into the sink.

    ``chain`` is this upload's filter chain (the configured filters and the provider's upload
    rules); ``hold`` holds the file back while its purpose is unknown (proxy/field_order.py).
    A file the gateway already has whole (an Upload's parts) has neither parser nor hold: it
    goes in through :meth:`feed_file`.
    """

    def __init__(self, ex: "Exchange", parser: MultipartParser | None, sink_mode: bool,
                 chain: "FilterChain", hold: FileHold | None) -> None:
        self.ex = ex
        self.parser = parser
        self.sink_mode = sink_mode
        self.chain = chain
        self.hold = hold
        self.sink: Sink | None = None
        self.file_id: str | None = None
        self.file_seen = False
        self.done = False
        self.anchor: str | None = None
        self.failure: BaseException | None = None
        self.parts: set[str] = set()   # names of the parts parsed so far (each allowed once)

    async def feed_file(self, chunks: AsyncIterator[bytes]) -> None:
        """The whole file, its purpose and filename already on the exchange: the same hooks
        and sink as a file part, without the multipart framing (proxy/uploads_api.py)."""
        ex = self.ex
        self.file_seen = True
        await self._file_start()
        async for chunk in chunks:
            await self._file_data(chunk)
        self.chain.on_file_end(ex)
        self.done = True
        await self.chain.on_upload_complete(ex)

    async def feed(self, chunk: bytes) -> None:
        ex = self.ex
        hold = self.hold
        assert self.parser is not None and hold is not None  # a multipart body's driver
        ex.body_bytes += len(chunk)
        try:
            events = self.parser.feed(chunk)
        except MultipartError as exc:
            raise bad_request(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
        for ev in events:
            # type(ev) per branch, not isinstance: the events are final classes (and mypy narrows it).
            if type(ev) is FileData:
                if hold.holding:
                    hold.data(ev.data)
                    ex.file_bytes += len(ev.data)  # counted as received (the quota reservation covers it)
                else:
                    await self._file_data(ev.data)
            elif type(ev) is Field:
                self._field(ev.name, ev.value)
                if hold.holding and ex.purpose is not None:
                    await self._replay()
            elif type(ev) is FileStart:
                self._file_part(ev)
                if ex.purpose is None:
                    hold.begin()
                else:
                    await self._file_start()
            elif type(ev) is FileEnd:
                if hold.holding:
                    hold.end()
                else:
                    self.chain.on_file_end(ex)
            elif type(ev) is Done:
                self.done = True
                await self._complete_checks()

    async def _file_data(self, data: bytes | memoryview) -> None:
        self.ex.file_bytes += len(data)
        self.chain.on_file_data(self.ex, data)
        if self.sink is not None:
            await self.sink.write(data)

    async def _replay(self) -> None:
        """The purpose has arrived after the file: the held file goes to the filters and the
        provider now, exactly as if the purpose had come first."""
        ex = self.ex
        assert self.hold is not None  # only a multipart body holds a file
        chunks = self.hold.release()
        ex.file_bytes = 0  # counted again, chunk by chunk, as the filters see them
        await self._file_start()
        res = ex.reservation
        for data in chunks:
            await self._file_data(data)
            if self.sink is not None and self.file_id is not None and res is not None:
                # As between client chunks: a gateway killed during a long replay leaves its
                # partial data (an S3 multipart upload, a GCS session) findable by the janitor.
                await res.track(self.file_id, self.sink)
        self.chain.on_file_end(ex)
        self.hold.close()

    def _once(self, name: str) -> None:
        """Every part name may appear once: a repeat is refused the moment it is parsed (so
        in a tee it never reaches the upstream), and the number of parts is bounded."""
        if name in self.parts:
            if name == "file":
                raise bad_request("Only one file can be uploaded per request.", param="file")
            raise bad_request(f"The form field '{name[:64]}' was sent more than once; send each field once.",
                              param=_param(name), code="duplicate_field")
        if len(self.parts) >= MAX_FORM_PARTS:
            raise bad_request(f"The form has more than {MAX_FORM_PARTS} fields.", code="too_many_fields")
        self.parts.add(name)

    def _field(self, name: str, value: str) -> None:
        """One form field. Each field comes at most once (:meth:`_once`), so ``purpose`` is set
        once: a file is never checked under one purpose and stored under another. (A purpose
        after the file is handled by the hold, see :meth:`feed`.)"""
        ex = self.ex
        self._once(name)
        if name == "file":
            raise bad_request("The 'file' field must be a file part (with a filename).", param="file")
        if name == "purpose":
            if value not in PURPOSES:
                raise bad_request(f"'{value[:64]}' is not a valid purpose; use one of: {', '.join(sorted(PURPOSES))}.",
                                  param="purpose", code="invalid_purpose")
            ex.purpose = value
        elif name == "expires_after[anchor]":
            if value != "created_at":
                raise bad_request("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
            self.anchor = value
        elif name == "expires_after[seconds]":
            try:
                seconds = int(value)
            except ValueError:
                seconds = -1
            if not MIN_EXPIRES <= seconds <= MAX_EXPIRES:
                raise bad_request(f"expires_after[seconds] must be an integer from {MIN_EXPIRES} to {MAX_EXPIRES}.",
                                  param="expires_after.seconds")
            ex.expires_after = seconds
        self.chain.on_field(ex, name, value)

    def _file_part(self, ev: FileStart) -> None:
        """The file part begins (checked at once, whether or not its purpose is known yet)."""
        if ev.name != "file":
            raise bad_request(f"Unexpected file part '{ev.name[:64]}'; the file must be sent as the 'file' field.",
                              param="file")
        self._once("file")
        self.file_seen = True
        self.ex.filename = ev.filename or "upload"

    async def _file_start(self) -> None:
        """The file starts streaming, its purpose known: the filters, then the provider."""
        ex = self.ex
        ex.file_started = True
        self.chain.on_file_start(ex)
        if self.sink_mode:
            assert ex.provider is not None  # routed before the operation ran
            self.file_id = new_id("file-")
            self.sink = await ex.provider.open_sink(ex, self.file_id)

    async def _complete_checks(self) -> None:
        ex = self.ex
        if not self.file_seen:
            raise bad_request("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if ex.purpose is None:
            raise bad_request("Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter")
        if ex.expires_after is not None and self.anchor is None:
            raise bad_request("expires_after[anchor] is required with expires_after[seconds].", param="expires_after.anchor")
        await self.chain.on_upload_complete(ex)

    def finish(self) -> None:
        """End of body: a body that stopped before the closing boundary is malformed."""
        if not self.done:
            assert self.parser is not None  # feed_file sets done
            try:
                self.parser.close()
            except MultipartError as exc:
                raise bad_request(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
            raise bad_request("Malformed multipart body: missing closing boundary.", code="invalid_multipart")


async def _client_chunks(ex: "Exchange") -> AsyncIterator[bytes]:
    # Idle timeout, 100-continue and disconnects are handled by the shared body reader.
    async for chunk in client_chunks(ex.request):
        yield chunk


def _expires_at(ex: "Exchange", created: int) -> int | None:
    return created + ex.expires_after if ex.expires_after is not None else None


async def handle_upload(ctx: "OperationContext") -> bytes:
    """The upload of ``ctx.ex``, whose multipart boundary the pipeline has checked."""
    ex = ctx.ex
    assert ctx.boundary is not None
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    ctype = ex.request.headers.get("Content-Type")
    parser = MultipartParser(ctx.boundary, max_field_size=MAX_FIELD_SIZE)
    chain = upload_chain(ctx.chain, ex)
    limits = ctx.limits
    hold_limit = largest_file_limit(limits.max_file_size, limits.max_batch_file_size, ex.provider.config.max_file_size)
    spool_dir = os.path.join(ctx.data_dir, SPOOL_DIR)
    hold = FileHold(Spool(spool_dir, hold_limit, _too_large))
    res = ex.reservation = UploadReservation(ctx.store, ex.tenant.name, ex.provider.name, ex.quota_limit)
    try:
        await _reserve_announced(ex, res)
        driver = UploadDriver(ex, parser, not ex.provider.passthrough, chain, hold)
        if ex.provider.passthrough:
            # The raw body: the file plus its framing and the form fields.
            raw_spool = Spool(spool_dir, hold_limit + 2 * FORM_ALLOWANCE, lambda _: _too_large(hold_limit))
            raw = RawHold(raw_spool, PREAMBLE_LIMIT)
            try:
                return await _tee_upload(ctx, driver, raw, ctype or "")
            finally:
                raw.close()
        return await _sink_upload(ctx, driver)
    finally:
        hold.close()  # the spool is gone on every path (a cancelled exchange included)
        # Also on cancellation (the client went away): release() is shielded.
        await res.release()


def upload_chain(chain: "FilterChain", ex: "Exchange") -> "FilterChain":
    """This upload's filters: the exchange's chain, then the provider's upload rules (one
    hook system: a provider's rules are a filter like any other). ``append`` changes this
    exchange's chain only."""
    assert ex.provider is not None
    rules = ex.provider.upload_rules(ex)
    if rules is not None:
        chain.append(rules)
    return chain


def _too_large(limit: int) -> GatewayError:
    """A file held before its purpose is known outgrew the largest limit any purpose has."""
    return GatewayError(413, f"File is too large: the limit for files is {size_and_bytes(limit)}.",
                        param="file", code="file_too_large")


async def _reserve_announced(ex: "Exchange", res: UploadReservation) -> None:
    """Reserve what Content-Length announces before reading the body: refused at once (429)
    unless at least the announced file size (body minus the form-field allowance) fits."""
    announced = ex.content_length or 0
    try:
        await res.open(announced, max(0, announced - FORM_ALLOWANCE))
    except QuotaExceeded as exc:
        raise quota_error(ex.tenant_name, exc.used, exc.adding, exc.quota) from None


async def _cover(ex: "Exchange", chunk: bytes) -> None:
    """Before a chunk goes in, hold quota for every file byte it may carry."""
    res = ex.reservation
    if res is not None and ex.file_bytes + len(chunk) > res.bytes:
        await res.cover(ex.file_bytes + len(chunk))


async def _sink_upload(ctx: "OperationContext", driver: UploadDriver) -> bytes:
    ex = ctx.ex
    res = ex.reservation

    async def body() -> None:
        async for chunk in _client_chunks(ex):
            if driver.sink is not None and driver.file_id is not None and res is not None:
                # Where the partial data is, once the upload outlives the chunk that opened it
                # (an upload of one chunk commits at once: no write for it).
                await res.track(driver.file_id, driver.sink)
            await _cover(ex, chunk)
            await driver.feed(chunk)
        driver.finish()

    return orjson.dumps((await _into_sink(ctx, driver, body)).to_openai())


async def store_file(ctx: "OperationContext", chunks: AsyncIterator[bytes]) -> FileRecord:
    """A file the gateway already has (an Upload's parts, read in order) stored as files.create
    stores one: the exchange's filters and the provider's upload rules see it (size, batch
    JSONL, quota), the provider's sink takes it (batch translation included), and the record
    takes over ``ex.reservation``. ``ex.purpose``, ``ex.filename`` and ``ex.expires_after``
    are the caller's; on any failure nothing is stored and the reservation is kept."""
    ex = ctx.ex
    driver = UploadDriver(ex, None, True, upload_chain(ctx.chain, ex), None)

    async def body() -> None:
        await driver.feed_file(chunks)

    return await _into_sink(ctx, driver, body)


async def _into_sink(ctx: "OperationContext", driver: UploadDriver,
                     body: Callable[[], Awaitable[None]]) -> FileRecord:
    """Run ``body`` (which feeds the driver), complete the sink and record the file; the sink
    is aborted on any failure."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    try:
        await body()
        assert driver.sink is not None and driver.file_id is not None
        result = await driver.sink.complete()
    except BaseException:
        if driver.sink is not None:
            # Shielded: a client that goes away during the abort (an S3 AbortMultipartUpload, a
            # GCS session DELETE) must not cut the clean-up short.
            await asyncio.shield(driver.sink.abort())
        raise
    created = int(time.time())
    rec = FileRecord(
        id=driver.file_id, tenant=ex.tenant.name, provider=ex.provider.name, filename=ex.filename or "upload",
        purpose=ex.purpose or "", bytes=result.bytes, created_at=created, location=result.location,
        expires_at=_expires_at(ex, created),
    )
    # Shielded: a client that disconnects now must not leave a stored file without its row.
    await asyncio.shield(_record(ctx, rec))
    return rec


async def _tee_upload(ctx: "OperationContext", driver: UploadDriver, held: RawHold, ctype: str) -> bytes:
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    chunks = _client_chunks(ex).__aiter__()
    # Parse before connecting upstream: the form fields (the SDK sends them first), and — when
    # the purpose comes after the file — the whole file, held on disk until the purpose is
    # known. A refused field or purpose, or a rule broken at the file's start, never reaches it.
    ended = False
    while not ex.file_started and not driver.done:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            ended = True
            break
        await _cover(ex, chunk)
        await driver.feed(chunk)
        held.add(chunk)
    if ended:
        driver.finish()

    async def body() -> AsyncIterator[bytes]:
        try:
            for chunk in held.chunks():
                yield chunk
            if not ended:
                async for chunk in chunks:
                    # Parse and check first: a chunk is forwarded only once the filters accept it.
                    await _cover(ex, chunk)
                    await driver.feed(chunk)
                    yield chunk
                driver.finish()
        except BaseException as exc:
            driver.failure = exc
            raise

    try:
        result = await ex.provider.upload_passthrough(ex, body(), ctype)
    except BaseException as exc:
        # The HTTP client wraps errors raised inside the body generator; report the real one.
        if driver.failure is not None and driver.failure is not exc:
            raise driver.failure from None
        raise
    if driver.failure is not None:
        raise driver.failure
    await _record_upstream(ctx, result)
    return orjson.dumps(result.file)


async def _record_upstream(ctx: "OperationContext", result: UploadResult) -> FileRecord:
    """The file a pass-through upload created upstream, recorded for the tenant."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    f = result.file
    upstream_created = f.get("created_at")
    created = upstream_created if isinstance(upstream_created, int) else int(time.time())
    rec = FileRecord(
        id=f["id"], tenant=ex.tenant.name, provider=ex.provider.name, upstream_id=f["id"],
        filename=f.get("filename") or ex.filename or "upload", purpose=f.get("purpose") or ex.purpose or "",
        bytes=int(f.get("bytes") or ex.file_bytes), created_at=created,
        expires_at=f.get("expires_at"), status=f.get("status") or "processed",
    )
    await asyncio.shield(_record(ctx, rec))
    return rec


async def store_file_upstream(ctx: "OperationContext", chunks: AsyncIterator[bytes], size: int) -> FileRecord:
    """A file the gateway already has (``size`` bytes, an Upload's parts) sent to a
    pass-through provider as one streamed files.create: the multipart body is framed here
    (``purpose``, the file, ``expires_after``), every chunk goes through the filters and the
    provider's upload rules before it is forwarded (a refused chunk is never sent: the
    upstream sees a truncated body and stores nothing), and the file is recorded as a tee's."""
    ex = ctx.ex
    assert ex.provider is not None
    driver = UploadDriver(ex, None, False, upload_chain(ctx.chain, ex), None)
    boundary = "sluicegate-" + new_id("", 24)
    # The client's filename in a quoted header parameter: no quote, backslash or control byte.
    filename = "".join("_" if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in ex.filename or "upload")
    fields = [("purpose", ex.purpose or "")]
    if ex.expires_after is not None:
        fields += [("expires_after[anchor]", "created_at"), ("expires_after[seconds]", str(ex.expires_after))]
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in fields)
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    ex.content_length = len(head) + size + len(tail)  # the upstream request's Content-Length

    async def body() -> AsyncIterator[bytes]:
        try:
            yield head
            driver.file_seen = True
            await driver._file_start()
            async for chunk in chunks:
                await driver._file_data(chunk)  # checked first, forwarded after
                yield chunk
            driver.chain.on_file_end(ex)
            await driver.chain.on_upload_complete(ex)
            yield tail
        except BaseException as exc:
            driver.failure = exc
            raise

    try:
        result = await ex.provider.upload_passthrough(ex, body(), f"multipart/form-data; boundary={boundary}")
    except BaseException as exc:
        if driver.failure is not None and driver.failure is not exc:
            raise driver.failure from None
        raise
    if driver.failure is not None:
        raise driver.failure
    return await _record_upstream(ctx, result)


async def _record(ctx: "OperationContext", rec: FileRecord) -> None:
    """Store the record with the final, atomic quota check; undo the stored file on failure."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    ex.object_id = rec.id
    if ex.batch_url is not None:
        # The endpoint of a batch file's lines, for batches.create to match (a key of its own
        # next to the provider's locator; providers read only their own keys).
        rec.location = {**rec.location, BATCH_URL_KEY: ex.batch_url}
    res = ex.reservation
    try:
        # The upload's reservation becomes the stored file in the same transaction.
        await ctx.store.add_file(rec, quota=ex.quota_limit, reservation=res.id if res is not None else None)
        if res is not None:
            res.converted()
    except BaseException as exc:
        try:
            await ex.provider.delete_file(ex, rec, rec.id)
        except Exception:
            log.exception("could not remove %s from provider %s after a failed commit", rec.id, rec.provider)
        if isinstance(exc, QuotaExceeded):
            raise quota_error(ex.tenant.name, exc.used, exc.adding, exc.quota) from None
        raise
