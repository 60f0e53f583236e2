"""One exchange, from the router's verdict to the last byte: read body → filters → operation → response.

The listener (``proxy.http_server``) parses the request, the router (``proxy.routes``) names
the operation, and :class:`Pipeline` does the rest, the same way for every operation:

1. the body, as the operation declares it in :data:`OPERATIONS` — ``JSON`` is read whole
   (bounded by ``limits.max_json_body``) and parsed into ``ex.json_body`` before the filters
   see the request (routing reads ids and the model prefix in it); ``MULTIPART`` is a stream
   the operation reads through the filters' upload hooks, so only its boundary is checked
   here, once the request filters have accepted the request; ``NONE`` reads nothing;
2. the request filters (``on_request``), in the configured order;
3. the operation, given an :class:`~proxy.context.OperationContext` (never the gateway);
4. the answer: an error raised anywhere becomes the OpenAI-shaped body, and every answer goes
   through ``before_send`` (the response filters); ``on_exchange_end`` runs always, once.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from . import batches_api, files_api, responses_api, uploads_api
from .body import arrived_body, client_chunks
from .body_checks import check_body
from .context import OperationContext
from .errors import GatewayError, bad_request
from .exchange import Exchange
from .multipart import MultipartError, boundary_from_content_type

if TYPE_CHECKING:
    from filters.base import ChainFactory

    from .config import LimitsConfig
    from .providers.base import Provider
    from .store.base import Store

log = logging.getLogger("sluicegate")


class Body(enum.Enum):
    NONE = "none"            # nothing read (a body sent anyway is left to the server to drain)
    JSON = "json"            # one JSON object, read whole, at most limits.max_json_body bytes
    MULTIPART = "multipart"  # multipart/form-data, streamed by the operation through the filters


@dataclass(frozen=True, slots=True)
class Operation:
    run: Callable[[OperationContext], Awaitable[web.StreamResponse]]
    body: Body = Body.NONE
    # The operation streams a file through the upload hooks without a multipart body of its
    # own (uploads.complete assembles the parts through the same path as files.create).
    streams_file: bool = False


OPERATIONS: dict[str, Operation] = {
    "files.create": Operation(files_api.files_create, Body.MULTIPART),
    "files.list": Operation(files_api.files_list),
    "files.retrieve": Operation(files_api.files_retrieve),
    "files.delete": Operation(files_api.files_delete),
    "files.content": Operation(files_api.files_content),
    "responses.create": Operation(responses_api.responses_create, Body.JSON),
    "responses.retrieve": Operation(responses_api.responses_retrieve),
    "responses.delete": Operation(responses_api.responses_delete),
    "responses.cancel": Operation(responses_api.responses_cancel),
    "responses.input_items": Operation(responses_api.responses_input_items),
    "batches.create": Operation(batches_api.batches_create, Body.JSON),
    "batches.list": Operation(batches_api.batches_list),
    "batches.retrieve": Operation(batches_api.batches_retrieve),
    "batches.cancel": Operation(batches_api.batches_cancel),
    "uploads.create": Operation(uploads_api.uploads_create, Body.JSON),
    "uploads.parts": Operation(uploads_api.uploads_parts, Body.MULTIPART),
    "uploads.complete": Operation(uploads_api.uploads_complete, Body.JSON, streams_file=True),
    "uploads.cancel": Operation(uploads_api.uploads_cancel),
}


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is too large: the limit is {limit} bytes.", code="request_too_large")


async def read_json_body(ex: Exchange, limit: int) -> None:
    """Read and parse a JSON object body (at most ``limit`` bytes) into ex.json_body / ex.raw_body."""
    req = ex.request
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    raw = arrived_body(req)  # a small body is almost always in with the headers: no await
    if raw is None:
        parts: list[bytes] = []
        size = 0
        async for chunk in client_chunks(req):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        raw = b"".join(parts)
    elif len(raw) > limit:
        raise _too_large(limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request. It must be a JSON object.",
                          code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    check_body(ex.operation, body)
    ex.json_body = body
    ex.raw_body = raw


def multipart_boundary(ex: Exchange) -> bytes:
    try:
        return boundary_from_content_type(ex.request.headers.get("Content-Type"))
    except MultipartError as exc:
        raise bad_request(f"{ex.operation} needs a multipart/form-data body: {exc}",
                          code="invalid_content_type") from None


class Pipeline:
    """Runs exchanges. Built once by the gateway with what operations and filters may use."""

    def __init__(self, chains: "ChainFactory", store: "Store", limits: "LimitsConfig",
                 operations: dict[str, Operation] | None = None, *, data_dir: str = ".",
                 providers: "Mapping[str, Provider] | None" = None) -> None:
        self.chains = chains
        self.store = store
        self.limits = limits
        self.data_dir = data_dir
        self.operations = OPERATIONS if operations is None else operations
        self.providers: Mapping[str, Provider] = providers or {}

    async def handle(self, request: web.BaseRequest, operation: str, object_id: str | None) -> web.StreamResponse:
        op = self.operations[operation]
        ex = Exchange(request, operation, object_id)
        chain = self.chains.create(upload=op.body is Body.MULTIPART or op.streams_file)
        ctx = OperationContext(ex, chain, self.store, self.limits, self.data_dir, self.providers)
        try:
            try:
                if op.body is Body.JSON:
                    await read_json_body(ex, self.limits.max_json_body)
                await chain.on_request(ex)
                if op.body is Body.MULTIPART:
                    ctx.boundary = multipart_boundary(ex)
                return await op.run(ctx)
            except GatewayError as err:
                return ctx.failed(err)
            except Exception:
                log.exception("unhandled error in %s", operation)
                return ctx.failed(GatewayError(500, "The gateway failed to handle the request.",
                                               code="internal_error", retryable=True))
        except asyncio.CancelledError:
            ex.status = ex.status or 499  # cancelled: the client went away (nginx's "client closed request")
            raise
        finally:
            ex.ended = time.perf_counter()
            await chain.on_exchange_end(ex)
