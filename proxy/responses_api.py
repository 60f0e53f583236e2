"""The Responses API: create (JSON or SSE), retrieve, delete, cancel, input items.

SSE streams pass through event by event, flushed as they arrive. A sans-IO observer
(:class:`SSEParser`) reads each chunk as it goes by and learns the response id (for tenancy
routing), the token usage and the last ``sequence_number``. The response's store record is
written concurrently from ``response.created`` on, so no event waits for the store — except
the chunk that ends the response (its terminal event, or the end of the stream), which goes
out only once the record is committed: a client that has the whole response can rely on the
gateway knowing its id, even if the gateway is killed the next moment. JSON answers likewise
wait for the commit before they are sent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from .bridge import run as bridge
from .errors import GatewayError, bad_request
from .providers.h1 import H1ProtocolError, H1Stream
from .store.base import ResponseRecord
from .transforms.sse import EventTooLarge, SSEParser

if TYPE_CHECKING:
    from .context import OperationContext
    from .exchange import Exchange

log = logging.getLogger("sluicegate.responses")

_STARTED = frozenset({"response.created", "response.queued", "response.in_progress"})
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


def inject_provider(body: bytes, provider_type: str) -> bytes:
    """Add ``"provider": "<type>"`` to a JSON object without re-serialising it."""
    i = body.find(b"{")
    if i < 0:
        return body
    rest = body[i + 1:].lstrip()
    field = b'"provider":' + orjson.dumps(provider_type)
    if rest.startswith(b"}"):
        return body[: i + 1] + field + body[i + 1:]
    return body[: i + 1] + field + b"," + body[i + 1:]


async def _record(ctx: "OperationContext", response_id: str) -> None:
    """Record who owns a new response; returns once the record is committed."""
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    ex.response_id = response_id
    if ex.response_record is None:
        try:
            await ctx.store.add_response(ResponseRecord(
                id=response_id, tenant=ex.tenant.name, provider=ex.provider.name, model=ex.model,
                created_at=int(time.time())))
        except Exception as exc:
            # The response exists upstream and the client gets it; without the record it is
            # reachable through the gateway only for callers allowed unseen ids (fail closed).
            log.error("could not record response %s: %s", response_id, type(exc).__name__)


async def _json_answer(ctx: "OperationContext", status: int, data: bytes, *, record: bool) -> web.Response:
    """A JSON Response object from upstream, to the client byte for byte plus ``provider``."""
    ex = ctx.ex
    assert ex.provider is not None  # routed before the operation ran
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise GatewayError(502, f"Provider '{ex.provider.name}' answered with a body that is not JSON.",
                           code="upstream_bad_response") from None
    if isinstance(obj, dict):
        ex.usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
        ex.model = obj.get("model") or ex.model
        if record and isinstance(obj.get("id"), str):
            await _record(ctx, obj["id"])
    return ctx.json_response(inject_provider(data, ex.provider.type), status=status)


class _Observer:
    """Watches a copy of the SSE bytes; never blocks them."""

    def __init__(self, ctx: "OperationContext", record: bool) -> None:
        self.ctx, self.ex, self.record = ctx, ctx.ex, record
        self.parser: SSEParser | None = SSEParser()
        self.last_data: bytes | None = None
        self.events = 0
        self.terminal = False
        self.tasks: list[asyncio.Task[None]] = []

    def feed(self, chunk: bytes) -> None:
        if self.parser is None:
            return
        try:
            events = self.parser.feed(chunk)
        except EventTooLarge:
            self.parser = None  # stop observing; the stream itself is unaffected
            return
        for ev in events:
            self.events += 1
            if ev.data[:6] == b"[DONE]":
                continue
            self.last_data = ev.data
            name = ev.event
            if name is None or name in _STARTED or name in _TERMINAL:
                self._inspect(ev.data)

    def _inspect(self, data: bytes) -> None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        response = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if kind in _STARTED and response and self.ex.response_id is None and isinstance(response.get("id"), str):
            if self.record:
                # Recorded concurrently: the next chunk is not held back for the store.
                self.tasks.append(asyncio.ensure_future(_record(self.ctx, response["id"])))
            else:
                self.ex.response_id = response["id"]
        if kind in _TERMINAL:
            self.terminal = True
            if response and isinstance(response.get("usage"), dict):
                self.ex.usage = response["usage"]

    async def recorded(self) -> None:
        """Wait for the store records started so far (the end of the response waits for this)."""
        if self.tasks:
            await asyncio.gather(*self.tasks)

    def next_sequence_number(self) -> int:
        if self.last_data is not None:
            try:
                n = orjson.loads(self.last_data).get("sequence_number")
                if isinstance(n, int):
                    return n + 1
            except (orjson.JSONDecodeError, AttributeError):
                pass
        return self.events


def error_event(code: str, message: str, sequence_number: int) -> bytes:
    """An SSE ``error`` event in OpenAI's shape (no top-level ``error`` key: the SDK yields it
    as an event instead of raising; docs/provider-facts.md §2.7, §3.5)."""
    data = orjson.dumps({"type": "error", "code": code, "message": message, "param": None,
                         "sequence_number": sequence_number})
    return b"event: error\ndata: " + data + b"\n\n"


async def pipe_sse(ctx: "OperationContext", resp: H1Stream, *, record: bool) -> web.StreamResponse:
    ex = ctx.ex
    out = web.StreamResponse(status=resp.status, headers={
        "Content-Type": resp.headers.get("Content-Type", "text/event-stream"),
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    ctx.before_send(out)
    assert ex.provider is not None  # routed before the operation ran
    obs = _Observer(ctx, record)
    observe = ctx.chain.on_response_data if ctx.chain.observes_response_data else None
    first = True
    failure: str | None = None
    try:
        await out.prepare(ex.request)
        while True:
            try:
                chunk = await resp.read()
            except asyncio.TimeoutError as exc:
                # the transport's words: "no data from the upstream for N s" (timeouts.read) or
                # "... longer than its total timeout" (timeouts.total)
                failure = f"Provider '{ex.provider.name}' sent no event in time: {exc}."
                break
            except (ConnectionError, H1ProtocolError) as exc:
                failure = f"The stream from provider '{ex.provider.name}' broke: {type(exc).__name__}."
                break
            if not chunk:
                break
            obs.feed(chunk)  # sans-IO, nothing held back ...
            if obs.terminal:
                await obs.recorded()  # ... but the end goes out only once the record is durable
            if observe is not None:
                observe(ex, chunk)
            await out.write(chunk)
            if first:
                ex.first_byte_at = time.perf_counter()
                first = False
        await obs.recorded()
        if failure is None and not obs.terminal:
            failure = f"The stream from provider '{ex.provider.name}' ended before the response was complete."
        if failure is not None:
            ex.error_code = "upstream_stream_error"
            log.warning("%s (exchange %s)", failure, ex.response_id or ex.object_id or "-")
            await out.write(error_event("upstream_error", failure, obs.next_sequence_number()))
        await out.write_eof()
    finally:
        # Client gone, cancelled or finished: the upstream stream is closed now, so no
        # generation keeps running through the gateway.
        # A fully read body has already gone back to the pool; anything else is cut.
        resp.close()
        if obs.tasks:
            await asyncio.gather(*obs.tasks, return_exceptions=True)
    return out


async def responses_create(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    body = ex.json_body
    raw = ex.raw_body
    assert body is not None and raw is not None  # a JSON operation: the pipeline read them
    assert ex.provider is not None  # routed before the operation ran
    dialect = ex.provider.responses_dialect()
    if dialect is not None:   # a provider without a Responses API: the gateway runs the turn
        return await bridge.create(ctx, dialect)
    if ex.provider.prepare_response_body(body) or ex.json_changed:
        raw = orjson.dumps(body)
    ex.model = body.get("model")
    # ``store: false``: the provider keeps nothing, so the id can never be retrieved, deleted or
    # continued (``previous_response_id``); a record of its owner would be a commit per request
    # for nothing (issue 10).
    record = body.get("store") is not False
    if body.get("stream") is True:
        resp = await ex.provider.open_responses(ex, "POST", "", body=raw, query="", stream=True)
        return await pipe_sse(ctx, resp, record=record)
    status, data = await ex.provider.call_responses(ex, "POST", "", body=raw, query="")
    return await _json_answer(ctx, status, data, record=record)


def _raw_query(ex: "Exchange") -> str:
    """The query string as the client encoded it: the decoded form (``request.query_string``)
    would splice ``&``, ``#``, control bytes and non-ASCII into the upstream request target."""
    return ex.request.rel_url.raw_query_string


