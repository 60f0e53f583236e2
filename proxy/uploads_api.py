"""The Uploads API (``/v1/uploads``): a file of up to 8 GiB sent in parts, on every provider.

Four operations (docs/provider-facts.md §1.7): ``create`` (the declared ``bytes``, ``filename``,
``mime_type``, ``purpose``) → an Upload, ``pending`` for an hour; ``parts`` (multipart, one
``data`` part of at most 64 MiB; parts may arrive concurrently, at any replica) → an
``upload.part``; ``complete`` (``part_ids`` in file order, optional ``md5``) → the Upload,
``completed``, with its File; ``cancel`` → ``cancelled``.

* **Forwarding** providers (``openai``, ``azure``) forward the four calls; the gateway
  records the upload for its tenant at create and the completed File at complete.
* **Gateway-managed** providers store each part as it streams (never in memory) in the
  provider's part store (:meth:`~proxy.providers.base.Provider.part_store`), else on the
  gateway's disk (``<data_dir>/uploads``). At complete the parts become a normal gateway file:
  composed inside the provider's backend when the file goes there unchanged (not
  ``purpose=batch``), otherwise read in order and streamed through files.create's path
  (:func:`proxy.uploads.store_file`: the filters, ``batch_jsonl`` counting lines across parts,
  the provider's upload rules and sink, batch translation included). A pass-through upstream
  without an Uploads API (``groq``, ``Provider.forwards_uploads`` false) is treated the same
  way and gets the file as one streamed files.create (:func:`proxy.uploads.store_file_upstream`).

State is in the store (``uploads``, ``upload_parts``), so parts sent to different replicas
assemble. The declared ``bytes`` are reserved against the tenant's quota at create (a
reservation owned by the upload, :data:`proxy.reservations.UPLOAD_OWNER`) and settled at
complete (it becomes the file), cancel or expiry (released); proxy/upload_expiry.py expires
pending uploads with their parts and removes what a crash left on disk.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Mapping

import orjson
from aiohttp import web

from .body import client_chunks
from .errors import GatewayError, bad_request, quota_error
from .ids import new_id
from .limits import FORM_ALLOWANCE
from .multipart import Done, Field, FileData, FileEnd, FileStart, MultipartError, MultipartParser
from .providers.parts_local import LocalPartStore
from .reservations import UPLOAD_OWNER, UploadReservation
from .store.base import FileRecord, PartRecord, QuotaExceeded, UploadRecord
from .upload_parts import PartRef
from .uploads import (MAX_EXPIRES, MAX_FIELD_SIZE, MAX_FORM_PARTS, MIN_EXPIRES, PURPOSES, store_file,
                      store_file_upstream, upload_chain)
from .units import size_and_bytes

if TYPE_CHECKING:
    from .context import OperationContext
    from .exchange import Exchange
    from .providers.base import Provider
    from .providers.sink import SinkResult
    from .store.base import Store
    from .upload_parts import PartStore

log = logging.getLogger("sluicegate.uploads")

# OpenAI's limits (docs/provider-facts.md §1.7): a part "at most 64 MB", an Upload "at most 8 GB",
# pending for an hour. Read as binary units: the SDK's own part size is 64 MiB.
MAX_PART = 64 << 20
MAX_UPLOAD = 8 << 30
UPLOAD_TTL = 3600
MAX_PARTS = 10_000  # parts per upload (and part_ids per complete): bounds rows, not bytes
SPOOL = "uploads"  # <data_dir>/uploads: parts of providers without a part store of their own


def disk_parts(data_dir: str) -> LocalPartStore:
    """The gateway's own disk (``<data_dir>/uploads``), for the parts of providers without a
    part store (``anthropic``, ``groq``): they are only read, never composed."""
    return LocalPartStore(data_dir, uploads=os.path.join(data_dir, SPOOL))


def part_store_for(provider: "Provider", ex: "Exchange | None", data_dir: str) -> "PartStore":
    """Where this provider's parts wait: its own part store, else the gateway's disk (``ex``
    is None for the sweeper)."""
    own = provider.part_store(ex)
    return own if own is not None else disk_parts(data_dir)


# -- helpers ---------------------------------------------------------------------------------


def _refs(parts: list[PartRecord]) -> list[PartRef]:
    return [PartRef(part_id=p.id, bytes=p.bytes, location=p.location) for p in parts]


def _not_pending(up: UploadRecord, now: float) -> GatewayError:
    state = "expired" if up.status == "pending" and up.expired(now) else up.status
    if state == "completing":
        return GatewayError(409, f"Upload {up.id} is being completed by another request.",
                            param="upload_id", code="upload_completing")
    return bad_request(f"Upload {up.id} is {state}; only a pending Upload accepts this.",
                       param="upload_id", code=f"upload_{state}")


def _check_pending(up: UploadRecord) -> None:
    now = time.time()
    if up.status != "pending" or up.expired(now):
        raise _not_pending(up, now)


def _upload(ex: "Exchange") -> UploadRecord:
    up = ex.upload_record
    assert up is not None  # provider_route found it (unseen ids go to a pass-through provider)
    return up


def _json(ex: "Exchange") -> dict[str, Any]:
    body = ex.json_body
    assert body is not None  # a JSON operation: the pipeline parsed it
    return body


def _upstream_object(raw: bytes, provider: "Provider") -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ValueError
    except ValueError:
        raise GatewayError(502, f"Provider '{provider.name}' answered with an unreadable body.",
                           code="upstream_bad_response") from None
    return obj


# -- create ----------------------------------------------------------------------------------


def _create_fields(body: Mapping[str, Any]) -> tuple[str, str, int, str, int | None]:
    """``(filename, purpose, bytes, mime_type, file expires_after seconds)`` or a 400 naming
    the field (openai-python ``types/upload_create_params.py``)."""
    for name in ("bytes", "filename", "mime_type", "purpose"):
        if body.get(name) is None:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    filename, purpose, mime_type, declared = body["filename"], body["purpose"], body["mime_type"], body["bytes"]
    if not isinstance(filename, str) or not filename or len(filename) > 1024:
        raise bad_request("filename must be a non-empty string.", param="filename", code="invalid_type")
    if not isinstance(mime_type, str) or not mime_type:
        raise bad_request("mime_type must be a non-empty string.", param="mime_type", code="invalid_type")
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        shown = purpose[:64] if isinstance(purpose, str) else repr(purpose)[:64]
        raise bad_request(f"'{shown}' is not a valid purpose; use one of: {', '.join(sorted(PURPOSES))}.",
                          param="purpose", code="invalid_purpose")
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
        raise bad_request("bytes must be a non-negative integer.", param="bytes", code="invalid_type")
    if declared > MAX_UPLOAD:
        raise GatewayError(413, f"An Upload can hold at most {size_and_bytes(MAX_UPLOAD)}.", param="bytes",
                           code="upload_too_large")
    seconds: int | None = None
    expires = body.get("expires_after")
    if expires is not None:
        if not isinstance(expires, dict) or expires.get("anchor") != "created_at":
            raise bad_request("expires_after.anchor must be 'created_at'.", param="expires_after.anchor")
        seconds = expires.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not MIN_EXPIRES <= seconds <= MAX_EXPIRES:
            raise bad_request(f"expires_after.seconds must be an integer from {MIN_EXPIRES} to {MAX_EXPIRES}.",
                              param="expires_after.seconds")
    return filename, purpose, declared, mime_type, seconds


async def uploads_create(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    provider = ex.provider
    filename, purpose, declared, mime_type, file_expires = _create_fields(_json(ex))
    created = int(time.time())
    upload_id = new_id("upload_")
    res = UploadReservation(ctx.store, ex.tenant.name, provider.name, ex.quota_limit,
                            owner=UPLOAD_OWNER + upload_id, heartbeat=created + UPLOAD_TTL)
    try:
        await res.open(declared, declared)
    except QuotaExceeded as exc:
        raise quota_error(ex.tenant.name, exc.used, exc.adding, exc.quota) from None
    try:
        if not provider.forwards_uploads:
            # The parts' unfinished S3 multipart uploads ({prefix}uploads/<upload id>/…) are
            # this upload's: the janitor's sweep of unowned ones leaves them alone.
            await res.locate({"file_id": upload_id})
        rec = UploadRecord(id=upload_id, tenant=ex.tenant.name, provider=provider.name, filename=filename,
                           purpose=purpose, bytes=declared, mime_type=mime_type, created_at=created,
                           expires_at=created + UPLOAD_TTL, reservation=res.id, file_expires_after=file_expires)
        body: bytes
        if provider.forwards_uploads:
            body = await provider.uploads_call(ex, "", ex.raw_body)
            obj = _upstream_object(body, provider)
            rec.id = rec.upstream_id = obj["id"]
            if isinstance(obj.get("created_at"), int):
                rec.created_at = obj["created_at"]
            if isinstance(obj.get("expires_at"), int):
                rec.expires_at = obj["expires_at"]
        await asyncio.shield(ctx.store.add_upload(rec))
    except BaseException:
        await res.release()
        raise
    ex.object_id = rec.id
    if not provider.forwards_uploads:
        body = orjson.dumps(rec.to_openai())
    return ctx.json_response(body)


# -- parts -----------------------------------------------------------------------------------


def _part_too_large() -> GatewayError:
    return GatewayError(413, f"A part can be at most {size_and_bytes(MAX_PART)}.", param="data",
                        code="part_too_large")


def _beyond_declared(up: UploadRecord) -> GatewayError:
    return bad_request(f"The parts of Upload {up.id} would exceed the {up.bytes} bytes it declared.",
                       param="data", code="upload_size_exceeded")


async def uploads_parts(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ctx.boundary is not None
    if ex.content_length is not None and ex.content_length > MAX_PART + FORM_ALLOWANCE:
        raise _part_too_large()  # before a byte of the body is read
    up = ex.upload_record
    if up is not None:
        _check_pending(up)
    if ex.provider.forwards_uploads:
        upstream_id = (up.upstream_id or up.id) if up is not None else ex.object_id or ""
        return ctx.json_response(await _part_passthrough(ctx, upstream_id))
    up = _upload(ex)
    store = part_store_for(ex.provider, ex, ctx.data_dir)
    try:
        part = await _receive_part(ctx, up, store)
    except OSError:
        # The upload was settled while this part was written (a cancel, the sweeper): its
        # files went with it. That, not the I/O error, is the client's answer.
        await _raise_if_settled(ctx, up)
        raise
    ref = PartRef(part_id=part.id, bytes=part.bytes, location=part.location)
    try:
        outcome = await asyncio.shield(ctx.store.add_part(part, max_total=up.bytes, max_parts=MAX_PARTS))
    except BaseException:
        await asyncio.shield(store.delete([ref]))
        raise
    if outcome != "ok":
        await asyncio.shield(store.delete([ref]))
        if outcome == "too_large":
            raise _beyond_declared(up)
        if outcome == "too_many":
            raise bad_request(f"Upload {up.id} has {MAX_PARTS} parts already.", param="data", code="too_many_parts")
        await _raise_if_settled(ctx, up)
        raise _not_pending(up, time.time())
    return ctx.json_response(orjson.dumps(part.to_openai()))


async def _raise_if_settled(ctx: "OperationContext", up: UploadRecord) -> None:
    latest = await ctx.store.get_upload(up.id)
    if latest is None or latest.status != "pending" or latest.expired(time.time()):
        raise _not_pending(latest or up, time.time())


async def _part_passthrough(ctx: "OperationContext", upload_id: str) -> bytes:
    """The client's multipart body, streamed upstream unchanged (the provider applies its own
    rules); the gateway bounds it at one part's size."""
    ex = ctx.ex
    assert ex.provider is not None

    failure: list[BaseException] = []

    async def body() -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in client_chunks(ex.request):
                size += len(chunk)
                if size > MAX_PART + FORM_ALLOWANCE:
                    raise _part_too_large()
                ex.file_bytes = size
                yield chunk
        except BaseException as exc:
            failure.append(exc)
            raise

    try:
        result = await ex.provider.upload_part_passthrough(
            ex, upload_id, body(), ex.request.headers.get("Content-Type", ""))
    except BaseException as exc:
        # The HTTP client wraps errors raised inside the body generator; report the real one.
        if failure and failure[0] is not exc:
            raise failure[0] from None
        raise
    return result


