"""files.create: the multipart body streamed through the filter chain into the provider.

The body is read chunk by chunk; each chunk goes through the sans-IO multipart parser and
the resulting events through the filters; the next chunk is read only when the provider has
taken this one (back-pressure end to end). Two ways into a provider:

* **tee** (pass-through providers) — the raw client bytes go upstream unchanged, with the
  client's Content-Length, while the parser only observes them. Each chunk is parsed and
  checked *before* it is forwarded, so the chunk that would complete an invalid upload is
  never sent: the upstream sees a truncated body and stores nothing.
* **sink** (gateway-managed providers) — only the file's bytes go to a Sink (disk, S3, GCS…).

Any failure aborts: the sink's ``abort`` removes partial data, the upstream request is
closed, nothing is recorded, no quota is charged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, AsyncIterator

import orjson

from .body import client_chunks
from .errors import GatewayError, bad_request, quota_error
from .ids import new_id
from .limits import FORM_ALLOWANCE
from .multipart import Done, Field, FileData, FileEnd, FileStart, MultipartError, MultipartParser
from .reservations import UploadReservation
from .store.base import FileRecord, QuotaExceeded

if TYPE_CHECKING:
    from .context import OperationContext
    from .exchange import Exchange
    from .providers.sink import Sink

log = logging.getLogger("sluicegate.uploads")

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
MIN_EXPIRES, MAX_EXPIRES = 3600, 2_592_000
# Most form-field bytes held back before a pass-through upload connects upstream.
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
    """Feeds body chunks through the parser and the filters; in sink mode, into the sink."""

    def __init__(self, ctx: "OperationContext", parser: MultipartParser, sink_mode: bool) -> None:
        self.ctx = ctx
        self.ex = ctx.ex
        self.chain = ctx.chain
        self.parser = parser
        self.sink_mode = sink_mode
        self.sink: Sink | None = None
        self.file_id: str | None = None
        self.file_seen = False
        self.done = False
        self.anchor: str | None = None
        self.failure: BaseException | None = None
        self.parts: set[str] = set()   # names of the parts parsed so far (each allowed once)

    async def feed(self, chunk: bytes) -> None:
        ex = self.ex
        chain = self.chain
        ex.body_bytes += len(chunk)
        try:
            events = self.parser.feed(chunk)
        except MultipartError as exc:
            raise bad_request(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
        for ev in events:
            kind = type(ev)
            if kind is FileData:
                data = ev.data
                ex.file_bytes += len(data)
                chain.on_file_data(ex, data)
                if self.sink is not None:
                    await self.sink.write(data)
            elif kind is Field:
                self._field(ev.name, ev.value)
            elif kind is FileStart:
                await self._file_start(ev)
            elif kind is FileEnd:
                chain.on_file_end(ex)
            elif kind is Done:
                self.done = True
                await self._complete_checks()

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
        """One form field, and the one place of the field-ordering rule.

        Each field comes at most once (:meth:`_once`). ``purpose`` may come before the file
        part (the SDK's order) or after it (curl's); since it is set only once, a file is
        never checked under one purpose and stored under another. When it comes after the
        file, every rule that depends on it runs here, at once: the filters' ``on_field``
        (size_limit's batch limit, batch_jsonl's verdict on the already-parsed file), then
        the provider's ``check_upload`` (its purposes; for bedrock/vertex, that a batch file
        needed the purpose first).
        """
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
        if name == "purpose" and ex.file_started:
            ex.provider.check_upload(ex)

    async def _file_start(self, ev: FileStart) -> None:
        ex = self.ex
        if ev.name != "file":
            raise bad_request(f"Unexpected file part '{ev.name[:64]}'; the file must be sent as the 'file' field.",
                              param="file")
        self._once("file")
        self.file_seen = True
        ex.filename = ev.filename or "upload"
        ex.file_started = True
        self.chain.on_file_start(ex)
        ex.provider.check_upload(ex)
        if self.sink_mode:
            self.file_id = new_id("file-")
            self.sink = ex.sink = await ex.provider.open_sink(ex, self.file_id)

    async def _complete_checks(self) -> None:
        ex = self.ex
        if not self.file_seen:
            raise bad_request("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if ex.purpose is None:
            raise bad_request("Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter")
        if ex.expires_after is not None and self.anchor is None:
            raise bad_request("expires_after[anchor] is required with expires_after[seconds].", param="expires_after.anchor")
        await self.chain.on_upload_complete(ex)
        ex.provider.check_upload(ex)

    def finish(self) -> None:
        """End of body: a body that stopped before the closing boundary is malformed."""
        if not self.done:
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
    parser = MultipartParser(ctx.boundary, max_field_size=MAX_FIELD_SIZE)
    res = ex.reservation = UploadReservation(ctx.store, ex.tenant.name, ex.provider.name, ex.quota_limit)
    try:
        await _reserve_announced(ex, res)
        if ex.provider.passthrough:
            return await _tee_upload(ctx, parser, ex.request.headers.get("Content-Type") or "")
        return await _sink_upload(ctx, parser)
    finally:
        # Also on cancellation (the client went away): release() is shielded.
        await res.release()


async def _reserve_announced(ex: "Exchange", res: UploadReservation) -> None:
    """Reserve what Content-Length announces before reading the body: refused at once (429)
    unless at least the announced file size (body minus the form-field allowance) fits."""
    announced = ex.content_length or 0
    try:
        await res.open(announced, max(0, announced - FORM_ALLOWANCE))
    except QuotaExceeded as exc:
        raise quota_error(ex.tenant.name, exc.used, exc.adding, exc.quota) from None


async def _cover(ex: "Exchange", chunk: bytes) -> None:
    """Before a chunk goes in, hold quota for every file byte it may carry."""
    res = ex.reservation
    if res is not None and ex.file_bytes + len(chunk) > res.bytes:
        await res.cover(ex.file_bytes + len(chunk))


async def _sink_upload(ctx: "OperationContext", parser: MultipartParser) -> bytes:
    ex = ctx.ex
    driver = UploadDriver(ctx, parser, sink_mode=True)
    res = ex.reservation
    try:
        async for chunk in _client_chunks(ex):
            if driver.sink is not None and res is not None:
                # Where the partial data is, once the upload outlives the chunk that opened it
                # (an upload of one chunk commits at once: no write for it).
                await res.track(driver.file_id, driver.sink)
            await _cover(ex, chunk)
            await driver.feed(chunk)
        driver.finish()
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
    return orjson.dumps(rec.to_openai())


async def _tee_upload(ctx: "OperationContext", parser: MultipartParser, ctype: str) -> bytes:
    ex = ctx.ex
    driver = UploadDriver(ctx, parser, sink_mode=False)
    chunks = _client_chunks(ex).__aiter__()
    # Parse the form fields before connecting upstream (the SDK sends them first): a refused
    # purpose or expiry, or a provider rule broken at the file's start, never reaches it.
    head: list[bytes] = []
    held = 0
    ended = False
    while not ex.file_started and not driver.done and held < PREAMBLE_LIMIT:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            ended = True
            break
        await _cover(ex, chunk)
        await driver.feed(chunk)
        head.append(chunk)
        held += len(chunk)
    if ended:
        driver.finish()

    async def body() -> AsyncIterator[bytes]:
        try:
            while head:
                yield head.pop(0)
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
    f = result.file
    created = f.get("created_at") if isinstance(f.get("created_at"), int) else int(time.time())
    rec = FileRecord(
        id=f["id"], tenant=ex.tenant.name, provider=ex.provider.name, upstream_id=f["id"],
        filename=f.get("filename") or ex.filename or "upload", purpose=f.get("purpose") or ex.purpose or "",
        bytes=int(f.get("bytes") or ex.file_bytes), created_at=created,
        expires_at=f.get("expires_at"), status=f.get("status") or "processed",
    )
    await asyncio.shield(_record(ctx, rec))
    return orjson.dumps(f)


async def _record(ctx: "OperationContext", rec: FileRecord) -> None:
    """Store the record with the final, atomic quota check; undo the stored file on failure."""
    ex = ctx.ex
    ex.object_id = rec.id
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
