"""Faithful fake of the Bedrock runtime's Converse and ConverseStream operations
(docs/provider-facts.md §7.5; tests/fakes/README.md "FakeBedrockRuntime").

Point the real aiobotocore client at it::

    with FakeBedrockRuntime() as fake:
        session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url,
                              aws_access_key_id=fake.access_key, aws_secret_access_key="testing")

* ``POST /model/{modelId}/converse`` → the ConverseResponse JSON;
* ``POST /model/{modelId}/converse-stream`` → ``application/vnd.amazon.eventstream``: a
  ``messageStart``, per content block its ``contentBlockStart`` (tool use only, as Bedrock
  does), ``contentBlockDelta`` s and ``contentBlockStop``, then ``messageStop`` and
  ``metadata`` (usage), each one event-stream message (:mod:`tests.fakes.eventstream`).

What it checks: SigV4 ``Authorization`` for the ``bedrock`` signing name and the fake's
access key (else 403 ``UnrecognizedClientException``); a JSON body; ``messages`` non-empty,
first ``user``, roles alternating; ``inferenceConfig`` ranges; tool blocks only with
``toolConfig``; ``outputConfig.textFormat.structure.jsonSchema.schema`` a JSON string. Errors
are rest-json: status, ``x-amzn-ErrorType`` and ``{"message"}``.

Answers: ``answer(content, stop_reason="end_turn", usage=None)`` queues the next call's
Converse content blocks (``{"text"}``, ``{"toolUse": {toolUseId, name, input}}``,
``{"reasoningContent": {"reasoningText": {text, signature}}}``); a stream sends text in
``delta_size``-character deltas. Stream faults: ``fail_stream_after(n, error=None)`` — after
``n`` events send the exception event ``error`` (``modelStreamErrorException``,
``throttlingException`` …) or, with None, drop the connection; ``gate_stream_after(n)``.
"""
from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from .anthropic_upstream import ApiError, FakeUpstream, json_response, rand_id
from .eventstream import event_frame, exception_frame
from .scripted import AnswerQueue, StreamControl, StreamFault, chunks, json_chunks, wait_gate

Answer = tuple[list[dict[str, Any]], str, dict[str, int] | None]
_DEFAULT: Answer = ([{"text": "Hello from the fake Bedrock."}], "end_turn", None)
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/[a-z0-9-]+/bedrock/aws4_request, "
                   r"SignedHeaders=[^,]+, Signature=[0-9a-f]{64}")
_ERROR_NAMES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
                500: "InternalServerException", 503: "ServiceUnavailableException"}


