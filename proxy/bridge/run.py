"""The bridge's I/O: the Responses operations on a provider that has a dialect.

``create`` translates the request (the dialect), calls the provider through its upstream facade
(:meth:`~proxy.providers.base.Provider.bridge_call` / ``bridge_stream``), and answers with the
emitter's Response object or its SSE events, written as the provider's frames arrive — nothing
is buffered but the event a frame completes. Errors before the stream starts are OpenAI-shaped
JSON errors (the provider's status kept, as on every path); a failure once it is under way (an
error frame, a broken or stalled upstream) ends it with ``response.failed``. The turn is stored
(:mod:`.state`) before the client gets its end. A client that goes away cancels the handler, and
the ``finally`` closes the upstream call.

``retrieve`` / ``delete`` / ``cancel`` / ``input_items`` answer from the stored turn; the
provider is never called for them (the providers keep no state).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..errors import GatewayError
from ..ids import new_id
from ..store.base import ResponseRecord
from . import background, state
from .emitter import Emitter, EmitterError, end_of_frames, response_object, sse, whole
from .items import canonical_input, map_file_ids, parts_of
from .request import StoredFile

if TYPE_CHECKING:
    from ..context import OperationContext
    from ..providers.base import Provider
    from .events import Dialect, StreamDecoder

log = logging.getLogger("sluicegate.bridge")


def _sse_response(ctx: "OperationContext") -> web.StreamResponse:
    out = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    ctx.before_send(out)
    return out


async def _file_ids(ctx: "OperationContext", provider: "Provider",
                    items: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, StoredFile]]:
    """The provider's own id of each gateway file id the items name, and what the dialect
    needs to know of each (keyed by that id: where its bytes live, its name). The request's ids
    were checked by provider_route (tenant, provider); the history's were when they were sent,
    but may have been deleted since."""
    ids = {p["file_id"] for item in items for p in parts_of(item) if isinstance(p.get("file_id"), str)}
    found: dict[str, str] = {}
    stored: dict[str, StoredFile] = {}
    for file_id in ids:
        rec = await ctx.store.get_file(file_id)
        own = provider.bridge_file_id(rec) if rec is not None and rec.provider == provider.name else None
        if own is None:
            raise GatewayError(400, f"File {file_id[:128]} cannot be given to provider '{provider.name}' "
                                    "(deleted, or not a file it holds).", param="file_id", code="invalid_file")
        assert rec is not None
        found[file_id] = own
        stored[own] = StoredFile(uri=own, filename=rec.filename)
    return found, stored


async def create(ctx: "OperationContext", dialect: "Dialect") -> web.StreamResponse:
    ex = ctx.ex
    body = ex.json_body
    provider, tenant = ex.provider, ex.tenant
    assert body is not None and provider is not None and tenant is not None  # the pipeline and filters ran
    model = str(body.get("model"))
    ex.model = model
    keep = body.get("store", True) is not False
    stream = body.get("stream") is True
    in_background = body.get("background") is True
    if in_background and not keep:
        raise GatewayError(400, "background: true needs store: true (the gateway keeps the turn for retrieve).",
                           param="background", code="invalid_value")
    if in_background and stream:
        raise GatewayError(400, "stream is not supported with background: true on this provider yet; "
                                "create it in the background and poll retrieve.", param="stream",
                           code="unsupported_parameter")
    input_items = state.with_ids(canonical_input(body.get("input")))
    previous = body.get("previous_response_id")
    history = await state.history(ctx.store, previous, tenant.name) if isinstance(previous, str) else []
    files, stored = await _file_ids(ctx, provider, history + input_items)
    resolve = files.__getitem__
    dialect = dialect.for_files(stored)
    call = dialect.build_call({**body, "input": map_file_ids(input_items, resolve)}, map_file_ids(history, resolve),
                              model, stream=stream or in_background)
    response = response_object(body, response_id=new_id("resp_", 40), model=model, provider_type=provider.type)
    ex.response_id = response["id"]
    record = ResponseRecord(id=response["id"], tenant=tenant.name, provider=provider.name, model=model,
                            created_at=response["created_at"])

    async def finish(em: Emitter) -> None:
        ex.usage = em.response.get("usage")
        if em.response["status"] == "failed":      # for the access log and metrics
            ex.error_code = ex.error_code or "upstream_stream_error"
        if keep:
            await state.save(ctx.store, record, em.response, input_items, em.events)

    if in_background:
        started = await background.start(ctx.store, ex, provider, dialect, call, response, record, input_items,
                                         ctx.limits.background_concurrency)
        return ctx.json_response(orjson.dumps(started))
    if not stream:
        answer = await provider.bridge_call(ex, call)
        em = whole(response, dialect.decode_whole(answer))
        if em.response["status"] == "failed":
            err = em.response["error"] or {}
            raise GatewayError(502, str(err.get("message")), code="upstream_bad_response")
        await finish(em)
        return ctx.json_response(orjson.dumps(em.response))

    frames = await provider.bridge_stream(ex, call)   # a refusal here is a JSON error, before any event
    em = Emitter(response)
    decoder = dialect.stream_decoder()
    out = _sse_response(ctx)
    try:
        await out.prepare(ex.request)
        await out.write(b"".join(sse(e) for e in em.start()))
        ex.first_byte_at = time.perf_counter()
        try:
            async for frame in frames:
                events: list[dict[str, Any]] = []
                for e in decoder.feed(frame):
                    events += em.feed(e)
                    if em.finished:
                        break
                if em.finished:
                    await finish(em)     # stored before the client sees the end
                    await out.write(b"".join(sse(e) for e in events))
                    break
                if events:
                    await out.write(b"".join(sse(e) for e in events))
        except GatewayError as err:         # the upstream broke or stalled mid-stream
            ex.error_code = "upstream_stream_error"
            log.warning("bridged stream from %s failed: %s", provider.name, err.message)
            events = _ended(em, decoder, err.message)
        except EmitterError as err:         # the provider broke the event order
            log.warning("bridged stream from %s: %s", provider.name, err)
            events = em.fail("server_error", f"The provider's stream could not be translated: {err}")
        else:
            events = _ended(em, decoder, f"The stream from provider '{provider.name}' ended before the response "
                                         "was complete.")
        if events:
            await finish(em)
            await out.write(b"".join(sse(e) for e in events))
        await out.write_eof()
    finally:
        # Finished, failed, or the client is gone (the handler cancelled): close the upstream call.
        await frames.aclose()
    return out


def _ended(em: Emitter, decoder: "StreamDecoder", reason: str) -> list[dict[str, Any]]:
    """The provider's frames ended or broke before a terminal event: what the decoder still
    completes, else the turn fails for ``reason``."""
    try:
        events = end_of_frames(em, decoder)
    except EmitterError as err:
        return em.fail("server_error", f"The provider's stream could not be translated: {err}")
    return events if em.finished else events + em.fail("server_error", reason)


# --------------------------------------------------------------------------- stored turns


async def _turn(ctx: "OperationContext") -> Any:
    ex = ctx.ex
    turn = await ctx.store.get_turn(ex.object_id or "") if ex.response_record is not None else None
    if turn is None or ex.tenant is None or turn.tenant != ex.tenant.name:
        raise GatewayError(404, f"No such Response object: {(ex.object_id or '')[:128]}", param="response_id",
                           code="response_not_found")
    return await background.settle_orphan(ctx.store, turn)


async def retrieve(ctx: "OperationContext", stream: bool) -> web.StreamResponse:
    turn = await _turn(ctx)
    ex = ctx.ex
    ex.response_id = turn.id
    if not stream:
        return ctx.json_response(orjson.dumps(turn.response))
    if turn.status in background.RUNNING:
        # its events are kept when it ends (the runner may be another replica's): poll until then
        raise GatewayError(400, "This background response is still running; its events can be replayed "
                                "with stream=true once it has finished.", param="stream", code="response_in_progress")
    raw = ex.request.query.get("starting_after")
    try:
        after = -1 if raw is None else int(raw)
    except ValueError:
        raise GatewayError(400, "starting_after must be an integer.", param="starting_after",
                           code="invalid_value") from None
    out = _sse_response(ctx)
    await out.prepare(ex.request)
    events = [e for e in turn.events or [] if e["sequence_number"] > after]
    await out.write(b"".join(sse(e) for e in events))
    await out.write_eof()
    return out


async def delete(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    await _turn(ctx)
    if not await ctx.store.delete_response(ex.object_id or ""):   # a concurrent delete won
        raise GatewayError(404, f"No such Response object: {(ex.object_id or '')[:128]}", param="response_id",
                           code="response_not_found")
    return ctx.json_response(orjson.dumps({"id": ex.object_id, "object": "response", "deleted": True}))


async def cancel(ctx: "OperationContext") -> web.StreamResponse:
    turn = await _turn(ctx)
    if turn.response.get("background") is not True:
        raise GatewayError(400, "Only background responses can be cancelled.", param="response_id",
                           code="invalid_request")
    turn = await background.cancel(ctx.store, turn)
    return ctx.json_response(orjson.dumps(turn.response))


async def input_items(ctx: "OperationContext") -> web.StreamResponse:
    turn = await _turn(ctx)
    return ctx.json_response(orjson.dumps(state.input_items_page(turn, ctx.ex.request.query)))

