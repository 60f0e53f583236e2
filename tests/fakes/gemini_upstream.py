"""Faithful fake of Vertex AI's Gemini ``generateContent`` and ``streamGenerateContent``
(docs/provider-facts.md §8.7; tests/fakes/README.md "FakeGemini").

* ``POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
  → one GenerateContentResponse;
* ``…:streamGenerateContent?alt=sse`` → ``text/event-stream``, each event ``data: <one
  GenerateContentResponse>``: text parts split into ``delta_size``-character chunks, a function
  call whole in its own chunk, the last chunk with ``finishReason`` and ``usageMetadata``.
  Without ``alt=sse`` the real API answers a JSON array; the fake refuses it (400) so a caller
  that forgets ``alt=sse`` is caught.

``POST /token`` is an OAuth token endpoint (a service account file's ``token_uri``): it
answers ``token`` for a JWT-bearer grant and records the assertion's ``scope`` in
``token_scopes`` (the assertion's signature is not checked).

What it checks: ``Authorization: Bearer <token>`` (else 401 ``UNAUTHENTICATED``; with
``token=None`` none, as for a gateway pointed at an emulator without credentials); ``contents``
non-empty, roles ``user``/``model``, every content with parts, one data field per part;
``functionResponse`` with ``name`` and ``response``; ``responseJsonSchema`` / ``responseSchema``
only with ``responseMimeType: application/json`` and not both; label keys and values. Errors
are Google's ``{"error": {"code", "message", "status"}}``.

Answers: ``answer(parts, finish_reason="STOP", usage=None)`` queues the next call's candidate
parts (``{"text"}``, ``{"text", "thought": true}``, ``{"functionCall": {name, args[, id]}}``,
any with ``thoughtSignature``). Stream faults: ``fail_stream_after(n, error=None)`` — after
``n`` chunks send a ``data: {"error": …}`` chunk with ``error`` as its ``status`` or, with
None, drop the connection; ``gate_stream_after(n)``.
"""
from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import orjson
from aiohttp import web

from .anthropic_upstream import ApiError, FakeUpstream, json_response
from .scripted import AnswerQueue, StreamControl, StreamFault, chunks, wait_gate

Answer = tuple[list[dict[str, Any]], str, dict[str, int] | None]
_DEFAULT: Answer = ([{"text": "Hello from the fake Gemini."}], "STOP", None)
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")
_PREFIX = "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}"


