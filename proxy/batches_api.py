"""The Batches API: create, retrieve, list, cancel (``/v1/batches``), on every provider that
runs batches, routed by the input file's provider (``provider_route``: the recorded
``input_file_id`` routes ``create``, the recorded batch id the rest; no header needed).

Two families (proxy/providers/base.py):

* **pass-through** (openai, azure, groq): ``/batches`` is forwarded and the provider's batch
  object goes back to the client unchanged. The gateway records the batch for the tenant
  that created it, and the moment a batch object carrying ``output_file_id`` /
  ``error_file_id`` passes through (retrieve, list, cancel), records those files for that
  tenant (:meth:`Store.adopt_file`), so ``files.content`` works for it without ``admin``.
* **gateway-run** (a provider whose ``batch_runner()`` is not None): ``create`` submits the
  job (:class:`~proxy.batch_runner.BatchRunner`) and stores its opaque state; ``retrieve``
  and ``list`` poll it — at most once per second per batch across replicas (the store's
  ``claim_batch_poll``) — and, once it ends with results, record its output and error files
  (proxy/batch_files.py) whose content the runner streams.

Every check on a create runs before anything is created upstream (OpenAI-shaped 400s naming
the parameter): the input file's purpose, ``endpoint`` (one of OpenAI's, and one the
provider runs), ``completion_window``, ``metadata`` (≤ 16 pairs, keys ≤ 64, values ≤ 512
characters), ``output_expires_after``. A batch, its input, output and error files belong to
the tenant that created it: anyone else gets a 404 on every operation.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from .batch_files import Kind, result_file_id, results_location
from .errors import GatewayError, bad_request
from .ids import is_wellformed_id, new_id
from .providers.openai import OPENAI_BATCH_ENDPOINTS
from .store.base import BATCH_URL_KEY, TERMINAL_BATCH_STATUSES, BatchRecord, FileRecord

if TYPE_CHECKING:
    from .batch_runner import BatchProgress, BatchRunner
    from .context import OperationContext
    from .exchange import Exchange
    from .providers.base import Provider

log = logging.getLogger("sluicegate.batches")

# docs/provider-facts.md §1.9
STATUSES = frozenset({"validating", "failed", "in_progress", "finalizing", "completed", "expired",
                      "cancelling", "cancelled"})
TERMINAL = frozenset(TERMINAL_BATCH_STATUSES)
TIMESTAMPS = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
              "cancelling_at", "cancelled_at")
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
OUTPUT_EXPIRY_RANGE = (3600, 2_592_000)
LIST_DEFAULT, LIST_MAX = 20, 100
WINDOW_SECONDS = 24 * 3600
POLL_INTERVAL_MS = 1000   # one provider poll per batch per second, across replicas
REFRESH_CONCURRENCY = 8   # provider calls in flight while a listing brings its page up to date


# -- create: the checks ---------------------------------------------------------------------

def check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("Invalid type for 'metadata': expected an object of string values.", param="metadata",
                          code="invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise bad_request(f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} key-value pairs, got {len(value)}.",
                          param="metadata", code="invalid_value")
    for key, v in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(f"Invalid 'metadata': keys are at most {MAX_METADATA_KEY} characters, got one of "
                              f"{len(key)}.", param="metadata", code="invalid_value")
        if not isinstance(v, str):
            raise bad_request(f"Invalid type for 'metadata.{key[:64]}': expected a string.",
                              param=f"metadata.{key[:64]}", code="invalid_type")
        if len(v) > MAX_METADATA_VALUE:
            raise bad_request(f"Invalid 'metadata.{key[:64]}': values are at most {MAX_METADATA_VALUE} characters, "
                              f"got {len(v)}.", param=f"metadata.{key[:64]}", code="invalid_value")
    return value


def check_output_expiry(value: Any) -> int | None:
    """``output_expires_after`` → seconds after an output file's creation (None: absent)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("Invalid type for 'output_expires_after': expected an object.",
                          param="output_expires_after", code="invalid_type")
    if value.get("anchor") != "created_at":
        raise bad_request("Invalid 'output_expires_after.anchor': the only anchor is 'created_at'.",
                          param="output_expires_after.anchor", code="invalid_value")
    seconds = value.get("seconds")
    lo, hi = OUTPUT_EXPIRY_RANGE
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not lo <= seconds <= hi:
        raise bad_request(f"Invalid 'output_expires_after.seconds': expected an integer from {lo} to {hi}.",
                          param="output_expires_after.seconds", code="invalid_value")
    return seconds