async def _receive_part(ctx: "OperationContext", up: UploadRecord, store: "PartStore") -> PartRecord:
    """Stream the body's one ``data`` part into the part store; on any failure nothing stays."""
    ex = ctx.ex
    assert ctx.boundary is not None
    parser = MultipartParser(ctx.boundary, max_field_size=MAX_FIELD_SIZE)
    part_id = new_id("part_")
    sink = None
    seen: set[str] = set()
    done = False
    # What the upload's other parts left of its declared size (checked again, atomically, when
    # the part is recorded): a part that cannot fit is cut off as soon as it passes it.
    room = up.bytes - sum(p.bytes for p in await ctx.store.upload_parts(up.id))
    try:
        async for chunk in client_chunks(ex.request):
            ex.body_bytes += len(chunk)
            try:
                events = parser.feed(chunk)
            except MultipartError as exc:
                raise bad_request(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
            for ev in events:
                if type(ev) is FileData:
                    assert sink is not None  # FileData follows its FileStart
                    ex.file_bytes += len(ev.data)
                    if ex.file_bytes > MAX_PART:
                        raise _part_too_large()
                    if ex.file_bytes > room:
                        raise _beyond_declared(up)
                    await sink.write(ev.data)
                elif type(ev) is FileStart or type(ev) is Field:
                    # As in files.create: each field once, a bounded number of them; only
                    # ``data`` is read, other fields are ignored.
                    name = ev.name
                    if name in seen:
                        raise bad_request(f"The form field '{name[:64]}' was sent more than once; send each field once.",
                                          param=name[:64], code="duplicate_field")
                    if len(seen) >= MAX_FORM_PARTS:
                        raise bad_request(f"The form has more than {MAX_FORM_PARTS} fields.", code="too_many_fields")
                    seen.add(name)
                    if name == "data":
                        if type(ev) is Field:
                            raise bad_request("The 'data' field must be a file part (with a filename).", param="data")
                        sink = store.open_part(up.id, part_id)
                elif type(ev) is FileEnd:
                    pass
                elif type(ev) is Done:
                    done = True
        if not done:
            try:
                parser.close()
            except MultipartError as exc:
                raise bad_request(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
            raise bad_request("Malformed multipart body: missing closing boundary.", code="invalid_multipart")
        if sink is None:
            raise bad_request("Missing required parameter: 'data'.", param="data", code="missing_required_parameter")
        result = await sink.complete()
    except BaseException:
        if sink is not None:
            await asyncio.shield(sink.abort())
        raise
    return PartRecord(id=part_id, upload_id=up.id, bytes=result.bytes, created_at=int(time.time()),
                      location=result.location)


# -- complete --------------------------------------------------------------------------------


def _complete_fields(body: Mapping[str, Any]) -> tuple[list[str], str | None]:
    part_ids, md5 = body.get("part_ids"), body.get("md5")
    if part_ids is None:
        raise bad_request("Missing required parameter: 'part_ids'.", param="part_ids", code="missing_required_parameter")
    if not isinstance(part_ids, list) or not all(isinstance(p, str) for p in part_ids):
        raise bad_request("part_ids must be an array of strings.", param="part_ids", code="invalid_type")
    if len(part_ids) > MAX_PARTS:
        raise bad_request(f"part_ids can name at most {MAX_PARTS} parts.", param="part_ids")
    if md5 is not None and not isinstance(md5, str):
        raise bad_request("md5 must be a string.", param="md5", code="invalid_type")
    return part_ids, md5 or None


def _ordered(up: UploadRecord, part_ids: list[str], parts: list[PartRecord]) -> list[PartRecord]:
    """The upload's parts in the order ``part_ids`` names them: each a part of this upload,
    each once, together exactly the declared bytes."""
    by_id = {p.id: p for p in parts}
    ordered: list[PartRecord] = []
    seen: set[str] = set()
    for i, pid in enumerate(part_ids):
        part = by_id.get(pid)
        if part is None:
            raise bad_request(f"part_ids[{i}]: no part {pid[:128]} in Upload {up.id}.",
                              param=f"part_ids[{i}]", code="invalid_part_id")
        if pid in seen:
            raise bad_request(f"part_ids[{i}]: part {pid[:128]} is named twice.", param=f"part_ids[{i}]",
                              code="duplicate_part_id")
        seen.add(pid)
        ordered.append(part)
    total = sum(p.bytes for p in ordered)
    if total != up.bytes:
        raise bad_request(f"The parts hold {total} bytes, but Upload {up.id} declared {up.bytes}.",
                          param="part_ids", code="upload_size_mismatch")
    return ordered


def _md5_mismatch(up: UploadRecord) -> GatewayError:
    return bad_request(f"The md5 of the assembled file does not match the md5 given for Upload {up.id}.",
                       param="md5", code="md5_mismatch")


async def _checked(chunks: AsyncIterator[bytes], md5: str | None, up: UploadRecord) -> AsyncGenerator[bytes, None]:
    """The parts' bytes, hashed on the way when an ``md5`` is given: a mismatch fails before
    the end of the file, so the sink is aborted and nothing is stored."""
    expected = md5.lower() if md5 else None
    digest = hashlib.md5(usedforsecurity=False) if expected else None
    async for chunk in chunks:
        if digest is not None:
            digest.update(chunk)
        yield chunk
    if digest is not None and digest.hexdigest() != expected:
        raise _md5_mismatch(up)


async def uploads_complete(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None
    part_ids, md5 = _complete_fields(_json(ex))
    if ex.provider.forwards_uploads:
        return ctx.json_response(await _complete_passthrough(ctx))
    up = _upload(ex)
    _check_pending(up)
    claimed = await ctx.store.move_upload(up.id, ("pending",), "completing")
    if claimed is None:
        latest = await ctx.store.get_upload(up.id)
        raise _not_pending(latest or up, time.time())
    try:
        parts = _ordered(claimed, part_ids, await ctx.store.upload_parts(up.id))
        rec = await _assemble(ctx, claimed, parts, md5)
    except BaseException:
        # The client may fix its part_ids and complete again: the upload stays pending.
        await asyncio.shield(ctx.store.move_upload(up.id, ("completing",), "pending"))
        raise
    await asyncio.shield(settle(ctx.store, part_store_for(ex.provider, ex, ctx.data_dir), claimed, "completed",
                                 rec.id, release=False))
    ex.object_id = up.id
    return ctx.json_response(orjson.dumps(claimed.to_openai("completed", rec.to_openai())))


async def _assemble(ctx: "OperationContext", up: UploadRecord, parts: list[PartRecord], md5: str | None) -> FileRecord:
    """The parts as one gateway file, recorded for the tenant with the upload's reservation."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None
    provider = ex.provider
    refs = _refs(parts)
    own = provider.part_store(ex)
    ex.purpose, ex.filename, ex.expires_after = up.purpose, up.filename, up.file_expires_after
    reservation = UploadReservation.held(ctx.store, ex.tenant.name, provider.name, ex.quota_limit,
                                         up.reservation or "", up.bytes)
    ex.reservation = reservation
    if own is not None and up.purpose != "batch":
        # Into the provider's backend unchanged: composed there, no byte through the gateway
        # (an md5 to check is the exception: the parts are read once to hash them). The rules
        # that need no bytes still run: the filters' and the provider's at the file's start.
        upload_chain(ctx.chain, ex).on_file_start(ex)
        if md5:
            async with aclosing(own.read(refs)) as raw, aclosing(_checked(raw, md5, up)) as hashed:
                async for _ in hashed:
                    pass
        file_id = new_id("file-")
        dest = own.destination(file_id, tenant=ex.tenant.name, filename=up.filename, purpose=up.purpose)
        # While S3 composes into a multipart upload at the file's key, the reservation owns it.
        await reservation.locate({"file_id": file_id})
        try:
            result = await own.compose(refs, dest)
        except BaseException:
            await asyncio.shield(reservation.locate({"file_id": up.id}))
            raise
        return await _record_composed(ctx, up, file_id, result, reservation)
    store = own if own is not None else disk_parts(ctx.data_dir)
    async with aclosing(store.read(refs)) as raw, aclosing(_checked(raw, md5, up)) as chunks:
        if provider.passthrough:  # an upstream without an Uploads API (groq): one streamed files.create
            return await store_file_upstream(ctx, chunks, up.bytes)
        return await store_file(ctx, chunks)


async def _record_composed(ctx: "OperationContext", up: UploadRecord, file_id: str, result: "SinkResult",
                           reservation: UploadReservation) -> FileRecord:
    """Record the file ``compose`` made at the part store's ``destination`` for ``file_id``
    (where the provider's own sink would put that file; ``location`` says where)."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None
    created = int(time.time())
    rec = FileRecord(id=file_id, tenant=ex.tenant.name, provider=ex.provider.name,
                     filename=up.filename, purpose=up.purpose, bytes=result.bytes, created_at=created,
                     location=result.location,
                     expires_at=created + up.file_expires_after if up.file_expires_after else None)
    try:
        await asyncio.shield(ctx.store.add_file(rec, quota=ex.quota_limit, reservation=reservation.id))
        reservation.converted()
    except BaseException as exc:
        try:
            await ex.provider.delete_file(ex, rec, rec.id)
        except Exception:
            log.exception("could not remove %s from provider %s after a failed commit", rec.id, rec.provider)
        if isinstance(exc, QuotaExceeded):
            raise quota_error(ex.tenant.name, exc.used, exc.adding, exc.quota) from None
        raise
    return rec


async def _complete_passthrough(ctx: "OperationContext") -> bytes:
    """Forward complete; the File it made is recorded for the tenant (it takes over the
    upload's reservation) and the upload settled."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None
    up = ex.upload_record
    upstream_id = (up.upstream_id or up.id) if up is not None else ex.object_id or ""
    raw = await ex.provider.uploads_call(ex, f"/{upstream_id}/complete", ex.raw_body)
    obj = _upstream_object(raw, ex.provider)
    f = obj.get("file")
    if up is None or obj.get("status") != "completed" or not isinstance(f, dict) or not isinstance(f.get("id"), str):
        return raw
    created = f.get("created_at")
    rec = FileRecord(
        id=f["id"], tenant=ex.tenant.name, provider=ex.provider.name, upstream_id=f["id"],
        filename=f.get("filename") or up.filename, purpose=f.get("purpose") or up.purpose,
        bytes=int(f.get("bytes") or up.bytes), created_at=created if isinstance(created, int) else int(time.time()),
        expires_at=f.get("expires_at"), status=f.get("status") or "processed",
    )
    # Quota was reserved at create and the file takes it over: no second check (the provider
    # already holds the file).
    try:
        await asyncio.shield(ctx.store.add_file(rec, quota=None, reservation=up.reservation))
    finally:
        await asyncio.shield(ctx.store.move_upload(up.id, ("pending", "completing"), "completed", file_id=rec.id))
    return raw


# -- cancel ----------------------------------------------------------------------------------


async def uploads_cancel(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None
    up = ex.upload_record
    if ex.provider.forwards_uploads:
        upstream_id = (up.upstream_id or up.id) if up is not None else ex.object_id or ""
        raw = await ex.provider.uploads_call(ex, f"/{upstream_id}/cancel", None)
        if up is not None:
            await asyncio.shield(settle(ctx.store, None, up, "cancelled", None, release=True))
        return ctx.json_response(raw)
    up = _upload(ex)
    _check_pending(up)
    claimed = await ctx.store.move_upload(up.id, ("pending",), "cancelled")
    if claimed is None:
        latest = await ctx.store.get_upload(up.id)
        raise _not_pending(latest or up, time.time())
    await asyncio.shield(settle(ctx.store, part_store_for(ex.provider, ex, ctx.data_dir), claimed, "cancelled",
                                 None, release=True))
    return ctx.json_response(orjson.dumps(claimed.to_openai("cancelled")))


async def settle(store: "Store", parts: "PartStore | None", up: UploadRecord, status: str, file_id: str | None,
                  *, release: bool) -> None:
    """The upload is over: its status, its parts gone (rows and bytes), its reservation
    released (cancel, expiry) or already the file's (complete)."""
    await store.move_upload(up.id, ("pending", "completing", status), status, file_id=file_id)
    removed = await store.delete_parts(up.id)
    if parts is not None:
        try:
            await parts.delete(_refs(removed))
            if isinstance(parts, LocalPartStore):
                parts.remove_upload(up.id)  # parts still being written when it ended, too
        except Exception:
            log.exception("could not remove the parts of upload %s", up.id)
    if release and up.reservation:
        await store.release_reservation(up.reservation)
