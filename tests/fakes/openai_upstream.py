"""Faithful fake of the OpenAI / Azure OpenAI Files, Responses and Batches HTTP APIs (batches:
tests/fakes/batches.py, reached as ``fake.batches``).

Shapes follow docs/provider-facts.md (§1 Files, §2 SDK wire behaviour, §3 Responses, §4
Azure classic family); tests/fakes/README.md lists each fact's source.  The fake is an
``aiohttp`` application meant to run in a :class:`~tests.fakes.threaded.ThreadedServer`::

    with FakeOpenAI(flavor="openai", data_dir=tmp_path) as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key)
        ...
        assert fake.requests[-1].path == "/v1/files"

Flavors
  * ``"openai"``: ``/v1/...`` paths, ``Authorization: Bearer <key>``, OpenAI error bodies
    ``{"error": {"message", "type", "param", "code"}}``, ``file-`` + 24 alnum ids.
  * ``"azure"``: classic ``/openai/...`` paths with a required ``?api-version=``, ``api-key``
    header, Azure error bodies (``"type": "error"``, string ``code``, ``inner_error``),
    ``file-`` + 32 hex ids, upload answers ``201`` + ``status: "pending"`` (``"processed"``
    after ``azure_processing_delay`` seconds), list pages carry only ``object`` + ``data``,
    Responses ``created_at`` is a float.

Everything the test thread touches (fault queues, recorded requests, stores) is guarded by
locks, so the fake can be configured and inspected while the server thread is serving.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import os
import re
import secrets
import shutil
import ssl
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, MultiDict

from ..support import wait_until
from .batches import BatchEngine
from .faults import Fault, FaultQueue
from .threaded import ThreadedServer

Flavor = Literal["openai", "azure"]

OPENAI_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
AZURE_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "evals")
EXPIRES_MIN_SECONDS = 3600  # 1 h
EXPIRES_MAX_SECONDS = 2_592_000  # 30 d
AZURE_BATCH_EXPIRES_MIN_SECONDS = 1_209_600  # 14 d (Azure batch files)
BATCH_DEFAULT_EXPIRY_SECONDS = 2_592_000  # OpenAI: batch files expire after 30 d by default
# openai-python BatchCreateParams.endpoint; Azure Global Batch's (README: choice of the three)
OPENAI_BATCH_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                          "/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos")
AZURE_BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")

MAX_JSON_BODY = 64 * 1024 * 1024
MAX_FORM_FIELD = 64 * 1024
UPLOAD_CHUNK = 1 << 20
UPLOAD_PART_MAX = 64 << 20     # F §1.7: a part is at most 64 MB (the SDK's parts are 64 MiB)
UPLOAD_MAX_BYTES = 8 << 30     # F §1.7: an Upload holds at most 8 GB

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

_ALNUM = string.ascii_letters + string.digits
_REC_KEY = "sluicegate_fake_record"
_DIGEST_KEY = "sluicegate_fake_digest"


def _or_default(body: dict, key: str, default: object) -> object:
    """A request field as the Response object shows it: OpenAI answers an absent or null
    parameter with its default (``"parallel_tool_calls": null`` comes back as ``true``)."""
    value = body.get(key)
    return default if value is None else value


# responses.create parameters the fake echoes into the Response object, with the types
# OpenAI's API accepts for them (openai-python ``ResponseCreateParams``; OpenAI's API reference
# for POST /v1/responses). OpenAI answers a wrong type with a 400 ``invalid_type`` and a value
# outside an enum with a 400 ``invalid_value``, before anything is generated.
_NUMBER = (int, float)
_ECHOED_PARAMS: dict[str, tuple[tuple[type, ...], str]] = {
    "instructions": ((str, list), "a string"),
    "max_output_tokens": ((int,), "an integer"),
    "max_tool_calls": ((int,), "an integer"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "prompt_cache_key": ((str,), "a string"),
    "reasoning": ((dict,), "an object"),
    "safety_identifier": ((str,), "a string"),
    "service_tier": ((str,), "a string"),
    "temperature": (_NUMBER, "a decimal"),
    "text": ((dict,), "an object"),
    "tool_choice": ((str, dict), "a string or an object"),
    "tools": ((list,), "an array"),
    "top_logprobs": ((int,), "an integer"),
    "top_p": (_NUMBER, "a decimal"),
    "truncation": ((str,), "a string"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
}
_ENUMS = {
    "truncation": ("auto", "disabled"),
    "service_tier": ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast"),
    "tool_choice": ("none", "auto", "required"),
}
_JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array",
                    dict: "an object"}


def _check_echoed_params(body: dict) -> None:
    """OpenAI's 400s for a wrongly typed (or out-of-enum) parameter the fake would echo."""
    for key, (types, expected) in _ECHOED_PARAMS.items():
        value = body.get(key)
        if value is None:
            continue
        # bool is an int in Python, never in JSON
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            got = _JSON_TYPE_NAMES.get(type(value), "another type")
            raise _ApiError(400, f"Invalid type for '{key}': expected {expected}, but got {got} instead.",
                            param=key, code="invalid_type")
        allowed = _ENUMS.get(key)
        if allowed and isinstance(value, str) and value not in allowed:
            raise _ApiError(400, f"Invalid value: '{value[:64]}'. Supported values are: "
                            + ", ".join(f"'{a}'" for a in allowed) + ".", param=key, code="invalid_value")


# ============================================================================ records
@dataclass
class UploadedPart:
    """The ``file`` part of a multipart upload as received (streamed to disk, never buffered)."""

    filename: str | None
    content_type: str | None
    size: int
    sha256: str