def check_create(body: dict[str, Any], provider: "Provider") -> tuple[dict[str, str] | None, int | None]:
    """The body's checks that need no store (check_body saw the three required strings):
    ``(metadata, output expiry seconds)``."""
    endpoint = body["endpoint"]
    if endpoint not in OPENAI_BATCH_ENDPOINTS:
        raise bad_request(f"Invalid 'endpoint': '{endpoint[:128]}'. Supported: {', '.join(sorted(OPENAI_BATCH_ENDPOINTS))}.",
                          param="endpoint", code="invalid_value")
    if endpoint not in provider.batch_endpoints:
        raise bad_request(f"Provider '{provider.name}' (type {provider.type}) does not run '{endpoint}' batches; "
                          f"it runs {', '.join(sorted(provider.batch_endpoints))}.", param="endpoint",
                          code="unsupported_value")
    window = body["completion_window"]
    if not provider.accepts_completion_window(window):
        raise bad_request(f"Invalid 'completion_window': '{window[:32]}'. Provider '{provider.name}' accepts "
                          f"{'24h to 7d' if provider.type == 'groq' else '24h'}.", param="completion_window",
                          code="invalid_value")
    return check_metadata(body.get("metadata")), check_output_expiry(body.get("output_expires_after"))


def _batch_provider(provider: "Provider", operation: str) -> "BatchRunner | None":
    """The provider's runner (gateway-run), None for a pass-through one; a 400 for neither."""
    runner = provider.batch_runner()
    if runner is None and not provider.batch_endpoints:
        raise provider.unsupported(operation)
    return runner