class FakeGemini(FakeUpstream):
    def __init__(self, *, token: str | None = "ya29.fake-vertex-access-token", delta_size: int = 4,
                 data_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(api_key=token or "", data_dir=data_dir)
        self.token = token
        self.delta_size = delta_size
        self.answers: AnswerQueue[Answer] = AnswerQueue(_DEFAULT)
        self.streams = StreamControl()
        self.token_scopes: list[str] = []

    # -- test hooks -------------------------------------------------------------------------
    def answer(self, parts: list[dict[str, Any]], finish_reason: str = "STOP",
               usage: dict[str, int] | None = None) -> None:
        self.answers.put((parts, finish_reason, usage))

    def fail_stream_after(self, chunks_sent: int, error: str | None = None, message: str = "Internal error.") -> None:
        self.streams.add_fault(StreamFault(chunks_sent, error, message))

    def gate_stream_after(self, chunks_sent: int) -> Any:
        return self.streams.add_gate(chunks_sent)

    # -- wiring -----------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(_PREFIX, self._call)
        router.add_post("/token", self._token)

    def error_body(self, status: int, message: str, *, kind: str | None, param: str | None,
                   code: str | None) -> Any:
        return {"error": {"code": status, "message": message, "status": kind or _STATUS.get(status, "UNKNOWN")}}

    def check_request(self, request: web.Request) -> None:
        if request.path == "/token":
            return   # the way to a token needs none
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                "login cookie or other valid authentication credential.")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
            return json_response({"error": "invalid_grant", "error_description": "Invalid JWT grant."}, 400)
        claims = assertion.split(".")[1]
        payload = orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        self.token_scopes.append(str(payload.get("scope", "")))
        return json_response({"access_token": self.token, "expires_in": 3600, "token_type": "Bearer"})

    # -- the two methods --------------------------------------------------------------------
    async def _call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        raw = await request.read()
        request["fake_body_counter"].update(raw)
        self._finish(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "Invalid JSON payload received.") from None
        request["fake_record"].json = body
        if method == "generateContent":
            _validate(body)
            parts, reason, usage = self.answers.take()
            return json_response(_chunk(model, parts, reason, usage))
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                raise ApiError(400, "The fake serves streamGenerateContent as SSE only: add ?alt=sse.")
            _validate(body)
            return await self._stream(request, model)
        raise ApiError(404, f"Method not found: {method}", kind="NOT_FOUND")

    async def _stream(self, request: web.Request, model: str) -> web.StreamResponse:
        parts, reason, usage = self.answers.take()
        fault, gate = self.streams.take()
        pieces: list[list[dict[str, Any]]] = []
        for part in parts:
            if isinstance(part.get("text"), str):
                texts = chunks(part["text"], self.delta_size)
                for k, text in enumerate(texts):
                    piece = {**part, "text": text}
                    if k < len(texts) - 1:
                        piece.pop("thoughtSignature", None)  # the signature rides on the part's last chunk
                    pieces.append([piece])
            else:
                pieces.append([part])
        frames = [_chunk(model, piece, None, None) for piece in pieces[:-1]]
        frames.append(_chunk(model, pieces[-1] if pieces else [], reason, usage))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with self.streams.lock:
            self.streams.open_streams += 1
        try:
            for n, frame in enumerate(frames):
                if fault is not None and n == fault.after:
                    if fault.error is None:
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    error = {"error": {"code": 500, "message": fault.message, "status": fault.error}}
                    await response.write(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
                    break
                if gate is not None and n == gate[0] and await wait_gate(gate[1], lambda: _gone(request)):
                    raise ConnectionResetError("the client closed the stream")
                await response.write(b"data: " + orjson.dumps(frame) + b"\r\n\r\n")
            await response.write_eof()
            with self.streams.lock:
                self.streams.streams_completed += 1
        except (ConnectionResetError, asyncio.CancelledError):
            with self.streams.lock:
                self.streams.client_disconnects += 1
            raise
        finally:
            with self.streams.lock:
                self.streams.open_streams -= 1
        return response


def _chunk(model: str, parts: list[dict[str, Any]], reason: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "fake-response-id",
                             "createTime": "2026-12-03T12:00:00.000000Z"}
    if reason is not None:
        candidate["finishReason"] = reason
        meta = dict(usage or {"promptTokenCount": 9, "candidatesTokenCount": 5})
        meta.setdefault("totalTokenCount", sum(meta.get(k, 0) for k in (
            "promptTokenCount", "candidatesTokenCount", "toolUsePromptTokenCount", "thoughtsTokenCount")))
        chunk["usageMetadata"] = meta
    return chunk


def _label_ok(text: str, *, key: bool) -> bool:
    if len(text) > 63 or (key and (not text or not text[0].islower())):
        return False
    return all(c.islower() or c.isdigit() or c in "_-" for c in text)


def _validate(body: Any) -> None:
    """The GenerateContentRequest rules the fake enforces (docs/provider-facts.md §8.7)."""
    def bad(message: str) -> ApiError:
        return ApiError(400, message)

    contents = body.get("contents") if isinstance(body, dict) else None
    if not isinstance(contents, list) or not contents:
        raise bad("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            raise bad(f"* GenerateContentRequest.contents[{i}].role: must be user or model")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise bad(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            data = [k for k in _PART_DATA if k in part]
            if len(data) != 1:
                raise bad(f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' "
                          "must have one initialized field")
            response = part.get("functionResponse")
            if response is not None and (not response.get("name") or not isinstance(response.get("response"), dict)):
                raise bad(f"* GenerateContentRequest.contents[{i}].parts[{j}].function_response: name and "
                          "response are required")
    config = body.get("generationConfig") or {}
    if ("responseJsonSchema" in config or "responseSchema" in config) and config.get("responseMimeType") != "application/json":
        raise bad("* GenerateContentRequest.generation_config.response_mime_type: must be application/json "
                  "when a response schema is set")
    if "responseJsonSchema" in config and "responseSchema" in config:
        raise bad("* GenerateContentRequest.generation_config: response_schema and response_json_schema are exclusive")
    for key, value in (body.get("labels") or {}).items():
        if not _label_ok(key, key=True) or not _label_ok(value, key=False):
            raise bad(f"* GenerateContentRequest.labels: invalid label {key!r}")


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()
