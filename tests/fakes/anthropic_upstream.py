"""Faithful fake of Anthropic's Files API (docs/provider-facts.md §5), plus the shared fake machinery.

Run it in a :class:`~tests.fakes.threaded.ThreadedServer` (the context manager does)::

    with FakeAnthropic(data_dir=tmp_path) as fake:
        ...   # point a gateway at fake.url (paths start with /v1/…)
        assert fake.requests.filter("POST", "/v1/files")[-1].headers["x-api-key"] == fake.api_key

What it checks, as the real service does (docs/provider-facts.md §5.1, §5.2, §5.6):

* ``x-api-key`` (or, for API version ``2026-10-21``, ``Authorization: Bearer``) — missing or
  wrong → 401 ``authentication_error``;
* ``anthropic-version`` on every request — missing or unknown → 400 ``invalid_request_error``;
* under ``2023-06-01`` the files beta ``anthropic-beta: files-api-2025-04-14`` (a comma list or
  a repeated header) — missing → **400** ``invalid_request_error`` naming the header. No
  source gives the real status (tests/fakes/README.md); a 404 would reach a gateway's client
  as "file not found" and hide the misconfiguration, while a 400 that names the header makes
  it visible, so the fake chose 400. Under ``2026-10-21`` the Files API is GA and needs no beta header.
* upload: ``multipart/form-data`` with exactly one part, ``file`` (any other part → 400),
  streamed to disk and hashed, never buffered; ≤ ``max_file_size`` (500 MB) else 413
  ``request_too_large``; answers FileMetadata (``size_bytes``, RFC 3339 ``created_at``,
  ``downloadable: false``). A body that does not end with the closing boundary (client gone,
  connection reset) stores nothing.
* list: ``limit`` (1–1000, default 20), ``after_id``, ``before_id``; newest first;
  ``{"data", "has_more", "first_id", "last_id"}`` (no ``object`` key);
* delete → ``{"id", "type": "file_deleted"}``; content → only ``downloadable`` files (seed one
  with ``add_file(..., downloadable=True)``), otherwise 400 ``invalid_request_error`` (the
  newer API's ``file_not_downloadable``, docs/provider-facts.md §5.2).
* errors: ``{"type":"error","error":{"type","message"},"request_id"}`` and a ``request-id``
  response header.

Fault injection as in the OpenAI fake: ``fail_next`` (Anthropic-shaped error bodies by status,
e.g. 529 ``overloaded_error``), ``reset_next`` (optionally after some body bytes),
``delay_next``, ``clear_faults``. Observation: ``requests`` (a :class:`RecordLog` of
:class:`Recorded`), ``files``, ``wait_until``.

:class:`FakeUpstream` (records, faults, streaming multipart to disk, serving) is shared with
the Groq fake.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import secrets
import shutil
import string
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiohttp import MultipartReader, hdrs, web
from multidict import CIMultiDict, MultiDict

from ..support import wait_until
from .faults import Fault, FaultQueue
from .openai_upstream import BodyDigest, HashingReader, Recorded, RecordLog, UploadedPart
from .threaded import ThreadedServer

UPLOAD_CHUNK = 1 << 20
MAX_FORM_FIELD = 64 * 1024
_ALNUM = string.ascii_letters + string.digits
_REC = "fake_record"
_COUNT = "fake_body_counter"

ANTHROPIC_VERSIONS = ("2023-06-01", "2026-10-21")
FILES_BETA = "files-api-2025-04-14"


# ============================================================================ shared machinery
class ApiError(Exception):
    """Raised by handlers; rendered in the provider's error shape."""

    def __init__(self, status: int, message: str, *, kind: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


class FakeUpstream:
    """Serving, recording, fault injection and streamed multipart reception for a fake API."""

    DEFAULT_MESSAGES = {
        400: "Bad request.", 401: "Invalid authentication.", 403: "Permission denied.", 404: "Not found.",
        408: "Request timed out.", 409: "Conflict.", 413: "Request too large.",
        429: "Rate limit reached. Please try again later.", 500: "Internal server error.",
        502: "Bad gateway.", 503: "Service unavailable.", 504: "Gateway timeout.", 529: "Overloaded.",
    }

    def __init__(self, *, api_key: str, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.api_key = api_key
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="fake-upstream-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.requests = RecordLog()
        self._lock = threading.RLock()
        self._faults = FaultQueue()
        self._seq = itertools.count()
        self._app: web.Application | None = None
        self._server: ThreadedServer | None = None

    # -- to be provided by a concrete fake ------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def check_request(self, request: web.Request) -> None:
        """Auth and required headers; raise ApiError."""

    def error_body(self, status: int, message: str, *, kind: str | None, param: str | None,
                   code: str | None) -> Any:
        raise NotImplementedError

    def response_headers(self) -> dict[str, str]:
        return {}

    # -- serving ------------------------------------------------------------------------
    def serve(self) -> ThreadedServer:
        if self._server is None:
            self._app = web.Application(middlewares=[self._middleware])
            self._app.on_response_prepare.append(self._on_prepare)
            self.routes(self._app.router)
            self._app.router.add_route("*", "/{tail:.*}", self._invalid_url)
            self._server = ThreadedServer(self._app).start()
        return self._server

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("call serve() first (or use the fake as a context manager)")
        return self._server.url

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._app = None
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.serve()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------
    def fail_next(self, status: int, body: Any = None, times: int = 1, headers: dict[str, str] | None = None,
                  *, path: str | None = None) -> None:
        """Answer the next ``times`` requests (whose path starts with ``path``) with ``status``
        and a provider-shaped error (or ``body``: dict → JSON, str/bytes verbatim)."""
        self._faults.add(Fault("fail", times, path, status=status, body=body, headers=headers))

    def reset_next(self, times: int = 1, *, path: str | None = None, after_bytes: int | None = None) -> None:
        """Close the connection without an answer (after ``after_bytes`` body bytes, if given)."""
        self._faults.add(Fault("reset", times, path, after_bytes=after_bytes))

    def delay_next(self, seconds: float, times: int = 1, *, path: str | None = None) -> None:
        self._faults.add(Fault("delay", times, path, seconds=seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- observation --------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``predicate`` (typically over ``requests``) until true or ``timeout``: whether it held."""
        return wait_until(predicate, timeout, interval)

    def next_seq(self) -> int:
        return next(self._seq)

    # -- middleware ---------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rec = Recorded(method=request.method, path=request.path, query=MultiDict(request.query),
                       headers=CIMultiDict(request.headers), content_length=request.headers.get(hdrs.CONTENT_LENGTH))
        self.requests.append(rec)
        request[_REC] = rec
        request[_COUNT] = BodyDigest()
        fault = self._faults.take(request.path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "reset":
                if fault.after_bytes:
                    await self._read_some(request, fault.after_bytes)
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)   # never sent
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        try:
            if fault is not None and fault.kind == "fail":
                await self.drain(request)
                return self._fault_response(fault)
            self.check_request(request)
            return await handler(request)
        except ApiError as exc:
            await self.drain(request)
            return self.error_response(exc)
        finally:
            if not request[_COUNT].done and request.transport is not None and not request.transport.is_closing():
                await self.drain(request)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        for k, v in self.response_headers().items():
            response.headers.setdefault(k, v)
        rec = request.get(_REC)
        if rec is not None and rec.fault != "reset":
            rec.status = response.status

    def error_response(self, exc: ApiError) -> web.Response:
        body = self.error_body(exc.status, exc.message, kind=exc.kind, param=exc.param, code=exc.code)
        return json_response(body, exc.status, exc.headers)

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = dict(fault.headers or {})
        if fault.body is None:
            message = self.DEFAULT_MESSAGES.get(fault.status, f"Injected HTTP {fault.status} error.")
            return json_response(self.error_body(fault.status, message, kind=None, param=None, code=None),
                                 fault.status, headers)
        if isinstance(fault.body, (dict, list)):
            return json_response(fault.body, fault.status, headers)
        raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
        headers.setdefault(hdrs.CONTENT_TYPE, "text/plain")
        return web.Response(body=raw, status=fault.status, headers=headers)

    async def _invalid_url(self, request: web.Request) -> web.Response:
        raise ApiError(404, f"Not found: {request.method} {request.path}", kind="not_found_error")

    # -- bodies -------------------------------------------------------------------------
    def _finish(self, request: web.Request) -> None:
        counter: BodyDigest = request[_COUNT]
        counter.done = True
        rec: Recorded = request[_REC]
        rec.body_size = counter.size
        rec.body_sha256 = counter.sha.hexdigest()

    def _finish_raw(self, request: web.Request, raw: bytes) -> None:
        """A body read whole (JSON): count and hash it as :meth:`drain` would."""
        request[_COUNT].update(raw)
        self._finish(request)

    async def drain(self, request: web.Request) -> None:
        counter: BodyDigest = request[_COUNT]
        if counter.done:
            return
        try:
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
                counter.update(chunk)
        except Exception:  # noqa: BLE001 - the client went away mid-body
            return
        self._finish(request)

    async def _read_some(self, request: web.Request, limit: int) -> None:
        counter: BodyDigest = request[_COUNT]
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            counter.update(chunk)
            if counter.size >= limit:
                break

    async def receive_multipart(self, request: web.Request, part_path: Path) -> tuple[dict[str, str], UploadedPart | None]:
        """Stream a multipart body: the ``file`` part to ``part_path`` (hashed), fields kept.
        Raises if the body ends before its closing boundary (nothing must be stored then)."""
        if request.content_type != "multipart/form-data":
            raise ApiError(400, f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data.",
                           kind="invalid_request_error")
        rec: Recorded = request[_REC]
        rec.form = {}
        fields: dict[str, str] = {}
        upload: UploadedPart | None = None
        reader = MultipartReader(request.headers, HashingReader(request.content, request[_COUNT]))  # type: ignore[arg-type]
        try:
            async for part in reader:
                if isinstance(part, MultipartReader):
                    raise ApiError(400, "Nested multipart bodies are not supported.", kind="invalid_request_error")
                name = part.name or ""
                if name == "file" and part.filename is not None:
                    if upload is not None:
                        raise ApiError(400, "Only one 'file' part is allowed.", kind="invalid_request_error", param="file")
                    sha, size = hashlib.sha256(), 0
                    with open(part_path, "wb") as out:
                        while chunk := await part.read_chunk(UPLOAD_CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                    upload = UploadedPart(part.filename, part.headers.get(hdrs.CONTENT_TYPE), size, sha.hexdigest())
                    rec.form[name] = upload
                else:
                    value = bytearray()
                    while chunk := await part.read_chunk(8192):
                        value.extend(chunk)
                        if len(value) > MAX_FORM_FIELD:
                            raise ApiError(400, f"Form field '{name}' is too large.", kind="invalid_request_error")
                    fields[name] = value.decode("utf-8", "replace")
                    rec.form[name] = fields[name]
        except (ValueError, AssertionError) as exc:
            raise ApiError(400, f"Could not parse multipart form: {exc}", kind="invalid_request_error") from None
        if not reader.at_eof():
            raise ConnectionResetError("multipart body ended before its closing boundary")
        await self.drain(request)
        return fields, upload


def rand_id(prefix: str, n: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


# ============================================================================ Message Batches
#
# docs/provider-facts.md §5.7 [sdk][doc]: POST /v1/messages/batches {"requests": [{"custom_id",
# "params"}]} (≤ 100,000 requests, ≤ 256 MB; custom_id 1–64 of [A-Za-z0-9_-], unique — the
# character rule is [2nd, UNVERIFIED]; params needs model, max_tokens, messages); GET …/{id};
# GET …/batches (limit 1–1000, default 20, after_id, before_id; newest first); POST …/{id}/cancel;
# DELETE …/{id} (ended batches only); results JSONL at the batch's results_url once ended, in
# no particular order (the fake: reversed). Batch object: id msgbatch_…, type message_batch,
# processing_status in_progress|canceling|ended, request_counts{processing, succeeded, errored,
# canceled, expired}, created_at, expires_at (+24 h), ended_at, cancel_initiated_at, archived_at
# (RFC 3339), results_url (null until ended). Results lines: {"custom_id", "result": {"type":
# succeeded|errored|canceled|expired, "message"|"error"}}.

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1000**2
_BATCH_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class MessageBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    seq: int
    processing_status: str = "in_progress"
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    results: list[dict[str, Any]] | None = None
    released: asyncio.Event | None = None
    base_url: str = ""

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.results is None:
            counts["processing"] = len(self.requests)
        else:
            for row in self.results:
                counts[row["result"]["type"]] += 1
        return counts

    def view(self) -> dict[str, Any]:
        def ts(value: float | None) -> str | None:
            return None if value is None else datetime.fromtimestamp(value, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        return {"id": self.id, "type": "message_batch", "processing_status": self.processing_status,
                "request_counts": self.counts(), "created_at": ts(self.created_at),
                "expires_at": ts(self.created_at + 86400), "ended_at": ts(self.ended_at),
                "cancel_initiated_at": ts(self.cancel_initiated_at), "archived_at": None,
                "results_url": (f"{self.base_url}/v1/messages/batches/{self.id}/results"
                                if self.processing_status == "ended" else None)}


def default_batch_responder(params: dict[str, Any]) -> dict[str, Any]:
    """A Messages answer echoing the last user text; ``errored`` when it contains ``FAIL``
    (**choice**: a trigger the tests control)."""
    text = ""
    for message in reversed(params.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            text = content if isinstance(content, str) else "".join(
                b.get("text", "") for b in content if isinstance(b, dict))
            break
    if "FAIL" in text:
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": "the fake was told to FAIL"}}}
    answer = f"echo: {text}"
    return {"type": "succeeded", "message": {
        "id": rand_id("msg_011C", 20), "type": "message", "role": "assistant", "model": params.get("model"),
        "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": max(1, len(text) // 4), "output_tokens": max(1, len(answer) // 4)}}}


class MessageBatchesApi:
    """The Message Batches handlers of :class:`FakeAnthropic` (kept beside their facts)."""

    def release_batches(self: Any) -> None:
        """Let held batches end."""
        for batch in list(self.batches.values()):
            if batch.released is not None:
                self._server.loop.call_soon_threadsafe(batch.released.set)

    def _batch(self: Any, batch_id: str) -> MessageBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Message batch not found: {batch_id}", kind="not_found_error")
        return batch

    async def _batch_create(self: Any, request: web.Request) -> web.Response:
        raw = bytearray()
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            raw += chunk
            if len(raw) > MAX_BATCH_BYTES:
                raise ApiError(413, "Request exceeds the maximum size of a message batch.", kind="request_too_large")
        self._finish(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "The request body is not valid JSON.", kind="invalid_request_error") from None
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "requests: Field required (a non-empty list)", kind="invalid_request_error")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise ApiError(400, f"requests: at most {MAX_BATCH_REQUESTS} requests", kind="invalid_request_error")
        seen: set[str] = set()
        for i, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not _BATCH_CUSTOM_ID.fullmatch(cid):
                raise ApiError(400, f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
                               kind="invalid_request_error")
            if cid in seen:
                raise ApiError(400, f"requests.{i}.custom_id: duplicate custom_id {cid}", kind="invalid_request_error")
            seen.add(cid)
            params = item.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("model"), str) \
                    or not isinstance(params.get("max_tokens"), int) or not isinstance(params.get("messages"), list):
                raise ApiError(400, f"requests.{i}.params: model, max_tokens and messages are required",
                               kind="invalid_request_error")
        batch = MessageBatch(rand_id("msgbatch_011C", 20), requests, datetime.now(timezone.utc).timestamp(),
                             self.next_seq(), released=asyncio.Event(), base_url=self.url)
        with self._lock:
            self.batches[batch.id] = batch
        task = asyncio.ensure_future(self._batch_run(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        return json_response(batch.view())

    async def _batch_run(self: Any, batch: MessageBatch) -> None:
        await asyncio.sleep(self.batch_step)
        if self.hold_batches and batch.cancel_initiated_at is None:
            assert batch.released is not None
            await batch.released.wait()
        if batch.cancel_initiated_at is not None:
            batch.results = [{"custom_id": r["custom_id"], "result": {"type": "canceled"}} for r in batch.requests]
        else:
            batch.results = [{"custom_id": r["custom_id"], "result": self.batch_responder(r["params"])}
                             for r in batch.requests]
        batch.processing_status = "ended"
        batch.ended_at = datetime.now(timezone.utc).timestamp()

    async def _batch_get(self: Any, request: web.Request) -> web.Response:
        return json_response(self._batch(request.match_info["batch_id"]).view())

    async def _batch_list(self: Any, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit: Input should be between 1 and 1000", kind="invalid_request_error")
        items = sorted(self.batches.values(), key=lambda b: b.seq, reverse=True)
        ids = [b.id for b in items]
        if q.get("after_id"):
            items = items[ids.index(q["after_id"]) + 1:] if q["after_id"] in ids else []
        elif q.get("before_id"):
            items = items[: ids.index(q["before_id"])] if q["before_id"] in ids else []
        page = items[:limit]
        return json_response({"data": [b.view() for b in page], "has_more": len(items) > limit,
                              "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None})

    async def _batch_cancel(self: Any, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["batch_id"])
        if batch.processing_status == "ended":
            raise ApiError(400, f"Message batch {batch.id} has ended and cannot be canceled.",
                           kind="invalid_request_error")
        if batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = datetime.now(timezone.utc).timestamp()
            batch.processing_status = "canceling"
            assert batch.released is not None
            batch.released.set()
        return json_response(batch.view())

    async def _batch_results(self: Any, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request.match_info["batch_id"])
        if batch.processing_status != "ended" or batch.results is None:
            raise ApiError(400, f"Message batch {batch.id} has not ended: no results yet.",
                           kind="invalid_request_error")
        resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/binary"})
        await resp.prepare(request)
        for row in reversed(batch.results):  # order is not guaranteed
            await resp.write(orjson.dumps(row) + b"\n")
        await resp.write_eof()
        return resp

    async def _batch_delete(self: Any, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["batch_id"])
        if batch.processing_status != "ended":
            raise ApiError(400, f"Message batch {batch.id} is still processing; cancel it first.",
                           kind="invalid_request_error")
        with self._lock:
            self.batches.pop(batch.id, None)
        return json_response({"id": batch.id, "type": "message_batch_deleted"})


# ============================================================================ Anthropic
@dataclass
class AnthropicFile:
    id: str
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    created_at: str          # RFC 3339
    downloadable: bool
    path: Path
    seq: int
    part_content_type: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {"id": self.id, "type": "file", "filename": self.filename, "mime_type": self.mime_type,
                "size_bytes": self.size_bytes, "created_at": self.created_at, "downloadable": self.downloadable}


_MIME_BY_EXT = {".pdf": "application/pdf", ".txt": "text/plain", ".png": "image/png", ".jpg": "image/jpeg",
                ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".csv": "text/csv",
                ".json": "application/json"}

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def _rfc3339_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAnthropic(MessageBatchesApi, FakeUpstream):
    """Anthropic Files API (``2023-06-01`` + files beta, and ``2026-10-21``)."""

    def __init__(self, *, api_key: str = "sk-ant-upstream-test-key-0123456789",
                 data_dir: str | os.PathLike[str] | None = None, max_file_size: int = 500 * 1000**2,
                 batch_step: float = 0.02, hold_batches: bool = False,
                 batch_responder: "Callable[[dict[str, Any]], dict[str, Any]] | None" = None) -> None:
        super().__init__(api_key=api_key, data_dir=data_dir)
        self.max_file_size = max_file_size
        self._files: dict[str, AnthropicFile] = {}
        self.messages = FakeMessages(self)
        # Message Batches (see the batches section below)
        self.batches: dict[str, MessageBatch] = {}  # MessageBatchesApi
        self.batch_step = batch_step
        self.hold_batches = hold_batches
        self.batch_responder = batch_responder or default_batch_responder
        self._batch_tasks: set[asyncio.Task[None]] = set()

    # -- wiring -------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self._upload)
        router.add_get("/v1/files", self._list)
        router.add_get("/v1/files/{file_id}", self._retrieve)
        router.add_delete("/v1/files/{file_id}", self._delete)
        router.add_get("/v1/files/{file_id}/content", self._content)
        router.add_post("/v1/messages", self._messages)
        router.add_post("/v1/messages/batches", self._batch_create)
        router.add_get("/v1/messages/batches", self._batch_list)
        router.add_get("/v1/messages/batches/{batch_id}", self._batch_get)
        router.add_post("/v1/messages/batches/{batch_id}/cancel", self._batch_cancel)
        router.add_get("/v1/messages/batches/{batch_id}/results", self._batch_results)
        router.add_delete("/v1/messages/batches/{batch_id}", self._batch_delete)

    def response_headers(self) -> dict[str, str]:
        return {"request-id": rand_id("req_011C", 20)}

    def error_body(self, status: int, message: str, *, kind: str | None, param: str | None,
                   code: str | None) -> Any:
        kind = kind or _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": rand_id("req_011C", 20)}

    def check_request(self, request: web.Request) -> None:
        version = request.headers.get("anthropic-version")
        key = request.headers.get("x-api-key")
        if key is None and version == "2026-10-21":
            scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            raise ApiError(401, "x-api-key header is required", kind="authentication_error")
        if key != self.api_key:
            raise ApiError(401, "invalid x-api-key", kind="authentication_error")
        if not version:
            raise ApiError(400, "anthropic-version: header is required", kind="invalid_request_error")
        if version not in ANTHROPIC_VERSIONS:
            raise ApiError(400, f"anthropic-version: unknown version '{version}'", kind="invalid_request_error")
        if version == "2023-06-01" and request.path.startswith("/v1/files"):  # Message Batches are GA
            betas = {b.strip() for v in request.headers.getall("anthropic-beta", []) for b in v.split(",")}
            if FILES_BETA not in betas:
                raise ApiError(400, f"The Files API is in beta: the anthropic-beta header must include "
                               f"'{FILES_BETA}'.", kind="invalid_request_error")

    # -- inspection ---------------------------------------------------------------------
    @property
    def files(self) -> dict[str, AnthropicFile]:
        with self._lock:
            return dict(self._files)

    def add_file(self, content: bytes, *, filename: str = "output.txt", downloadable: bool = True,
                 mime_type: str = "text/plain") -> AnthropicFile:
        """Seed a file directly (e.g. one the code-execution tool created)."""
        file_id = rand_id("file_011C", 22)
        path = self.data_dir / file_id
        path.write_bytes(content)
        f = AnthropicFile(file_id, filename, mime_type, len(content), hashlib.sha256(content).hexdigest(),
                          _rfc3339_now(), downloadable, path, self.next_seq())
        with self._lock:
            self._files[file_id] = f
        return f

    def set_downloadable(self, file_id: str, downloadable: bool = True) -> None:
        with self._lock:
            self._files[file_id].downloadable = downloadable

    def remove_file(self, file_id: str) -> None:
        """Delete a file behind the gateway's back (as another API client could)."""
        with self._lock:
            f = self._files.pop(file_id)
        f.path.unlink(missing_ok=True)

    def _get(self, file_id: str) -> AnthropicFile:
        with self._lock:
            f = self._files.get(file_id)
        if f is None:
            raise ApiError(404, f"File not found: {file_id}", kind="not_found_error")
        return f

    # -- handlers -----------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        file_id = rand_id("file_011C", 22)
        part_path = self.data_dir / f".{file_id}.part"
        try:
            fields, upload = await self.receive_multipart(request, part_path)
            if fields:
                name = next(iter(fields))
                raise ApiError(400, f"{name}: Extra inputs are not permitted", kind="invalid_request_error")
            if upload is None:
                raise ApiError(400, "file: Field required", kind="invalid_request_error")
            if upload.size > self.max_file_size:
                raise ApiError(413, f"File size exceeds the maximum of {self.max_file_size} bytes.",
                               kind="request_too_large")
        except BaseException:
            part_path.unlink(missing_ok=True)
            raise
        path = self.data_dir / file_id
        part_path.replace(path)
        filename = upload.filename or ""
        ext = os.path.splitext(filename)[1].lower()
        declared = (upload.content_type or "").split(";")[0].strip()
        mime = declared if declared and declared != "application/octet-stream" else _MIME_BY_EXT.get(ext, declared or "application/octet-stream")
        f = AnthropicFile(file_id, filename, mime, upload.size, upload.sha256, _rfc3339_now(), False, path,
                          self.next_seq(), upload.content_type)
        with self._lock:
            self._files[file_id] = f
        return json_response(f.metadata())

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit: Input should be between 1 and 1000", kind="invalid_request_error")
        with self._lock:
            items = sorted(self._files.values(), key=lambda f: f.seq, reverse=True)   # newest first
        ids = [f.id for f in items]
        if q.get("after_id"):
            items = items[ids.index(q["after_id"]) + 1:] if q["after_id"] in ids else []
            page, has_more = items[:limit], len(items) > limit
        elif q.get("before_id"):
            items = items[: ids.index(q["before_id"])] if q["before_id"] in ids else []
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return json_response({"data": [f.metadata() for f in page], "has_more": has_more,
                              "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None})

    async def _retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._get(request.match_info["file_id"]).metadata())

    async def _delete(self, request: web.Request) -> web.Response:
        f = self._get(request.match_info["file_id"])
        with self._lock:
            self._files.pop(f.id, None)
        f.path.unlink(missing_ok=True)
        return json_response({"id": f.id, "type": "file_deleted"})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self.messages.handle(request)

    async def _content(self, request: web.Request) -> web.StreamResponse:
        f = self._get(request.match_info["file_id"])
        if not f.downloadable:
            raise ApiError(400, f"File {f.id} is not downloadable", kind="invalid_request_error")
        return web.FileResponse(f.path, chunk_size=256 * 1024, headers={hdrs.CONTENT_TYPE: f.mime_type})


# ============================================================================ Anthropic Messages
_MESSAGE_FIELDS = frozenset({"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
                             "stop_sequences", "stream", "tools", "tool_choice", "thinking", "metadata",
                             "output_config", "service_tier"})
_IMAGE_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _words(text: str) -> list[str]:
    """Text split into pieces that join back to it (one SSE delta each)."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


class FakeMessages:
    """``POST /v1/messages`` (docs/provider-facts.md §13): validates the request as Anthropic
    does, records it, and answers a JSON Message or its SSE stream.

    Test hooks: ``reply(body) -> list of content blocks`` (default: ``echo: <last user text>``;
    with ``output_config.format`` a JSON object of the schema's properties), ``stream_delay``
    (seconds between two SSE events), ``error_after(n)`` (an ``error`` event instead of the
    n-th event), ``usage_extra`` (e.g. ``cache_read_input_tokens``); observation:
    ``open_streams``, ``streams_completed``, ``stream_client_disconnects``, ``sent_events``
    (monotonic times the events of the last stream were written).
    """

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake
        self.reply: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
        self.stream_delay = 0.0
        self.usage_extra: dict[str, int] = {}
        self._error_after: int | None = None
        self._drop_after: int | None = None
        self._hold: tuple[int, threading.Event] | None = None
        self.open_streams = 0
        self.streams_completed = 0
        self.stream_client_disconnects = 0
        self.sent_events: list[float] = []

    def error_after(self, n: int) -> None:
        self._error_after = n

    def hold_before(self, n: int) -> threading.Event:
        """The next stream waits before its ``n``-th event until the returned event is set (at
        most 10 s): a test can look at what the client has while the fake sends nothing."""
        self._hold = (n, threading.Event())
        return self._hold[1]

    def drop_after(self, n: int) -> None:
        """Close the connection after ``n`` events of the next stream (no terminal chunk)."""
        self._drop_after = n

    # -- validation ---------------------------------------------------------------------
    @staticmethod
    def _bad(message: str) -> ApiError:
        return ApiError(400, message, kind="invalid_request_error")

    def _check(self, body: Any, request: web.Request) -> None:
        if not isinstance(body, dict):
            raise self._bad("body: Input should be an object")
        for key in body:
            if key not in _MESSAGE_FIELDS:
                raise self._bad(f"{key}: Extra inputs are not permitted")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise self._bad("model: Field required")
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise self._bad("max_tokens: Field required")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise self._bad("messages: Field required")
        for key in ("temperature", "top_p"):
            v = body.get(key)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise self._bad(f"{key}: Input should be less than or equal to 1")
        thinking = body.get("thinking")
        if thinking is not None:
            budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
            if not isinstance(budget, int) or budget < 1024 or budget >= mt:
                raise self._bad("thinking.budget_tokens: must be >= 1024 and less than max_tokens")
        system = body.get("system")
        if system is not None and not isinstance(system, str) and not (
                isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system)):
            raise self._bad("system: Input should be a string or a list of text blocks")
        fmt = (body.get("output_config") or {}).get("format")
        if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
            raise self._bad("output_config.format: Input should be a json_schema format")
        tool_names = set()
        for i, tool in enumerate(body.get("tools") or []):
            if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
                raise self._bad(f"tools.{i}: name and input_schema are required")
            tool_names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None and (choice.get("type") not in ("auto", "any", "tool", "none") or (
                choice["type"] == "tool" and choice.get("name") not in tool_names)):
            raise self._bad("tool_choice: invalid")
        pending: set[str] = set()     # tool_use ids the next user message must answer
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise self._bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            blocks = m.get("content")
            if isinstance(blocks, str):
                blocks = [{"type": "text", "text": blocks}]
            if not isinstance(blocks, list) or not blocks:
                raise self._bad(f"messages.{i}.content: Field required")
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            if pending and set(results) != pending:
                raise self._bad(f"messages.{i}: tool_use ids were found without tool_result blocks immediately "
                                f"after: {', '.join(sorted(pending - set(results)))}")
            if results and not pending:
                raise self._bad(f"messages.{i}.content: unexpected tool_use_id found in tool_result blocks: {results[0]}")
            if results and any(b.get("type") != "tool_result" for b in blocks[:len(results)]):
                raise self._bad(f"messages.{i}.content: tool_result blocks must come first")
            pending = set()
            for j, b in enumerate(blocks):
                self._check_block(b, m["role"], f"messages.{i}.content.{j}", request)
                if b.get("type") == "tool_use":
                    pending.add(b["id"])

    def _check_block(self, b: Any, role: str, where: str, request: web.Request) -> None:
        kind = b.get("type") if isinstance(b, dict) else None
        allowed = {"user": ("text", "image", "document", "tool_result"),
                   "assistant": ("text", "tool_use", "thinking", "redacted_thinking")}[role]
        if kind not in allowed:
            raise self._bad(f"{where}.type: {kind!r} is not allowed in a {role} message")
        if kind == "text" and not isinstance(b.get("text"), str):
            raise self._bad(f"{where}.text: Field required")
        if kind == "text" and not b["text"]:
            raise self._bad(f"{where}: text content blocks must be non-empty")
        if kind == "tool_use" and not (isinstance(b.get("id"), str) and isinstance(b.get("input"), dict)):
            raise self._bad(f"{where}: tool_use needs id, name and an input object")
        if kind == "thinking" and not (isinstance(b.get("signature"), str) and b["signature"].startswith("sig_")):
            raise self._bad(f"{where}.signature: Invalid signature in thinking block")
        if kind == "tool_result":
            for k, c in enumerate(b.get("content") if isinstance(b.get("content"), list) else []):
                self._check_block(c, "user", f"{where}.content.{k}", request)
        if kind in ("image", "document"):
            src = b.get("source") or {}
            st = src.get("type")
            if st == "base64":
                media = src.get("media_type")
                ok = media in _IMAGE_MEDIA if kind == "image" else media == "application/pdf"
                if not ok or not isinstance(src.get("data"), str):
                    raise self._bad(f"{where}.source.media_type: unsupported {media!r}")
            elif st == "url":
                if not str(src.get("url", "")).startswith(("http://", "https://")):
                    raise self._bad(f"{where}.source.url: invalid URL")
            elif st == "file":
                betas = {x.strip() for v in request.headers.getall("anthropic-beta", []) for x in v.split(",")}
                if FILES_BETA not in betas:
                    raise self._bad(f"{where}.source: file sources need the anthropic-beta '{FILES_BETA}'")
                if src.get("file_id") not in self.fake.files:
                    raise ApiError(404, f"File not found: {src.get('file_id')}", kind="not_found_error")
            else:
                raise self._bad(f"{where}.source.type: invalid {st!r}")

    # -- answers ------------------------------------------------------------------------
    @staticmethod
    def _text_of(blocks: Any) -> str:
        if isinstance(blocks, str):
            return blocks
        return " ".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")

    def _default_reply(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        fmt = (body.get("output_config") or {}).get("format")
        last = self._text_of(body["messages"][-1]["content"])
        if fmt is not None:
            props = fmt["schema"].get("properties") or {}
            return [{"type": "text", "text": orjson.dumps({k: f"echo: {last}" for k in props}).decode()}]
        return [{"type": "text", "text": f"echo: {last}"}]

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        blocks = (self.reply or self._default_reply)(body)
        words_in = sum(len(self._text_of(m["content"]).split()) for m in body["messages"])
        out_words = sum(len(str(b.get("text", b.get("thinking", ""))).split()) + 1 for b in blocks)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        if out_words > body["max_tokens"]:
            stop = "max_tokens"
        return {"id": rand_id("msg_01", 22), "type": "message", "role": "assistant", "model": body["model"],
                "content": blocks, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": words_in, "output_tokens": out_words, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, **self.usage_extra}}

    @staticmethod
    def stream_events(message: dict[str, Any]) -> list[dict[str, Any]]:
        """A Message as Anthropic streams it (docs/provider-facts.md §13.4)."""
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
        for i, b in enumerate(message["content"]):
            if b["type"] == "text":
                events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                events += [{"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": w}}
                           for w in _words(b["text"])]
            elif b["type"] == "tool_use":
                events.append({"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})
                raw = orjson.dumps(b["input"]).decode()
                events += [{"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": raw[k:k + 7]}}
                           for k in range(0, len(raw), 7)]
            elif b["type"] == "redacted_thinking":     # sent whole in its start event
                events.append({"type": "content_block_start", "index": i, "content_block": dict(b)})
            elif b["type"] == "thinking":
                events.append({"type": "content_block_start", "index": i,
                               "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                events += [{"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": w}}
                           for w in _words(b["thinking"])]
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "signature_delta", "signature": b["signature"]}})
            events.append({"type": "content_block_stop", "index": i})
        events.append({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                       "usage": {"output_tokens": message["usage"]["output_tokens"]}})
        events.append({"type": "message_stop"})
        return events

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.fake._finish_raw(request, raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._bad("body: invalid JSON") from None
        request[_REC].json = body
        self._check(body, request)
        message = self._message(body)
        if not body.get("stream"):
            return json_response(message)
        return await self._stream(request, self.stream_events(message))

    async def _stream(self, request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
                                           hdrs.CACHE_CONTROL: "no-cache"})
        await resp.prepare(request)
        error_after, self._error_after = self._error_after, None
        drop_after, self._drop_after = self._drop_after, None
        hold, self._hold = self._hold, None
        self.open_streams += 1
        self.sent_events = []
        try:
            for index, event in enumerate(events):
                if index and self.stream_delay > 0:
                    await asyncio.sleep(self.stream_delay)
                if hold is not None and index == hold[0]:
                    deadline = time.monotonic() + 10
                    while not hold[1].is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                if drop_after is not None and index >= drop_after:
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                if error_after is not None and index >= error_after:
                    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                await resp.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
                self.sent_events.append(time.monotonic())
                if event["type"] == "error":
                    break
            await resp.write_eof()
            self.streams_completed += 1
        except ConnectionError:          # the client went away mid-stream
            self.stream_client_disconnects += 1
            return resp
        except asyncio.CancelledError:
            self.stream_client_disconnects += 1
            raise
        finally:
            self.open_streams -= 1
        return resp