async def batches_create(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    body, raw = ex.json_body, ex.raw_body
    assert body is not None and raw is not None and ex.provider is not None and ex.tenant is not None
    provider = ex.provider
    runner = _batch_provider(provider, ex.operation)
    metadata, output_expiry = check_create(body, provider)
    input_id: str = body["input_file_id"]
    # provider_route has checked the id: recorded → this tenant's, on this provider; unseen →
    # only for callers that may reach unseen ids (the upstream then judges it).
    input_rec = await ctx.store.get_file(input_id)
    if input_rec is not None and input_rec.purpose != "batch":
        raise bad_request(f"Invalid 'input_file_id': {input_id[:128]} has purpose '{input_rec.purpose}'; a batch's "
                          "input file must be uploaded with purpose 'batch'.", param="input_file_id",
                          code="invalid_file_purpose")
    file_url = input_rec.location.get(BATCH_URL_KEY) if input_rec is not None else None
    if isinstance(file_url, str) and file_url != body["endpoint"]:
        raise bad_request(f"Invalid 'endpoint': the requests in {input_id[:128]} are for '{file_url}', not "
                          f"'{body['endpoint'][:128]}'; a batch runs the endpoint its file's lines name.",
                          param="endpoint", code="invalid_value")
    now = int(time.time())
    rec = BatchRecord(id="", tenant=ex.tenant.name, provider=provider.name, input_file_id=input_id,
                      endpoint=body["endpoint"], completion_window=body["completion_window"], created_at=now,
                      metadata=metadata, output_expires_after=output_expiry)
    if runner is None:
        _, data = await provider.call_batches(ex, "POST", "", body=orjson.dumps(body) if ex.json_changed else raw,
                                              query="")
        obj = _batch_object(provider, data)
        rec.id = rec.upstream_id = obj["id"]
        if isinstance(obj.get("created_at"), int):
            rec.created_at = obj["created_at"]
        _absorb(rec, obj)
        await asyncio.shield(_add(ctx, rec))
        await _adopt_outputs(ctx, rec, obj)
        return ctx.json_response(data)
    if input_rec is None:  # gateway-run providers serve no unseen ids: provider_route said 404
        raise GatewayError(404, f"No such File object: {input_id[:128]}", param="input_file_id", code="file_not_found")
    rec.id = new_id("batch_")
    rec.timestamps["expires_at"] = now + WINDOW_SECONDS
    rec.job = await runner.submit_batch(batch_id=rec.id, input_file=input_rec, endpoint=rec.endpoint,
                                        metadata=metadata or {})
    await asyncio.shield(_add(ctx, rec))
    return ctx.json_response(orjson.dumps(render(rec)))


async def _add(ctx: "OperationContext", rec: BatchRecord) -> None:
    ex = ctx.ex
    ex.object_id = rec.id
    try:
        await ctx.store.add_batch(rec)
    except Exception as exc:
        # The batch exists upstream and the client gets it; without the record only callers
        # allowed unseen ids reach it (fail closed), as for an unrecorded response.
        log.error("could not record batch %s: %s", rec.id, type(exc).__name__)


# -- retrieve, cancel, list -----------------------------------------------------------------

async def _forwarded(ctx: "OperationContext", rec: BatchRecord | None, method: str, suffix: str) -> web.StreamResponse:
    """A pass-through provider's answer for the path's batch, recorded ids observed on the way."""
    ex = ctx.ex
    assert ex.provider is not None
    _, data = await ex.provider.call_batches(ex, method, f"/{_upstream_id(ex, rec)}{suffix}", body=None, query="")
    if rec is not None:
        await _observe(ctx, rec, _batch_object(ex.provider, data))
    return ctx.json_response(data)


async def batches_retrieve(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    rec = ex.batch_record
    runner = _batch_provider(ex.provider, ex.operation)
    if runner is None:
        return await _forwarded(ctx, rec, "GET", "")
    assert rec is not None  # gateway-run batches are always recorded
    if rec.status not in TERMINAL and await _claim(ctx, rec):
        await _poll(ctx, rec, runner, await runner.poll_batch(rec.job))
    return ctx.json_response(orjson.dumps(render(rec)))


async def batches_cancel(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.object_id is not None  # routed by the path's id
    rec = ex.batch_record
    runner = _batch_provider(ex.provider, ex.operation)
    if runner is None:
        return await _forwarded(ctx, rec, "POST", "/cancel")
    assert rec is not None  # gateway-run batches are always recorded
    if rec.status not in TERMINAL:
        await _poll(ctx, rec, runner, await runner.cancel_batch(rec.job))
    return ctx.json_response(orjson.dumps(render(rec)))


def _list_query(ex: "Exchange") -> tuple[int, str | None]:
    q = ex.request.query
    limit = LIST_DEFAULT
    if "limit" in q:
        try:
            limit = int(q["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= LIST_MAX:
            raise bad_request(f"limit must be an integer from 1 to {LIST_MAX}.", param="limit", code="invalid_value")
    after = q.get("after") or None
    if after is not None and not is_wellformed_id(after):
        raise bad_request("after must be a batch id.", param="after", code="invalid_value")
    return limit, after


async def batches_list(ctx: "OperationContext") -> web.StreamResponse:
    ex = ctx.ex
    assert ex.provider is not None and ex.tenant is not None  # the required filters ran first
    limit, after = _list_query(ex)
    if ex.list_upstream:
        return ctx.json_response(await _list_upstream(ctx, limit, after))
    recs, has_more = await ctx.store.list_batches(ex.tenant.name, limit=limit, after=after)
    calls = asyncio.Semaphore(REFRESH_CONCURRENCY)
    await asyncio.gather(*(_refresh(ctx, rec, calls) for rec in recs))
    data = [render(rec) for rec in recs]
    return ctx.json_response(orjson.dumps({
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more}))


async def _list_upstream(ctx: "OperationContext", limit: int, after: str | None) -> bytes:
    """A pass-through provider's own listing (callers allowed unseen ids, a header naming the
    provider); batches of it the gateway recorded are observed on the way."""
    ex = ctx.ex
    provider = ex.provider
    assert provider is not None  # list_upstream: a pass-through provider a header named
    query = {"limit": str(limit), **({"after": after} if after else {})}
    _, data = await provider.call_batches(ex, "GET", "", body=None, query=urlencode(query) if provider.batch_list_cursors else "")
    try:
        listing = orjson.loads(data)
    except orjson.JSONDecodeError:
        listing = None
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise GatewayError(502, f"Provider '{provider.name}' answered the batch list with an unreadable body.",
                           code="upstream_bad_response")
    items = [b for b in listing["data"] if isinstance(b, dict) and isinstance(b.get("id"), str)]
    if "has_more" not in listing:  # a provider without cursors (Groq) returns everything: paginate here
        items.sort(key=lambda b: b.get("created_at") or 0, reverse=True)
        if after:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        listing = {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
        items = listing["data"]
        listing["first_id"] = items[0]["id"] if items else None
        listing["last_id"] = items[-1]["id"] if items else None
        data = orjson.dumps(listing)
    for obj in items:
        rec = await ctx.store.get_batch(obj["id"])
        if rec is not None and rec.provider == provider.name:
            await _observe(ctx, rec, obj)
    return data


async def _refresh(ctx: "OperationContext", rec: BatchRecord, calls: asyncio.Semaphore) -> None:
    """Bring a listed batch up to date from its provider (bounded by the poll claim); a
    provider that fails leaves the stored state, which is listed."""
    if rec.status in TERMINAL:
        return
    batch_provider = ctx.providers.get(rec.provider)
    if batch_provider is None:
        return
    try:
        async with calls:
            if not await _claim(ctx, rec):
                return
            runner = batch_provider.batch_runner()
            if runner is not None:
                await _poll(ctx, rec, runner, await runner.poll_batch(rec.job))
                return
            _, data = await batch_provider.call_batches(ctx.ex, "GET", f"/{rec.upstream_id or rec.id}", body=None,
                                                        query="")
            await _observe(ctx, rec, _batch_object(batch_provider, data))
    except GatewayError as err:
        log.warning("could not refresh batch %s on %s: %s", rec.id, rec.provider, err.message)


async def _claim(ctx: "OperationContext", rec: BatchRecord) -> bool:
    now_ms = int(time.time() * 1000)
    if await ctx.store.claim_batch_poll(rec.id, now_ms, POLL_INTERVAL_MS):
        rec.polled_at = now_ms
        return True
    return False


def _upstream_id(ex: "Exchange", rec: BatchRecord | None) -> str:
    if rec is not None:
        return rec.upstream_id or rec.id
    assert ex.object_id is not None
    return ex.object_id


# -- pass-through: the provider's batch object ----------------------------------------------

def _batch_object(provider: "Provider", data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not is_wellformed_id(obj["id"]):
        raise GatewayError(502, f"Provider '{provider.name}' answered with a batch object the gateway cannot read.",
                           code="upstream_bad_response")
    return obj


def _absorb(rec: BatchRecord, obj: dict[str, Any]) -> None:
    """Copy a pass-through batch object's state into the record (the object itself is kept as
    ``job.object``: what a listing from the store shows)."""
    status = obj.get("status")
    if status in STATUSES:
        rec.status = status
    rec.timestamps = {k: obj[k] for k in TIMESTAMPS if isinstance(obj.get(k), int) and not isinstance(obj[k], bool)}
    counts = obj.get("request_counts")
    if isinstance(counts, dict):
        rec.request_counts = {k: counts[k] for k in ("total", "completed", "failed") if isinstance(counts.get(k), int)}
    errors = obj.get("errors")
    rec.errors = errors.get("data") if isinstance(errors, dict) and isinstance(errors.get("data"), list) else None
    rec.job = {"object": obj}


async def _observe(ctx: "OperationContext", rec: BatchRecord, obj: dict[str, Any]) -> None:
    """A pass-through batch object went by: adopt its new files, then store its state (in
    that order, so a failed adoption is retried the next time the object is seen). An object
    unchanged since the last one costs no write."""
    if rec.job.get("object") == obj:
        return
    await _adopt_outputs(ctx, rec, obj)
    _absorb(rec, obj)
    rec.output_file_id = _file_id(obj, "output_file_id") or rec.output_file_id
    rec.error_file_id = _file_id(obj, "error_file_id") or rec.error_file_id
    await _store_state(ctx, rec)


def _file_id(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and is_wellformed_id(value) else None


async def _adopt_outputs(ctx: "OperationContext", rec: BatchRecord, obj: dict[str, Any]) -> None:
    """Record the provider's output/error files of ``rec`` for its tenant, the first time a
    batch object names them. Their File object is asked for once, for its real ``bytes``,
    ``filename`` and expiry (the record lists them in ``files.list``); failing that, the
    record is kept with what the batch says."""
    ex = ctx.ex
    provider = ctx.providers.get(rec.provider)
    if provider is None:
        return
    for key, known in (("output_file_id", rec.output_file_id), ("error_file_id", rec.error_file_id)):
        file_id = _file_id(obj, key)
        if file_id is None or file_id == known:
            continue
        info: dict[str, Any] = {}
        try:
            info = orjson.loads(await provider.retrieve_file(ex, None, file_id))
        except (GatewayError, orjson.JSONDecodeError) as err:
            log.warning("could not read batch %s's %s on %s: %s", rec.id, key, rec.provider,
                        getattr(err, "message", type(err).__name__))
        info = info if isinstance(info, dict) else {}
        created = info.get("created_at")
        expires = info.get("expires_at")
        await ctx.store.adopt_file(FileRecord(
            id=file_id, tenant=rec.tenant, provider=rec.provider, upstream_id=file_id,
            filename=str(info.get("filename") or f"{rec.id}_{key[:-8]}.jsonl"), purpose="batch_output",
            bytes=int(info.get("bytes") or 0) if isinstance(info.get("bytes"), int) else 0,
            created_at=created if isinstance(created, int) else int(time.time()),
            expires_at=expires if isinstance(expires, int) else None))


# -- gateway-run: the runner's progress -----------------------------------------------------

async def _poll(ctx: "OperationContext", rec: BatchRecord, runner: "BatchRunner", progress: "BatchProgress") -> None:
    """Store a runner's progress; a terminal one with results first records its files (so a
    batch is stored terminal only with its files: a failure here is retried by the next poll)."""
    if progress.job is not None:
        rec.job = progress.job
    if progress.status in TERMINAL:
        now = int(time.time())
        expires = now + rec.output_expires_after if rec.output_expires_after else None
        kinds: tuple[tuple[Kind, bool], ...] = (("output", progress.has_output), ("error", progress.has_errors))
        for kind, present in kinds:
            if not present:
                continue
            file_id = result_file_id(rec.id, kind)
            await ctx.store.adopt_file(FileRecord(
                id=file_id, tenant=rec.tenant, provider=rec.provider, filename=f"{rec.id}_{kind}.jsonl",
                purpose="batch_output", bytes=await runner.results_size(rec.job, kind), created_at=now,
                expires_at=expires, location=results_location(rec.id, kind)))
            if kind == "output":
                rec.output_file_id = file_id
            else:
                rec.error_file_id = file_id
    rec.status = progress.status
    rec.request_counts = {"total": progress.request_counts.total, "completed": progress.request_counts.completed,
                          "failed": progress.request_counts.failed}
    rec.timestamps.update(progress.timestamps)
    rec.errors = progress.errors or None
    await _store_state(ctx, rec)


async def _store_state(ctx: "OperationContext", rec: BatchRecord) -> None:
    """Write ``rec``'s new state; if the batch had ended meanwhile (another replica's poll got
    there first: an ended batch is final), ``rec`` becomes what the store has."""
    if await ctx.store.update_batch(rec):
        return
    stored = await ctx.store.get_batch(rec.id)
    if stored is not None:
        for name in BatchRecord.__slots__:
            setattr(rec, name, getattr(stored, name))


def render(rec: BatchRecord) -> dict[str, Any]:
    """The Batch object (openai-python ``types/batch.py``) of a stored batch: a pass-through
    provider's last object as it sent it, else built from the record."""
    upstream = rec.job.get("object") if rec.upstream_id is not None else None
    if isinstance(upstream, dict):
        return upstream
    obj: dict[str, Any] = {
        "id": rec.id, "object": "batch", "endpoint": rec.endpoint,
        "errors": {"object": "list", "data": rec.errors} if rec.errors else None,
        "input_file_id": rec.input_file_id, "completion_window": rec.completion_window, "status": rec.status,
        "output_file_id": rec.output_file_id, "error_file_id": rec.error_file_id, "created_at": rec.created_at,
    }
    for key in TIMESTAMPS:
        obj[key] = rec.timestamps.get(key)
    obj["request_counts"] = {"total": 0, "completed": 0, "failed": 0, **rec.request_counts}
    obj["metadata"] = rec.metadata
    return obj
