"""The Files API operations: create, list, retrieve, delete, content."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, AsyncIterator

import orjson
from aiohttp import web

from . import splice
from .batch_files import results_download, results_of
from .errors import GatewayError, bad_request
from .uploads import handle_upload

if TYPE_CHECKING:
    from .context import OperationContext
    from .exchange import Exchange
    from .splice import BodyHandover
    from .store.base import FileRecord

log = logging.getLogger("sluicegate.files")

MAX_LIST_LIMIT = 10_000  # OpenAI's list ``limit`` range is 1 … 10,000 (docs/provider-facts.md §1.5)
DOWNLOAD_CHUNK = 256 * 1024


async def files_create(ctx: "OperationContext") -> web.StreamResponse:
    return ctx.json_response(await handle_upload(ctx))


def _list_query(ex: "Exchange") -> dict[str, str]:
    q = ex.request.query
    out: dict[str, str] = {}
    if "limit" in q:
        try:
            limit = int(q["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise bad_request(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}.", param="limit")
        out["limit"] = str(limit)
    order = q.get("order")
    if order is not None:
        if order not in ("asc", "desc"):
            raise bad_request("order must be 'asc' or 'desc'.", param="order")
        out["order"] = order
    for key in ("after", "purpose"):
        if q.get(key):
            out[key] = q[key]
    return out


async def files_list(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    query = _list_query(ex)
    if ex.list_upstream:
        return ctx.json_response(await ex.provider.list_files(ex, query))
    recs, has_more = await ctx.store.list_files(
        ex.tenant.name, purpose=query.get("purpose"), limit=int(query.get("limit", MAX_LIST_LIMIT)),
        order=query.get("order", "desc"), after=query.get("after"), provider=ex.list_provider,
    )
    data = [r.to_openai() for r in recs]
    body = orjson.dumps({
        "object": "list", "data": data,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    })
    return ctx.json_response(body)


async def files_retrieve(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    rec = ex.file_record
    if rec is not None and results_of(rec) is not None:  # a gateway-run batch's results: the record is all
        return ctx.json_response(orjson.dumps(rec.to_openai()))
    return ctx.json_response(await ex.provider.retrieve_file(ex, rec, ex.object_id))


async def files_delete(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    rec = ex.file_record
    if rec is None:  # an id the gateway never recorded (admin / shared pass-through)
        return ctx.json_response(await ex.provider.delete_file(ex, None, ex.object_id))
    # Claim first: the store removes the row atomically and gives it to one caller only, so
    # of concurrent deletes of one id (any worker) exactly one reaches the provider; the
    # others are a 404, as for an id that is already gone.
    claimed = await ctx.store.delete_file(rec.id)
    if claimed is None:
        raise GatewayError(404, f"No such File object: {ex.object_id[:128]}", param="file_id", code="file_not_found")
    # Shielded: a client that disconnects now must not leave the row claimed and the bytes kept.
    return ctx.json_response(await asyncio.shield(_delete_claimed(ctx, claimed)))


async def _delete_claimed(ctx: "OperationContext", rec: "FileRecord") -> bytes:
    """Remove a claimed file's bytes. If that fails, the row is put back (quota unchanged,
    since the bytes are still stored) and the error goes to the client, who can retry: nothing
    is lost or left half-deleted. (A row put back whose bytes did go after all heals on the
    retry: the provider's 404 counts as already gone.)"""
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    if results_of(rec) is not None:
        # A gateway-run batch's results stay where the provider wrote them (its job's output);
        # the gateway file was only the record.
        return orjson.dumps({"id": ex.object_id, "object": "file", "deleted": True})
    try:
        return await ex.provider.delete_file(ex, rec, ex.object_id)
    except GatewayError as err:
        if err.status == 404:  # already gone at the provider: the row was all that was left
            return orjson.dumps({"id": ex.object_id, "object": "file", "deleted": True})
        await ctx.store.restore_file(rec)
        raise
    except BaseException:
        await ctx.store.restore_file(rec)
        raise


async def files_content(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    rec = ex.file_record
    if rec is not None and results_of(rec) is not None:
        dl = await results_download(ctx.store, ex.provider, rec)
    else:
        dl = await ex.provider.file_content(ex, rec, ex.object_id)
    chunks = dl.chunks
    if dl.path is not None:
        if not ctx.chain.observes_response_data:
            resp: web.StreamResponse = web.FileResponse(dl.path, chunk_size=DOWNLOAD_CHUNK,
                                                        headers={"Content-Type": dl.content_type})
            ctx.before_send(resp)
            return resp
        # A filter reads the body: the file goes out chunk by chunk through it, not by sendfile.
        chunks = _file_chunks(dl.path)
    assert chunks is not None
    resp = web.StreamResponse(status=200, headers={"Content-Type": dl.content_type})
    if dl.length is not None:
        resp.content_length = dl.length
    elif dl.path is not None:
        resp.content_length = os.path.getsize(dl.path)
    ctx.before_send(resp)
    observe = ctx.chain.on_response_data if ctx.chain.observes_response_data else None
    try:
        await resp.prepare(ex.request)
        # No filter reads the bytes and both sockets are plain: the body goes kernel to kernel.
        client_fd = splice.plain_socket_fd(ex.request.transport) \
            if observe is None and dl.hand_over is not None and dl.length is not None else None
        handover = dl.hand_over() if client_fd is not None and dl.hand_over is not None else None
        if handover is not None and client_fd is not None:
            await _spliced(ex.request, handover, client_fd)
        else:
            async for chunk in chunks:
                if observe is not None:
                    observe(ex, chunk)
                await resp.write(chunk)
        await resp.write_eof()
    except BaseException as exc:
        # Headers are out: the only honest signal left is to cut the connection, so a
        # truncated body is never mistaken for a complete one.
        transport = ex.request.transport
        if transport is not None:
            transport.close()
        if isinstance(exc, asyncio.CancelledError):
            raise
        if not isinstance(exc, (ConnectionError, GatewayError, TimeoutError)):
            log.warning("download of %s from %s broke: %r", ex.object_id, ex.provider.name, exc)
        ex.error_code = "download_interrupted"
    finally:
        if dl.release is not None:
            await dl.release()
    return resp


async def _spliced(request: web.BaseRequest, handover: BodyHandover, client_fd: int) -> None:
    """The rest of a download moved from the upstream socket to the client's by splice(2)
    (proxy/splice.py): the pieces that came with the head first, through aiohttp's writer
    (which then has sent the head), the writer's buffer flushed, then the remaining bytes
    kernel to kernel."""
    moved_all = False
    try:
        writer = request.writer
        for piece in handover.pieces:
            await writer.write(piece)
        writer.send_headers()  # (aiohttp holds them back for the first body write)
        transport = request.transport
        assert transport is not None  # (client_fd came from it)
        await splice.flush(transport, client_fd)
        await splice.move(handover.fd, client_fd, handover.left, idle=handover.idle, deadline=handover.deadline)
        moved_all = True
    finally:
        handover.done(moved_all)


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:
        while chunk := await loop.run_in_executor(None, f.read, DOWNLOAD_CHUNK):
            yield chunk