@dataclass
class Recorded:
    """One request as the fake received it (filled in while the request is processed)."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    content_length: str | None  # raw Content-Length header value (None when chunked / absent)
    body_size: int | None = None  # bytes of request body received (None: connection was reset first)
    body_sha256: str | None = None  # sha256 hex of the whole raw request body
    json: Any = None  # parsed body for JSON requests, else None
    form: dict[str, Any] | None = None  # multipart fields in arrival order; "file" -> UploadedPart
    status: int | None = None  # HTTP status answered (None: no response was sent)
    fault: str | None = None  # "fail" / "reset" / "delay" when a fault was injected
    time: float = field(default_factory=time.time)


class RecordLog:
    """Thread-safe, list-like log of :class:`Recorded` requests (iteration works on a snapshot)."""

    def __init__(self) -> None:
        self._items: list[Recorded] = []
        self._lock = threading.Lock()

    def append(self, record: Recorded) -> None:
        with self._lock:
            self._items.append(record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self._items)

    def filter(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Records matching ``method`` (any case) and ``path`` (exact, or a prefix when it ends in ``*``)."""
        out = []
        for rec in self.snapshot():
            if method is not None and rec.method.upper() != method.upper():
                continue
            if path is not None:
                if path.endswith("*"):
                    if not rec.path.startswith(path[:-1]):
                        continue
                elif rec.path != path:
                    continue
            out.append(rec)
        return out

    def answered(self) -> bool:
        """Whether the fake is done with every request it got: each answered, or its connection
        closed on purpose (``reset_next``). A test that checks what the fake did *not* store
        waits for this, so a request still being read cannot store something after the check."""
        return all(rec.status is not None or rec.fault == "reset" for rec in self.snapshot())

    def __iter__(self) -> Iterator[Recorded]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        with self._lock:
            return self._items[index]

    def __repr__(self) -> str:
        return f"RecordLog({[f'{r.method} {r.path} -> {r.status}' for r in self.snapshot()]})"


# ============================================================================ stores
@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: int
    expires_at: int | None
    path: Path
    content_type: str | None = None  # Content-Type of the uploaded part
    processed_at: float = 0.0  # monotonic time from which Azure reports "processed"

    def status(self, flavor: Flavor) -> str:
        if flavor == "azure" and time.monotonic() < self.processed_at:
            return "pending"
        return "processed"


@dataclass
class StoredUpload:
    """An Upload (F §1.7): its declared size, its parts (id → (path, size)) and its state."""

    id: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    created_at: int
    expires_at: int
    status: str = "pending"
    parts: dict[str, tuple[Path, int]] = field(default_factory=dict)
    file_id: str | None = None


@dataclass
class StoredResponse:
    id: str
    request: dict[str, Any]  # the create body as received
    final: dict[str, Any]  # Response object once completed
    input_items: list[dict[str, Any]]
    events: list[dict[str, Any]]  # full SSE event sequence of a completed run
    background: bool
    complete_at: float | None  # monotonic time a background response completes by itself
    state: str | None = None  # forced terminal state: "completed" / "cancelled"

    @property
    def status(self) -> str:
        if self.state is not None:
            return self.state
        if not self.background or (self.complete_at is not None and time.monotonic() >= self.complete_at):
            return "completed"
        return "in_progress"

    def snapshot(self) -> dict[str, Any]:
        """The Response object as a retrieve would return it now."""
        status = self.status
        if status == "completed":
            return copy.deepcopy(self.final)
        return _unfinished(self.final, status)


def _unfinished(final: dict[str, Any], status: str) -> dict[str, Any]:
    obj = copy.deepcopy(final)
    obj.update(status=status, output=[], usage=None, completed_at=None)
    return obj


class _ApiError(Exception):
    """Raised by handlers; rendered in the flavor's error shape by the middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_
        self.headers = headers


# ============================================================================ body hashing
class BodyDigest:
    """sha256 + size of the raw request body, fed exactly once per byte."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.done = False

    def update(self, data: bytes) -> None:
        if data:
            self.sha.update(data)
            self.size += len(data)


class HashingReader:
    """The subset of ``aiohttp.StreamReader`` that ``MultipartReader`` uses, hashing every raw
    body byte once.  Data pushed back by the parser (``unread_data``) is served from a local
    buffer so it is not hashed twice."""

    def __init__(self, inner: Any, digest: BodyDigest) -> None:
        self._inner = inner
        self._digest = digest
        self._pending = bytearray()

    def at_eof(self) -> bool:
        return not self._pending and self._inner.at_eof()

    def unread_data(self, data: bytes) -> None:
        self._pending[:0] = data

    async def read(self, n: int = -1) -> bytes:
        if self._pending:
            if n < 0 or n >= len(self._pending):
                data = bytes(self._pending)
                self._pending.clear()
            else:
                data = bytes(self._pending[:n])
                del self._pending[:n]
            return data
        data = await self._inner.read(n)
        self._digest.update(data)
        return data

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        head = b""
        if self._pending:
            idx = self._pending.find(b"\n")
            if idx >= 0:
                line = bytes(self._pending[: idx + 1])
                del self._pending[: idx + 1]
                return line
            head = bytes(self._pending)
            self._pending.clear()
        rest = await self._inner.readline(max_line_length=max_line_length)
        self._digest.update(rest)
        return head + rest


# ============================================================================ helpers
def _now_int() -> int:
    return int(time.time())


