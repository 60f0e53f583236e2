"""Faithful fake of Groq's (OpenAI-compatible) Files and Batches APIs, docs/provider-facts.md §6
(batches: tests/fakes/batches.py with Groq's differences, §6.1; reached as ``fake.batches``).

    with FakeGroq(data_dir=tmp_path) as fake:
        ...   # gateway api_base = fake.base_url  (= fake.url + "/openai/v1")

What it does as Groq does:

* paths under ``/openai/v1``; ``Authorization: Bearer <gsk_… key>`` (missing/wrong → 401,
  OpenAI-shaped error with ``code: "invalid_api_key"``);
* upload: multipart ``file`` + ``purpose``; **purpose must be ``batch``** (anything else →
  400 naming it, ``param: "purpose"``); ≤ ``max_file_size`` (100 MB) else 413; the file part
  is streamed to disk and hashed; a body cut before its closing boundary stores nothing;
* file objects ``{id, object, bytes, created_at, filename, purpose}`` — **no ``status``, no
  ``expires_at``**; ids ``file_`` + 26 lowercase alphanumerics [UNVERIFIED format];
* list: **no query parameters honoured, no cursors**: ``{"object":"list","data":[every file]}``
  in upload order (oldest first);
* delete → ``{"id", "object": "file", "deleted": true}``; content → the bytes,
  ``application/octet-stream``;
* errors ``{"error": {"message", "type", "code"?, "param"?}}``.

Fault injection and observation as in the other fakes (``fail_next``, ``reset_next``,
``delay_next``, ``requests``, ``files``, ``add_file`` to seed e.g. a ``batch_output`` file).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web

from .anthropic_upstream import ApiError, FakeUpstream, json_response
from .batches import BatchEngine

PREFIX = "/openai/v1"
_LOWER = string.ascii_lowercase + string.digits


def _groq_id(prefix: str = "file_") -> str:
    return prefix + "".join(secrets.choice(_LOWER) for _ in range(26))


def _groq_window(value: str) -> bool:
    """groq-python BatchCreateParams: durations from 24h to 7d."""
    m = re.fullmatch(r"([1-9][0-9]*)([hd])", value)
    return m is not None and 24 <= int(m.group(1)) * (24 if m.group(2) == "d" else 1) <= 168


@dataclass
class GroqFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: int
    path: Path
    seq: int

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose}


class FakeGroq(FakeUpstream):
    def __init__(self, *, api_key: str = "gsk_upstream_test_key_0123456789",
                 data_dir: str | os.PathLike[str] | None = None, max_file_size: int = 100 * 1000**2) -> None:
        super().__init__(api_key=api_key, data_dir=data_dir)
        self.max_file_size = max_file_size
        self._files: dict[str, GroqFile] = {}
        # /openai/v1/batches (tests/fakes/batches.py); ``batches.duration``: seconds a batch runs
        self.batches = BatchEngine(
            read_input=self._batch_input, write_output=self._batch_output,
            error=lambda status, message, param, code: ApiError(status, message, param=param, code=code,
                                                                kind="invalid_request_error"),
            new_id=lambda: _groq_id("batch_"), endpoints=("/v1/chat/completions",), window_ok=_groq_window,
            lock=self._lock)

    @property
    def base_url(self) -> str:
        return self.url + PREFIX

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{PREFIX}/files", self._upload)
        router.add_get(f"{PREFIX}/files", self._list)
        router.add_get(f"{PREFIX}/files/{{file_id}}", self._retrieve)
        router.add_delete(f"{PREFIX}/files/{{file_id}}", self._delete)
        router.add_get(f"{PREFIX}/files/{{file_id}}/content", self._content)
        router.add_post(f"{PREFIX}/batches", self._create_batch)
        router.add_get(f"{PREFIX}/batches", self._list_batches)
        router.add_get(f"{PREFIX}/batches/{{batch_id}}", self._retrieve_batch)
        router.add_post(f"{PREFIX}/batches/{{batch_id}}/cancel", self._cancel_batch)

    def response_headers(self) -> dict[str, str]:
        return {"x-request-id": "req_" + secrets.token_hex(13)}

    def error_body(self, status: int, message: str, *, kind: str | None, param: str | None,
                   code: str | None) -> Any:
        err: dict[str, Any] = {"message": message,
                               "type": kind or ("internal_server_error" if status >= 500 else "invalid_request_error")}
        if code is not None:
            err["code"] = code
        if param is not None:
            err["param"] = param
        return {"error": err}

    def check_request(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            raise ApiError(401, "Invalid API Key", kind="invalid_request_error", code="invalid_api_key")

    # -- inspection ---------------------------------------------------------------------
    @property
    def files(self) -> dict[str, GroqFile]:
        with self._lock:
            return dict(self._files)

    def add_file(self, content: bytes, *, filename: str = "batch_output.jsonl", purpose: str = "batch_output") -> GroqFile:
        f = GroqFile(_groq_id(), filename, purpose, len(content), hashlib.sha256(content).hexdigest(),
                     int(time.time()), self.data_dir / "seeded", self.next_seq())
        f.path = self.data_dir / f.id
        f.path.write_bytes(content)
        with self._lock:
            self._files[f.id] = f
        return f

    def _get(self, file_id: str) -> GroqFile:
        with self._lock:
            f = self._files.get(file_id)
        if f is None:
            raise ApiError(404, "File not found", kind="invalid_request_error", code="not_found")
        return f

    # -- handlers -----------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        file_id = _groq_id()
        part_path = self.data_dir / f".{file_id}.part"
        try:
            fields, upload = await self.receive_multipart(request, part_path)
            if upload is None:
                raise ApiError(400, "file is required", param="file")
            purpose = fields.get("purpose")
            if purpose is None:
                raise ApiError(400, "purpose is required", param="purpose")
            if purpose != "batch":
                raise ApiError(400, f"purpose must be 'batch', got '{purpose}'", param="purpose")
            if upload.size > self.max_file_size:
                raise ApiError(413, f"file size exceeds the {self.max_file_size} byte limit",
                               code="request_too_large")
        except BaseException:
            part_path.unlink(missing_ok=True)
            raise
        f = GroqFile(file_id, upload.filename or "upload", purpose, upload.size, upload.sha256,
                     int(time.time()), self.data_dir / file_id, self.next_seq())
        part_path.replace(f.path)
        with self._lock:
            self._files[f.id] = f
        return json_response(f.obj())

    async def _list(self, request: web.Request) -> web.Response:
        with self._lock:
            items = sorted(self._files.values(), key=lambda f: f.seq)
        return json_response({"object": "list", "data": [f.obj() for f in items]})

    async def _retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._get(request.match_info["file_id"]).obj())

    async def _delete(self, request: web.Request) -> web.Response:
        f = self._get(request.match_info["file_id"])
        with self._lock:
            self._files.pop(f.id, None)
        f.path.unlink(missing_ok=True)
        return json_response({"id": f.id, "object": "file", "deleted": True})

    async def _content(self, request: web.Request) -> web.StreamResponse:
        f = self._get(request.match_info["file_id"])
        return web.FileResponse(f.path, chunk_size=256 * 1024, headers={hdrs.CONTENT_TYPE: "application/octet-stream"})

    # -- batches ------------------------------------------------------------------------
    def _batch_input(self, file_id: str) -> tuple[str, bytes]:
        try:
            f = self._get(file_id)
        except ApiError as exc:
            raise ApiError(exc.status, exc.message, kind=exc.kind, param="input_file_id", code=exc.code) from None
        return f.purpose, f.path.read_bytes()

    def _batch_output(self, filename: str, content: bytes) -> str:
        return self.add_file(content, filename=filename, purpose="batch_output").id

    async def _create_batch(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError(400, "The request body is not valid JSON.", kind="invalid_request_error") from None
        return json_response(self.batches.create(body))

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        return json_response(self.batches.get(request.match_info["batch_id"]))

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        return json_response(self.batches.cancel(request.match_info["batch_id"]))

    async def _list_batches(self, request: web.Request) -> web.Response:
        # Groq's list takes no parameters and has no cursors: every batch at once
        return json_response({"object": "list", "data": self.batches.all()})