class FakeBedrockRuntime(FakeUpstream):
    def __init__(self, *, access_key: str = "AKIAFAKEBEDROCK00001", delta_size: int = 4,
                 data_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(api_key=access_key, data_dir=data_dir)
        self.access_key = access_key
        self.delta_size = delta_size
        self.answers: AnswerQueue[Answer] = AnswerQueue(_DEFAULT)
        self.streams = StreamControl()

    # -- test hooks -------------------------------------------------------------------------
    def answer(self, content: list[dict[str, Any]], stop_reason: str = "end_turn",
               usage: dict[str, int] | None = None) -> None:
        self.answers.put((content, stop_reason, usage))

    def fail_stream_after(self, events: int, error: str | None = None, message: str = "The model stream failed.") -> None:
        self.streams.add_fault(StreamFault(events, error, message))

    def gate_stream_after(self, events: int) -> Any:
        return self.streams.add_gate(events)

    # -- wiring -----------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/model/{model_id}/converse", self._converse)
        router.add_post("/model/{model_id}/converse-stream", self._converse_stream)

    def response_headers(self) -> dict[str, str]:
        return {"x-amzn-RequestId": rand_id("", 8).lower() + "-fake-0000-0000-000000000000"}

    def error_body(self, status: int, message: str, *, kind: str | None, param: str | None,
                   code: str | None) -> Any:
        return {"message": message}

    def error_response(self, exc: ApiError) -> web.Response:
        name = exc.kind or _ERROR_NAMES.get(exc.status, "InternalServerException")
        return json_response({"message": exc.message}, exc.status, {"x-amzn-ErrorType": name, **(exc.headers or {})})

    def _fault_response(self, fault: Any) -> web.Response:
        name = _ERROR_NAMES.get(fault.status, "InternalServerException")
        body = fault.body if fault.body is not None else {"message": self.DEFAULT_MESSAGES.get(fault.status, "Error.")}
        return json_response(body, fault.status, {"x-amzn-ErrorType": name, **(fault.headers or {})})

    def check_request(self, request: web.Request) -> None:
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None or match.group(1) != self.access_key:
            raise ApiError(403, "The security token included in the request is invalid.",
                           kind="UnrecognizedClientException")

    # -- operations -------------------------------------------------------------------------
    async def _read(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        self._finish_raw(request, raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "Malformed input request, please reformat your input and try again.") from None
        request["fake_record"].json = body
        _validate(body)
        return dict(body)

    def _finish_raw(self, request: web.Request, raw: bytes) -> None:
        counter = request["fake_body_counter"]
        counter.update(raw)
        self._finish(request)

    async def _converse(self, request: web.Request) -> web.Response:
        await self._read(request)
        content, stop_reason, usage = self.answers.take()
        return json_response({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason, "usage": _usage(usage), "metrics": {"latencyMs": 12},
        })

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        await self._read(request)
        content, stop_reason, usage = self.answers.take()
        fault, gate = self.streams.take()
        frames = self._frames(content, stop_reason, usage)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
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
                    await response.write(exception_frame(fault.error, fault.message))
                    break
                if gate is not None and n == gate[0] and await wait_gate(gate[1], lambda: _gone(request)):
                    raise ConnectionResetError("the client closed the stream")
                await response.write(frame)
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

    def _frames(self, content: list[dict[str, Any]], stop_reason: str, usage: dict[str, int] | None) -> list[bytes]:
        frames = [event_frame("messageStart", {"role": "assistant"})]
        size = self.delta_size
        for index, block in enumerate(content):
            deltas: list[dict[str, Any]] = []
            if "text" in block:
                deltas = [{"text": piece} for piece in chunks(block["text"], size)]
            elif "toolUse" in block:
                use = block["toolUse"]
                frames.append(event_frame("contentBlockStart", {
                    "contentBlockIndex": index, "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                deltas = [{"toolUse": {"input": piece}} for piece in json_chunks(use.get("input", {}), size)]
            elif "reasoningContent" in block:
                text = block["reasoningContent"]["reasoningText"]
                deltas = [{"reasoningContent": {"text": piece}} for piece in chunks(text.get("text", ""), size)]
                if text.get("signature"):
                    deltas.append({"reasoningContent": {"signature": text["signature"]}})
            for delta in deltas:
                frames.append(event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(event_frame("messageStop", {"stopReason": stop_reason}))
        frames.append(event_frame("metadata", {"usage": _usage(usage), "metrics": {"latencyMs": 12}}))
        return frames


def _usage(usage: dict[str, int] | None) -> dict[str, int]:
    usage = dict(usage or {"inputTokens": 11, "outputTokens": 7})
    usage.setdefault("totalTokens", usage.get("inputTokens", 0) + usage.get("outputTokens", 0)
                     + usage.get("cacheReadInputTokens", 0) + usage.get("cacheWriteInputTokens", 0))
    return usage


def _validate(body: Any) -> None:
    """The Converse request rules the fake enforces (docs/provider-facts.md §7.5)."""
    def bad(message: str) -> ApiError:
        return ApiError(400, message)

    if not isinstance(body, dict):
        raise bad("Malformed input request: expected a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("The messages field is required and must hold at least one message.")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise bad(f"messages.{i}.role: must be user or assistant.")
        if i == 0 and role != "user":
            raise bad("A conversation must start with a user message. Try again with a conversation that starts with a user message.")
        if i > 0 and role == messages[i - 1]["role"]:
            raise bad("A conversation must alternate between user and assistant roles. Make sure the conversation "
                      "alternates between user and assistant roles and try again.")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise bad(f"messages.{i}.content: must hold at least one content block.")
        for block in content:
            if ("toolUse" in block or "toolResult" in block) and "toolConfig" not in body:
                raise bad("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    config = body.get("inferenceConfig") or {}
    for key, low, high in (("temperature", 0, 1), ("topP", 0, 1)):
        if key in config and not low <= config[key] <= high:
            raise bad(f"inferenceConfig.{key}: must be between {low} and {high}.")
    if "maxTokens" in config and config["maxTokens"] < 1:
        raise bad("inferenceConfig.maxTokens: must be at least 1.")
    fmt = ((body.get("outputConfig") or {}).get("textFormat"))
    if fmt is not None:
        schema = ((fmt.get("structure") or {}).get("jsonSchema") or {}).get("schema")
        if fmt.get("type") != "json_schema" or not isinstance(schema, str):
            raise bad("outputConfig.textFormat: type json_schema with structure.jsonSchema.schema (a string) is required.")
        try:
            orjson.loads(schema)
        except orjson.JSONDecodeError:
            raise bad("outputConfig.textFormat.structure.jsonSchema.schema: not valid JSON.") from None


def model_id_of(path: str) -> str:
    """The modelId of a recorded request path (botocore percent-encodes it)."""
    return unquote(path.split("/")[2])


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()