def _rand_alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:4] + "*" * (len(key) - 8) + key[-4:]


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _split_deltas(text: str) -> list[str]:
    """Split into word-ish pieces (whitespace kept) so a reply streams as several deltas."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces or [text]


def _int_param(query: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(400, f"Invalid '{name}': expected an integer, got '{raw}'.", param=name) from None
    if not lo <= value <= hi:
        raise _ApiError(
            400,
            f"Invalid '{name}': integer out of range. Expected a value between {lo} and {hi}, got {value}.",
            param=name,
            code="integer_out_of_range",
        )
    return value


def _order_param(query: Any) -> str:
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _ApiError(
            400, f"Invalid value for 'order': '{order}'. Expected 'asc' or 'desc'.", param="order"
        )
    return order


def _paginate(
    items: list[dict[str, Any]], query: Any, *, default_limit: int, max_limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """``items`` oldest first → (page, has_more) honouring ``order``, ``after``, ``limit``."""
    order = _order_param(query)
    limit = _int_param(query, "limit", default_limit, 1, max_limit)
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    return ordered[:limit], len(ordered) > limit


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


# ============================================================================ the fake
class FakeOpenAI:
    """Fake OpenAI (``flavor="openai"``) or Azure OpenAI classic (``flavor="azure"``) upstream.

    Tunables (plain attributes, settable from the test thread at any time):
      * ``stream_delay`` – seconds slept between two SSE events (default 0).
      * ``background_duration`` – seconds a ``background: true`` response stays
        ``in_progress`` before it completes by itself (default 1.0).
      * ``azure_processing_delay`` – seconds an Azure upload reports ``pending`` (default 0,
        i.e. the upload answer says ``pending`` and the first retrieve says ``processed``).
      * ``reply`` – optional ``callable(create_body) -> str`` producing the answer text
        (default ``"echo: <input text>"``).
      * ``validate_file_ids`` – reject Responses input whose ``file_id`` is unknown (default True).

    Fault injection (thread-safe; each injected fault is consumed by one request):
    ``fail_next``, ``reset_next``, ``delay_next``, ``drop_stream_after``, ``clear_faults``.
    Observation: ``requests`` (:class:`RecordLog` of :class:`Recorded`), ``files``,
    ``responses``, ``open_streams``, ``streams_completed``, ``streams_dropped``,
    ``stream_client_disconnects`` and ``wait_until(predicate)``.

    ``api_version`` may be a tuple to accept several versions (the first is ``api_version``).
    Note: the real Azure ``2024-10-21`` has no Responses API; the fake serves it anyway so a
    gateway configured with a single api-version can be tested end to end.
    """

    def __init__(
        self,
        flavor: Flavor = "openai",
        *,
        api_key: str = "sk-upstream-test",
        api_version: str | tuple[str, ...] = "2024-10-21",
        data_dir: str | os.PathLike[str] | None = None,
        ssl_context: "ssl.SSLContext | None" = None,
    ) -> None:
        if flavor not in ("openai", "azure"):
            raise ValueError(f"unknown flavor {flavor!r}")
        self.flavor: Flavor = flavor
        self.api_key = api_key
        versions = (api_version,) if isinstance(api_version, str) else tuple(api_version)
        self.api_versions: tuple[str, ...] = versions
        self.api_version = self.api_versions[0]
        self._own_data_dir = data_dir is None
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="fake-openai-")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = "/v1" if flavor == "openai" else "/openai"
        self.ssl_context = ssl_context  # served over HTTPS with it

        self.stream_delay = 0.0
        self.background_duration = 1.0
        self.azure_processing_delay = 0.0
        self.reply: Callable[[dict[str, Any]], str] | None = None
        self.validate_file_ids = True

        self.requests = RecordLog()
        self._lock = threading.RLock()
        self._faults = FaultQueue()
        self._stream_drops: list[int] = []
        self._files: dict[str, StoredFile] = {}
        self._file_seq = itertools.count()
        self._file_order: dict[str, int] = {}
        self._responses: dict[str, StoredResponse] = {}
        # /batches (tests/fakes/batches.py); ``batches.duration``: seconds a batch runs
        self.batches = BatchEngine(
            read_input=self._batch_input, write_output=self._batch_output,
            error=lambda status, message, param, code: _ApiError(
                status, message, param=param, code=("invalidPayload" if status == 400 else "404")
                if flavor == "azure" else code),
            new_id=(lambda: "batch_" + str(uuid.uuid4())) if flavor == "azure" else (lambda: "batch_" + _rand_alnum(24)),
            endpoints=AZURE_BATCH_ENDPOINTS if flavor == "azure" else OPENAI_BATCH_ENDPOINTS,
            lock=self._lock)
        self.uploads: dict[str, StoredUpload] = {}

        self.open_streams = 0
        self.streams_completed = 0
        self.streams_dropped = 0
        self.stream_client_disconnects = 0

        self._app: web.Application | None = None
        self._server: ThreadedServer | None = None

    # ------------------------------------------------------------------ serving
    @property
    def app(self) -> web.Application:
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def serve(self) -> ThreadedServer:
        """Start a :class:`ThreadedServer` for this fake (``fake.url`` becomes available)."""
        if self._server is None:
            self._server = ThreadedServer(self.app, ssl_context=self.ssl_context).start()
        return self._server

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("call serve() first (or use the fake as a context manager)")
        return self._server.url

    @property
    def base_url(self) -> str:
        """``url`` + the flavor's API prefix (``/v1`` or ``/openai``)."""
        return self.url + self.prefix

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._app = None  # an aiohttp app is frozen once served; serve() again builds a new one
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> FakeOpenAI:
        self.serve()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ fault injection
    def fail_next(
        self,
        status: int,
        body: Any = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        *,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (optionally only those whose path starts with
        ``path``) with ``status``; ``body`` defaults to a provider-shaped error (a dict is sent
        as JSON, str/bytes verbatim).  The request body is still read and recorded first."""
        self._faults.add(Fault("fail", times, path, status=status, body=body, headers=headers))

    def reset_next(self, times: int = 1, *, path: str | None = None, after_bytes: int | None = None) -> None:
        """Close the connection of the next ``times`` requests without any response; with
        ``after_bytes``, first receive that many body bytes (an upstream dying mid-upload)."""
        self._faults.add(Fault("reset", times, path, after_bytes=after_bytes))

    def delay_next(self, seconds: float, times: int = 1, *, path: str | None = None) -> None:
        """Sleep ``seconds`` before handling the next ``times`` requests."""
        self._faults.add(Fault("delay", times, path, seconds=seconds))

    def drop_stream_after(self, n_events: int, times: int = 1) -> None:
        """The next ``times`` SSE streams close the connection abruptly after ``n_events`` events
        (no terminal event, no final zero-length chunk)."""
        with self._lock:
            self._stream_drops.extend([n_events] * times)

    def clear_faults(self) -> None:
        self._faults.clear()
        with self._lock:
            self._stream_drops.clear()

    def _take_stream_drop(self) -> int | None:
        with self._lock:
            return self._stream_drops.pop(0) if self._stream_drops else None

    # ------------------------------------------------------------------ inspection
    @property
    def files(self) -> dict[str, StoredFile]:
        """Snapshot ``{file_id: StoredFile}`` (``.sha256`` is the digest of the stored content)."""
        with self._lock:
            return dict(self._files)

    @property
    def responses(self) -> dict[str, StoredResponse]:
        """Snapshot ``{response_id: StoredResponse}`` of stored responses."""
        with self._lock:
            return dict(self._responses)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``predicate`` (typically over ``requests``) until true or ``timeout``: whether it held."""
        return wait_until(predicate, timeout, interval)

    def reset(self) -> None:
        """Forget requests, faults, files and responses (files on disk are removed)."""
        self.clear_faults()
        self.requests.clear()
        with self._lock:
            for stored in self._files.values():
                stored.path.unlink(missing_ok=True)
            self._files.clear()
            self._file_order.clear()
            self._responses.clear()

    def add_file(
        self,
        content: bytes | str | os.PathLike[str],
        *,
        filename: str = "upload",
        purpose: str = "batch",
    ) -> StoredFile:
        """Seed a file directly (e.g. a batch output) without an HTTP upload.
        ``content`` is bytes, or a path whose content is copied."""
        file_id = self._new_file_id()
        dest = self.data_dir / file_id
        if isinstance(content, (bytes, bytearray)):
            dest.write_bytes(content)
        else:
            shutil.copyfile(content, dest)
        size = dest.stat().st_size
        digest = hashlib.sha256()
        with open(dest, "rb") as fh:
            while chunk := fh.read(UPLOAD_CHUNK):
                digest.update(chunk)
        stored = StoredFile(file_id, filename, purpose, size, digest.hexdigest(), _now_int(), None, dest)
        self._store_file(stored)
        return stored

    # ------------------------------------------------------------------ app wiring
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._on_prepare)
        p = self.prefix
        r = app.router
        r.add_post(f"{p}/files", self._upload_file)
        r.add_get(f"{p}/files", self._list_files)
        r.add_get(f"{p}/files/{{file_id}}", self._retrieve_file)
        r.add_delete(f"{p}/files/{{file_id}}", self._delete_file)
        r.add_get(f"{p}/files/{{file_id}}/content", self._file_content)
        r.add_post(f"{p}/batches", self._create_batch)
        r.add_get(f"{p}/batches", self._list_batches)
        r.add_get(f"{p}/batches/{{batch_id}}", self._retrieve_batch)
        r.add_post(f"{p}/batches/{{batch_id}}/cancel", self._cancel_batch)
        r.add_post(f"{p}/responses", self._create_response)
        r.add_get(f"{p}/responses/{{response_id}}", self._retrieve_response)
        r.add_delete(f"{p}/responses/{{response_id}}", self._delete_response)
        r.add_post(f"{p}/responses/{{response_id}}/cancel", self._cancel_response)
        r.add_get(f"{p}/responses/{{response_id}}/input_items", self._list_input_items)
        r.add_post(f"{p}/uploads", self._create_upload)
        r.add_post(f"{p}/uploads/{{upload_id}}/parts", self._add_upload_part)
        r.add_post(f"{p}/uploads/{{upload_id}}/complete", self._complete_upload)
        r.add_post(f"{p}/uploads/{{upload_id}}/cancel", self._cancel_upload)
        r.add_route("*", "/{tail:.*}", self._invalid_url)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            content_length=request.headers.get(hdrs.CONTENT_LENGTH),
        )
        self.requests.append(rec)
        request[_REC_KEY] = rec
        request[_DIGEST_KEY] = BodyDigest()
        fault = self._faults.take(request.path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "reset":
                if fault.after_bytes:
                    await self._read_some_body(request, fault.after_bytes)
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)  # never sent: the connection is gone
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        try:
            if fault is not None and fault.kind == "fail":
                await self._drain_body(request)
                return self._fault_response(fault)
            self._check_auth(request)
            return await handler(request)
        except _ApiError as exc:
            await self._drain_body(request)
            return self._error_response(exc)
        finally:
            if not request[_DIGEST_KEY].done and request.transport is not None:
                await self._drain_body(request)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.flavor == "openai":
            response.headers.setdefault("x-request-id", "req_" + secrets.token_hex(16))
        else:
            response.headers.setdefault("apim-request-id", str(uuid.uuid4()))
        rec = request.get(_REC_KEY)
        if rec is not None and rec.fault != "reset":
            rec.status = response.status

    def _check_auth(self, request: web.Request) -> None:
        if self.flavor == "openai":
            auth = request.headers.get(hdrs.AUTHORIZATION, "")
            scheme, _, token = auth.partition(" ")
            if not auth or scheme.lower() != "bearer" or not token.strip():
                raise _ApiError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    type_="invalid_request_error",
                )
            if token.strip() != self.api_key:
                raise _ApiError(
                    401,
                    f"Incorrect API key provided: {_mask_key(token.strip())}. You can find your "
                    "API key at https://platform.openai.com/account/api-keys.",
                    type_="invalid_request_error",
                    code="invalid_api_key",
                )
            return
        if request.headers.get("api-key") != self.api_key:
            raise _ApiError(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                "provide a valid key for an active subscription and use a correct regional API "
                "endpoint for your resource.",
                code="401",
            )
        version = request.query.get("api-version")
        if version is None:
            raise _ApiError(
                400,
                "Missing required query parameter 'api-version'.",
                param="api-version",
                code="BadRequest",
            )
        if version not in self.api_versions:
            raise _ApiError(400, "API version not supported", param="api-version", code="BadRequest")

    # ------------------------------------------------------------------ error rendering
    def _error_body(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
    ) -> dict[str, Any]:
        if self.flavor == "azure":
            return {
                "error": {
                    "code": code or str(status),
                    "message": message,
                    "param": param,
                    "type": "error",
                    "inner_error": None,
                }
            }
        if type_ is None:
            type_ = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def _error_response(self, exc: _ApiError) -> web.Response:
        body = self._error_body(exc.status, exc.message, param=exc.param, code=exc.code, type_=exc.type)
        return _json_response(body, exc.status, exc.headers)

    _DEFAULT_FAULT_MESSAGES = {
        400: "Bad request.",
        401: "Invalid authentication.",
        403: "You are not allowed to access this resource.",
        404: "Not found.",
        408: "Request timed out.",
        409: "The request conflicts with the current state of the resource.",
        429: "Rate limit reached for requests. Please try again later.",
        500: "The server had an error while processing your request. Sorry about that!",
        502: "Bad gateway.",
        503: "The server is overloaded or not ready yet.",
        504: "Gateway timeout.",
    }

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = dict(fault.headers or {})
        if fault.body is None:
            message = self._DEFAULT_FAULT_MESSAGES.get(fault.status, f"Injected HTTP {fault.status} error.")
            code = "rate_limit_exceeded" if fault.status == 429 and self.flavor == "openai" else None
            return _json_response(self._error_body(fault.status, message, code=code), fault.status, headers)
        if isinstance(fault.body, (dict, list)):
            return _json_response(fault.body, fault.status, headers)
        raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
        if hdrs.CONTENT_TYPE not in CIMultiDict(headers):
            try:
                orjson.loads(raw)
                headers[hdrs.CONTENT_TYPE] = "application/json"
            except orjson.JSONDecodeError:
                headers[hdrs.CONTENT_TYPE] = "text/plain"
        return web.Response(body=raw, status=fault.status, headers=headers)

    async def _invalid_url(self, request: web.Request) -> web.Response:
        if self.flavor == "azure":
            raise _ApiError(404, "Resource not found", code="404")
        raise _ApiError(404, f"Invalid URL ({request.method} {request.path})")

    # ------------------------------------------------------------------ body reading
    def _finish_digest(self, request: web.Request) -> None:
        digest: BodyDigest = request[_DIGEST_KEY]
        digest.done = True
        rec: Recorded = request[_REC_KEY]
        rec.body_size = digest.size
        rec.body_sha256 = digest.sha.hexdigest()

    async def _drain_body(self, request: web.Request) -> None:
        """Read and hash what is left of the body; a JSON body is also parsed into ``Recorded.json``."""
        digest: BodyDigest = request[_DIGEST_KEY]
        if digest.done:
            return
        keep = request.content_type == "application/json"
        buf = bytearray()
        try:
            async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
                digest.update(chunk)
                if keep and len(buf) + len(chunk) <= MAX_JSON_BODY:
                    buf.extend(chunk)
        except Exception:  # noqa: BLE001 - the client went away mid-body; record what arrived
            keep = False
        self._finish_digest(request)
        if keep and buf:
            try:
                request[_REC_KEY].json = orjson.loads(buf)
            except orjson.JSONDecodeError:
                pass

    async def _read_some_body(self, request: web.Request, limit: int) -> None:
        """Receive (and hash) at least ``limit`` body bytes, or all of a shorter body."""
        digest: BodyDigest = request[_DIGEST_KEY]
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            digest.update(chunk)
            if digest.size >= limit:
                break
        rec: Recorded = request[_REC_KEY]
        rec.body_size = digest.size
        rec.body_sha256 = digest.sha.hexdigest()

    async def _read_json_body(self, request: web.Request) -> Any:
        digest: BodyDigest = request[_DIGEST_KEY]
        buf = bytearray()
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            digest.update(chunk)
            if len(buf) + len(chunk) > MAX_JSON_BODY:
                await self._drain_body(request)
                raise _ApiError(413, "Request body too large.")
            buf.extend(chunk)
        self._finish_digest(request)
        if not buf:
            return None
        try:
            data = orjson.loads(buf)
        except orjson.JSONDecodeError:
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)",
            ) from None
        request[_REC_KEY].json = data
        return data

    # ------------------------------------------------------------------ uploads (F §1.7)
    def _upload_object(self, up: StoredUpload) -> dict[str, Any]:
        stored = self._files.get(up.file_id) if up.file_id else None
        return {"id": up.id, "object": "upload", "bytes": up.bytes, "created_at": up.created_at,
                "filename": up.filename, "purpose": up.purpose, "status": up.status, "expires_at": up.expires_at,
                "file": self._file_object(stored) if stored is not None else None}

    def _pending_upload(self, upload_id: str) -> StoredUpload:
        with self._lock:
            up = self.uploads.get(upload_id)
        if up is None:
            raise _ApiError(404, f"No such Upload object: {upload_id}", param="upload_id")
        if up.status == "pending" and time.time() >= up.expires_at:
            up.status = "expired"
        if up.status != "pending":
            # choice: the status code and wording for a settled upload are not in the sources
            raise _ApiError(400, f"Upload {upload_id} is {up.status}.", param="upload_id")
        return up

    async def _create_upload(self, request: web.Request) -> web.Response:
        body = await self._read_json_body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        for name in ("bytes", "filename", "mime_type", "purpose"):
            if body.get(name) is None:
                raise _ApiError(400, f"'{name}' is a required property", param=name)
        allowed = AZURE_UPLOAD_PURPOSES if self.flavor == "azure" else OPENAI_UPLOAD_PURPOSES
        if body["purpose"] not in allowed:
            raise _ApiError(400, f"'{body['purpose']}' is not one of {list(allowed)} - 'purpose'", param="purpose")
        if not isinstance(body["bytes"], int) or not 0 <= body["bytes"] <= UPLOAD_MAX_BYTES:
            raise _ApiError(400, f"bytes must be at most {UPLOAD_MAX_BYTES}.", param="bytes")
        now = _now_int()
        up = StoredUpload(id="upload_" + _rand_alnum(24), filename=body["filename"], purpose=body["purpose"],
                          bytes=body["bytes"], mime_type=body["mime_type"], created_at=now, expires_at=now + 3600)
        with self._lock:
            self.uploads[up.id] = up
        return _json_response(self._upload_object(up))

    async def _add_upload_part(self, request: web.Request) -> web.Response:
        up = self._pending_upload(request.match_info["upload_id"])
        part_id = "part_" + _rand_alnum(24)
        path = self.data_dir / f".{up.id}.{part_id}"
        hashing = HashingReader(request.content, request[_DIGEST_KEY])
        reader = MultipartReader(request.headers, hashing)  # type: ignore[arg-type]
        size = -1
        try:
            async for part in reader:
                if isinstance(part, MultipartReader) or part.name != "data" or size >= 0:
                    raise _ApiError(400, "The body must have exactly one 'data' part.", param="data")
                size = 0
                with open(path, "wb") as out:
                    while chunk := await part.read_chunk(UPLOAD_CHUNK):
                        size += len(chunk)
                        if size > UPLOAD_PART_MAX:
                            raise _ApiError(400, f"A part can be at most {UPLOAD_PART_MAX} bytes.", param="data")
                        out.write(chunk)
            if size < 0:
                raise _ApiError(400, "'data' is a required property", param="data")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        await self._drain_body(request)
        with self._lock:
            up.parts[part_id] = (path, size)
        return _json_response({"id": part_id, "object": "upload.part", "created_at": _now_int(), "upload_id": up.id})

    async def _complete_upload(self, request: web.Request) -> web.Response:
        body = await self._read_json_body(request)
        up = self._pending_upload(request.match_info["upload_id"])
        part_ids = body.get("part_ids") if isinstance(body, dict) else None
        if not isinstance(part_ids, list):
            raise _ApiError(400, "'part_ids' is a required property", param="part_ids")
        unknown = [p for p in part_ids if p not in up.parts]
        if unknown or len(set(part_ids)) != len(part_ids):
            raise _ApiError(400, f"Invalid part ids: {unknown or part_ids}", param="part_ids")
        total = sum(up.parts[p][1] for p in part_ids)
        if total != up.bytes:
            raise _ApiError(400, f"The parts hold {total} bytes, the Upload declared {up.bytes}.", param="part_ids")
        file_id = self._new_file_id()
        final = self.data_dir / file_id
        sha, md5 = hashlib.sha256(), hashlib.md5()
        with open(final, "wb") as out:
            for pid in part_ids:
                with open(up.parts[pid][0], "rb") as src:
                    while chunk := src.read(UPLOAD_CHUNK):
                        sha.update(chunk)
                        md5.update(chunk)
                        out.write(chunk)
        if body.get("md5") and body["md5"] != md5.hexdigest():
            final.unlink()
            raise _ApiError(400, "The md5 checksum does not match.", param="md5")
        self._store_file(StoredFile(id=file_id, filename=up.filename, purpose=up.purpose, bytes=total,
                                    sha256=sha.hexdigest(), created_at=_now_int(), expires_at=None, path=final))
        with self._lock:
            up.status, up.file_id = "completed", file_id
            for path, _ in up.parts.values():
                path.unlink(missing_ok=True)
        return _json_response(self._upload_object(up))

    async def _cancel_upload(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        up = self._pending_upload(request.match_info["upload_id"])
        with self._lock:
            up.status = "cancelled"
            for path, _ in up.parts.values():
                path.unlink(missing_ok=True)
        return _json_response(self._upload_object(up))

    # ------------------------------------------------------------------ files
    def _new_file_id(self) -> str:
        if self.flavor == "azure":
            return "file-" + secrets.token_hex(16)
        return "file-" + _rand_alnum(24)

    def _store_file(self, stored: StoredFile) -> None:
        with self._lock:
            self._files[stored.id] = stored
            self._file_order[stored.id] = next(self._file_seq)

    def _get_file(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            if self.flavor == "azure":
                raise _ApiError(404, f"File with id '{file_id}' not found.", code="404")
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    def _file_object(self, stored: StoredFile, status: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": stored.id,
            "object": "file",
            "bytes": stored.bytes,
            "created_at": stored.created_at,
            "filename": stored.filename,
            "purpose": stored.purpose,
            "status": status or stored.status(self.flavor),
        }
        if self.flavor == "openai":
            obj["expires_at"] = stored.expires_at
            obj["status_details"] = None
        elif stored.expires_at is not None:
            obj["expires_at"] = stored.expires_at
        return obj

    async def _upload_file(self, request: web.Request) -> web.Response:
        if request.content_type != "multipart/form-data":
            raise _ApiError(
                400,
                f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data.",
                code="invalidPayload" if self.flavor == "azure" else None,
            )
        file_id = self._new_file_id()
        part_path = self.data_dir / f".{file_id}.part"
        try:
            fields, upload = await self._receive_multipart(request, part_path)
            stored = self._validate_upload(file_id, fields, upload, part_path)
        except BaseException:
            part_path.unlink(missing_ok=True)
            raise
        part_path.replace(stored.path)
        self._store_file(stored)
        if self.flavor == "azure":
            version = request.query["api-version"]
            location = f"{request.scheme}://{request.host}{self.prefix}/files/{file_id}?api-version={version}"
            return _json_response(self._file_object(stored, "pending"), 201, {"Location": location})
        return _json_response(self._file_object(stored))

    async def _receive_multipart(
        self, request: web.Request, part_path: Path
    ) -> tuple[dict[str, str], UploadedPart | None]:
        """Stream the multipart body: the ``file`` part goes to ``part_path`` (hashing it), other
        fields are kept (bounded); the whole raw body is hashed on the way."""
        rec: Recorded = request[_REC_KEY]
        rec.form = {}
        fields: dict[str, str] = {}
        upload: UploadedPart | None = None
        hashing = HashingReader(request.content, request[_DIGEST_KEY])
        reader = MultipartReader(request.headers, hashing)  # type: ignore[arg-type]
        try:
            async for part in reader:
                if isinstance(part, MultipartReader):
                    raise _ApiError(400, "Nested multipart bodies are not supported.")
                name = part.name or ""
                if name == "file":
                    if upload is not None:
                        raise _ApiError(400, "Only one 'file' part is allowed.", param="file")
                    sha = hashlib.sha256()
                    size = 0
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
                            raise _ApiError(400, f"Form field '{name}' is too large.", param=name)
                    fields[name] = value.decode("utf-8", "replace")
                    rec.form[name] = fields[name]
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # e.g. a control byte in a part header: OpenAI answers 400, never 500
            raise _ApiError(400, f"Could not parse multipart form: {exc}") from None
        await self._drain_body(request)  # epilogue, if any
        return fields, upload

    def _validate_upload(
        self, file_id: str, fields: dict[str, str], upload: UploadedPart | None, part_path: Path
    ) -> StoredFile:
        azure = self.flavor == "azure"
        bad = "invalidPayload" if azure else None
        allowed = AZURE_UPLOAD_PURPOSES if azure else OPENAI_UPLOAD_PURPOSES
        purpose = fields.get("purpose")
        if upload is None:
            raise _ApiError(400, "'file' is a required property", param="file", code=bad)
        if purpose is None:
            raise _ApiError(400, "'purpose' is a required property", param="purpose", code=bad)
        if purpose not in allowed:
            message = (
                f"The purpose '{purpose}' is not supported."
                if azure
                else f"'{purpose}' is not one of {list(allowed)} - 'purpose'"
            )
            raise _ApiError(400, message, param="purpose", code=bad)
        created_at = _now_int()
        expires_at = None
        anchor = fields.get("expires_after[anchor]")
        seconds_raw = fields.get("expires_after[seconds]")
        if anchor is not None or seconds_raw is not None:
            if anchor != "created_at":
                raise _ApiError(
                    400,
                    f"Invalid value for 'expires_after.anchor': {anchor!r}. Supported values are: 'created_at'.",
                    param="expires_after.anchor",
                    code=bad,
                )
            lo = AZURE_BATCH_EXPIRES_MIN_SECONDS if azure and purpose == "batch" else EXPIRES_MIN_SECONDS
            try:
                seconds = int(seconds_raw or "")
            except ValueError:
                seconds = -1
            if not lo <= seconds <= EXPIRES_MAX_SECONDS:
                raise _ApiError(
                    400,
                    f"Invalid 'expires_after.seconds': expected an integer between {lo} and "
                    f"{EXPIRES_MAX_SECONDS}, got {seconds_raw!r}.",
                    param="expires_after.seconds",
                    code=bad,
                )
            expires_at = created_at + seconds
        elif purpose == "batch" and not azure:
            expires_at = created_at + BATCH_DEFAULT_EXPIRY_SECONDS
        return StoredFile(
            id=file_id,
            filename=upload.filename or "upload",
            purpose=purpose,
            bytes=upload.size,
            sha256=upload.sha256,
            created_at=created_at,
            expires_at=expires_at,
            path=self.data_dir / file_id,
            content_type=upload.content_type,
            processed_at=time.monotonic() + self.azure_processing_delay,
        )

    async def _list_files(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        purpose = request.query.get("purpose")
        with self._lock:
            stored = sorted(self._files.values(), key=lambda f: self._file_order[f.id])
        items = [self._file_object(f) for f in stored if purpose is None or f.purpose == purpose]
        page, has_more = _paginate(items, request.query, default_limit=10_000, max_limit=10_000)
        if self.flavor == "azure":  # classic family: no cursor fields
            return _json_response({"object": "list", "data": page})
        return _json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": has_more,
            }
        )

    async def _retrieve_file(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        return _json_response(self._file_object(self._get_file(request.match_info["file_id"])))

    async def _delete_file(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        stored = self._get_file(request.match_info["file_id"])
        with self._lock:
            self._files.pop(stored.id, None)
            self._file_order.pop(stored.id, None)
        stored.path.unlink(missing_ok=True)
        if self.flavor == "azure":
            return _json_response({"object": "file", "deleted": True, "id": stored.id})
        return _json_response({"id": stored.id, "object": "file", "deleted": True})

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        await self._drain_body(request)
        stored = self._get_file(request.match_info["file_id"])
        return web.FileResponse(
            stored.path, chunk_size=256 * 1024, headers={hdrs.CONTENT_TYPE: "application/octet-stream"}
        )

    # ------------------------------------------------------------------ batches
    def _batch_input(self, file_id: str) -> tuple[str, bytes]:
        try:
            stored = self._get_file(file_id)
        except _ApiError as exc:
            raise _ApiError(exc.status, exc.message, param="input_file_id", code=exc.code) from None
        return stored.purpose, stored.path.read_bytes()

    def _batch_output(self, filename: str, content: bytes) -> str:
        """A ``batch_output`` file the batch wrote (Azure: ``file-`` + a dashed UUID)."""
        file_id = "file-" + str(uuid.uuid4()) if self.flavor == "azure" else self._new_file_id()
        path = self.data_dir / file_id
        path.write_bytes(content)
        self._store_file(StoredFile(file_id, filename, "batch_output", len(content),
                                    hashlib.sha256(content).hexdigest(), _now_int(), None, path))
        return file_id

    async def _create_batch(self, request: web.Request) -> web.Response:
        obj = self.batches.create(await self._read_json_body(request))
        return _json_response(obj, 201 if self.flavor == "azure" else 200)

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        return _json_response(self.batches.get(request.match_info["batch_id"]))

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        return _json_response(self.batches.cancel(request.match_info["batch_id"]))

    async def _list_batches(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        page, has_more = _paginate(self.batches.all(), request.query, default_limit=20, max_limit=100)
        return _json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                               "last_id": page[-1]["id"] if page else None, "has_more": has_more})

    # ------------------------------------------------------------------ responses
    def _created_at(self) -> int | float:
        now = _now_int()
        return float(now) if self.flavor == "azure" else now

    def _get_response(self, response_id: str) -> StoredResponse:
        with self._lock:
            stored = self._responses.get(response_id)
        if stored is None:
            raise _ApiError(
                404,
                f"Response with id '{response_id}' not found.",
                param="response_id",
                code="404" if self.flavor == "azure" else None,
            )
        return stored

    def _input_items(self, raw_input: Any) -> list[dict[str, Any]]:
        if raw_input is None:
            return []
        if isinstance(raw_input, str):
            raw_input = [{"role": "user", "content": raw_input}]
        if not isinstance(raw_input, list):
            raise _ApiError(400, "Invalid type for 'input': expected a string or an array.", param="input")
        items = []
        for raw in raw_input:
            if not isinstance(raw, dict):
                raise _ApiError(400, "Invalid type for 'input[]': expected an object.", param="input")
            item = copy.deepcopy(raw)
            if "type" not in item and "role" in item:
                item["type"] = "message"
            if item.get("type") == "message":
                content = item.get("content")
                if isinstance(content, str):
                    part_type = "output_text" if item.get("role") == "assistant" else "input_text"
                    item["content"] = [{"type": part_type, "text": content}]
                item.setdefault("status", "completed")
                prefix = "msg"
            else:
                prefix = "item"
            item.setdefault("id", f"{prefix}_{secrets.token_hex(25)}")
            items.append(item)
        return items

    @staticmethod
    def _input_text(items: list[dict[str, Any]]) -> str:
        """Text of the last user message (falls back to every text part)."""
        def texts(item: dict[str, Any]) -> list[str]:
            content = item.get("content")
            if not isinstance(content, list):
                return []
            return [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "input_text"]

        for item in reversed(items):
            if item.get("type") == "message" and item.get("role") == "user" and texts(item):
                return " ".join(texts(item))
        return " ".join(t for item in items for t in texts(item))

    def _check_file_ids(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            content = item.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, dict) and part.get("file_id"):
                    file_id = part["file_id"]
                    with self._lock:
                        known = file_id in self._files
                    if not known:
                        raise _ApiError(
                            400,
                            f"The file '{file_id}' could not be found.",
                            param="input",
                            code="invalidPayload" if self.flavor == "azure" else "file_not_found",
                        )

    def _build_response(self, body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = self._input_text(items)
        text = self.reply(body) if self.reply is not None else f"echo: {prompt}"
        created = self._created_at()
        input_tokens = max(1, len(prompt.split()))
        output_tokens = len(_split_deltas(text))
        service_tier = body.get("service_tier")
        message = {
            "id": f"msg_{secrets.token_hex(25)}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
        return {
            "id": f"resp_{secrets.token_hex(25)}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "background": bool(body.get("background")),
            "completed_at": created,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": [message],
            "parallel_tool_calls": _or_default(body, "parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default" if service_tier in (None, "auto") else service_tier,
            "store": body.get("store", True) is not False,
            "temperature": _or_default(body, "temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": _or_default(body, "tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": _or_default(body, "top_logprobs", 0),
            "top_p": _or_default(body, "top_p", 1.0),
            "truncation": _or_default(body, "truncation", "disabled"),
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    @staticmethod
    def _build_events(final: dict[str, Any], *, background: bool, obfuscate: bool) -> list[dict[str, Any]]:
        """The event sequence of a plain text answer (docs/provider-facts.md §3.5),
        ``sequence_number`` from 0 by 1."""
        events: list[dict[str, Any]] = []

        def add(type_: str, **payload: Any) -> None:
            events.append({"type": type_, "sequence_number": len(events), **copy.deepcopy(payload)})

        message = final["output"][0]
        text = message["content"][0]["text"]
        loc = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        add("response.created", response=_unfinished(final, "queued" if background else "in_progress"))
        if background:
            add("response.queued", response=_unfinished(final, "queued"))
        add("response.in_progress", response=_unfinished(final, "in_progress"))
        add("response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []})
        empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        add("response.content_part.added", **loc, part=empty_part)
        for delta in _split_deltas(text):
            extra = {"obfuscation": _rand_alnum(secrets.randbelow(12) + 4)} if obfuscate else {}
            add("response.output_text.delta", **loc, delta=delta, logprobs=[], **extra)
        add("response.output_text.done", **loc, text=text, logprobs=[])
        add("response.content_part.done", **loc, part=message["content"][0])
        add("response.output_item.done", output_index=0, item=message)
        add("response.completed", response=final)
        return events

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json_body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        if not body.get("model"):
            raise _ApiError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        _check_echoed_params(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            with self._lock:
                known = previous in self._responses
            if not known:
                raise _ApiError(
                    400,
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
        items = self._input_items(body.get("input"))
        if self.validate_file_ids:
            self._check_file_ids(items)
        background = bool(body.get("background"))
        store = body.get("store", True) is not False
        if background and not store:
            raise _ApiError(400, "Background responses require store=true.", param="background")
        final = self._build_response(body, items)
        obfuscate = (body.get("stream_options") or {}).get("include_obfuscation", True) is not False
        stored = StoredResponse(
            id=final["id"],
            request=body,
            final=final,
            input_items=items,
            events=self._build_events(final, background=background, obfuscate=obfuscate),
            background=background,
            complete_at=time.monotonic() + self.background_duration if background else None,
        )
        if store:
            with self._lock:
                self._responses[stored.id] = stored
        if body.get("stream"):
            return await self._stream_events(request, stored.events, on_complete=self._completer(stored))
        if background:
            return _json_response(_unfinished(final, "queued"))
        return _json_response(final)

    async def _retrieve_response(self, request: web.Request) -> web.StreamResponse:
        await self._drain_body(request)
        stored = self._get_response(request.match_info["response_id"])
        if not _flag(request.query.get("stream")):
            return _json_response(stored.snapshot())
        starting_after = _int_param(request.query, "starting_after", -1, -1, 1 << 31)
        events = stored.events
        if stored.status == "cancelled":  # a cancelled run never produced its output events
            lifecycle = ("response.created", "response.queued", "response.in_progress")
            events = [e for e in events if e["type"] in lifecycle]
        events = [e for e in events if e["sequence_number"] > starting_after]
        return await self._stream_events(request, events, on_complete=self._completer(stored))

    def _completer(self, stored: StoredResponse) -> Callable[[], None] | None:
        """For background responses: a callback marking the run completed once its stream ended."""
        if not stored.background:
            return None

        def complete() -> None:
            with self._lock:
                stored.state = stored.state or "completed"

        return complete

    async def _delete_response(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        stored = self._get_response(request.match_info["response_id"])
        with self._lock:
            self._responses.pop(stored.id, None)
        return _json_response({"id": stored.id, "object": "response", "deleted": True})

    async def _cancel_response(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        stored = self._get_response(request.match_info["response_id"])
        if not stored.background:
            raise _ApiError(
                400,
                "Only responses created with background=true can be cancelled",
                param="response_id",
                code="invalidPayload" if self.flavor == "azure" else None,
            )
        with self._lock:
            if stored.status in ("queued", "in_progress"):
                stored.state = "cancelled"
        return _json_response(stored.snapshot())  # idempotent on terminal responses

    async def _list_input_items(self, request: web.Request) -> web.Response:
        await self._drain_body(request)
        stored = self._get_response(request.match_info["response_id"])
        page, has_more = _paginate(stored.input_items, request.query, default_limit=20, max_limit=100)
        return _json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": has_more,
            }
        )

    # ------------------------------------------------------------------ SSE
    async def _stream_events(
        self,
        request: web.Request,
        events: list[dict[str, Any]],
        *,
        on_complete: Callable[[], None] | None = None,
    ) -> web.StreamResponse:
        """Write ``events`` as SSE, one write per event, ``stream_delay`` apart.  Honours
        ``drop_stream_after`` and counts client disconnects."""
        headers = {hdrs.CONTENT_TYPE: SSE_CONTENT_TYPE, hdrs.CACHE_CONTROL: "no-cache"}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        drop_after = self._take_stream_drop()
        with self._lock:
            self.open_streams += 1
        try:
            for index, event in enumerate(events):
                if drop_after is not None and index >= drop_after:
                    with self._lock:
                        self.streams_dropped += 1
                    if request.transport is not None:
                        request.transport.close()  # flushes what was written, no terminal chunk
                    return resp
                delay = self.stream_delay
                if index and delay > 0 and await self._sleep_until_disconnect(request, delay):
                    raise ConnectionResetError("client disconnected")
                await resp.write(_sse(event))
            await resp.write_eof()
        except ConnectionError:
            with self._lock:
                self.stream_client_disconnects += 1
            return resp
        except asyncio.CancelledError:
            with self._lock:
                self.stream_client_disconnects += 1
            raise
        finally:
            with self._lock:
                self.open_streams -= 1
        with self._lock:
            self.streams_completed += 1
        if on_complete is not None:
            on_complete()
        return resp

    @staticmethod
    async def _sleep_until_disconnect(request: web.Request, seconds: float) -> bool:
        """Sleep ``seconds``; return True early if the client connection goes away."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            transport = request.transport
            if transport is None or transport.is_closing():
                return True
            await asyncio.sleep(min(remaining, 0.02))
        transport = request.transport
        return transport is None or transport.is_closing()