def _stream_flag(ex: "Exchange") -> bool:
    """``?stream=`` of a retrieve: the gateway reads the answer as SSE or as JSON by it, so only
    the values every upstream reads the same way pass (``1`` or ``True`` streams on some and not
    on others: the answer would then be misread, a 502)."""
    values = ex.request.query.getall("stream", [])
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise bad_request("stream must be given once, as 'true' or 'false'.", param="stream", code="invalid_value")
    return values[0] == "true"


async def responses_retrieve(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None  # routed before the operation ran
    ex.response_id = ex.object_id
    if ex.provider.responses_dialect() is not None:
        return await bridge.retrieve(ctx, _stream_flag(ex))
    query = _raw_query(ex)
    if _stream_flag(ex):
        resp = await ex.provider.open_responses(ex, "GET", f"/{ex.object_id}", body=None, query=query, stream=True)
        return await pipe_sse(ctx, resp, record=False)
    status, data = await ex.provider.call_responses(ex, "GET", f"/{ex.object_id}", body=None, query=query)
    return await _json_answer(ctx, status, data, record=False)


async def responses_delete(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    ex.response_id = ex.object_id
    if ex.provider.responses_dialect() is not None:
        return await bridge.delete(ctx)
    status, data = await ex.provider.call_responses(ex, "DELETE", f"/{ex.object_id}", body=None,
                                                    query=_raw_query(ex))
    if ex.response_record is not None:
        await ctx.store.delete_response(ex.object_id)
    return ctx.json_response(data, status=status)


async def responses_cancel(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None  # routed before the operation ran
    ex.response_id = ex.object_id
    if ex.provider.responses_dialect() is not None:
        return await bridge.cancel(ctx)
    status, data = await ex.provider.call_responses(ex, "POST", f"/{ex.object_id}/cancel", body=None,
                                                    query=_raw_query(ex))
    return await _json_answer(ctx, status, data, record=False)


async def responses_input_items(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None  # routed before the operation ran
    ex.response_id = ex.object_id
    if ex.provider.responses_dialect() is not None:
        return await bridge.input_items(ctx)
    status, data = await ex.provider.call_responses(ex, "GET", f"/{ex.object_id}/input_items", body=None,
                                                    query=_raw_query(ex))
    return ctx.json_response(data, status=status)
