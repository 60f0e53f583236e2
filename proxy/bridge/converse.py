"""The Bedrock Converse / ConverseStream dialect (sans-IO), plus the two small I/O helpers the
wiring calls with an aiobotocore ``bedrock-runtime`` client (docs/provider-facts.md §7.5).

* :meth:`ConverseDialect.build_call` → ``ProviderCall(operation="converse" | "converse_stream",
  body=<the operation's keyword arguments>)``: ``modelId``, ``messages``, ``system``,
  ``inferenceConfig``, ``toolConfig``, ``outputConfig`` (structured output),
  ``additionalModelRequestFields`` (Claude's extended thinking), ``requestMetadata``.
  Blobs (image bytes) are ``bytes``: botocore base64-encodes them itself.
* :meth:`ConverseDialect.decode_whole` reads the ``converse`` answer as botocore returns it;
  :meth:`ConverseDialect.stream_decoder` reads the ``converse_stream`` events as
  :func:`converse_stream_events` yields them (botocore's event dicts, exception events included).

Gateway file ids (``input_file`` / ``input_image`` ``file_id``) cannot be read here (no I/O):
the wiring resolves the ids the request names from the store and passes them to
:meth:`ConverseDialect.for_files`; a bedrock file lives in S3, so it goes as an ``s3Location``
block, never as bytes through the gateway.

Redacted reasoning (``redactedContent``, bytes) has no neutral event of its own: it travels as a
reasoning signature prefixed :data:`REDACTED_PREFIX` (base64 after it) and goes back to Bedrock
as the same ``redactedContent`` block.
"""
from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Iterable, Mapping

import orjson

from ..errors import GatewayError
from ..transforms.chat_mapping import compact
from ..transforms.jsonl import describe
from .events import (Event, Failure, Finish, ItemDone, ProviderCall, ReasoningDelta, ReasoningStart, TextDelta,
                     TextStart, ToolArgsDelta, ToolCallStart, Usage)
from .request import (Conversation, File, Image, Part, Reasoning, RequestReader, StoredFile, Text, ToolCall,
                      ToolResult, extension, fail, media_type_of, unsupported)

PROVIDER = "Bedrock Converse"
REDACTED_PREFIX = "bedrock-redacted:"

# botocore bedrock-runtime 2023-09-30 (docs/provider-facts.md §7.5)
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_DOCUMENT_FORMATS = frozenset({"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"})
_METADATA_TEXT = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]*")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,2047}")
# Claude models with extended thinking (3.7 Sonnet and the 4 family onwards), after an optional
# inference-profile prefix (us., eu., apac., global. …) — docs/provider-facts.md §7.5.
_THINKING_MODEL = re.compile(r"(?:[a-z-]+\.)?anthropic\.claude-(?:3-7-|(?:opus|sonnet|haiku)-[4-9])")
# reasoning.effort → Claude's thinking budget_tokens (at least 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
_MIN_BUDGET = 1024
_ANSWER_ROOM = 8192
# "Streaming is required when max_tokens is greater than 21,333" (docs/provider-facts.md §7.5)
_MAX_UNSTREAMED_TOKENS = 21333

_STOP = {
    "end_turn": ("completed", None), "tool_use": ("completed", None), "stop_sequence": ("completed", None),
    "max_tokens": ("incomplete", "max_output_tokens"),
    "model_context_window_exceeded": ("incomplete", "max_output_tokens"),
    "guardrail_intervened": ("incomplete", "content_filter"),
    "content_filtered": ("incomplete", "content_filter"),
}
_STREAM_ERRORS = {
    "throttlingException": "rate_limit_exceeded",
    "validationException": "invalid_prompt",
    "internalServerException": "server_error",
    "modelStreamErrorException": "server_error",
    "serviceUnavailableException": "server_error",
}


class ConverseDialect:
    """Responses ↔ Bedrock Converse. One per provider; :meth:`for_files` binds one request's
    resolved gateway files."""

    def __init__(self, *, files: Mapping[str, StoredFile] | None = None) -> None:
        self.files: Mapping[str, StoredFile] = files or {}

    def for_files(self, files: Mapping[str, StoredFile]) -> "ConverseDialect":
        return ConverseDialect(files=files)

    # ---------------------------------------------------------------------------- request
    def build_call(self, request: dict[str, Any], history: list[dict[str, Any]], model: str,
                   *, stream: bool) -> ProviderCall:
        if not _MODEL_ID.fullmatch(model):
            fail("model", f"is not a Bedrock model id or ARN: {describe(model)}")
        conv = RequestReader(PROVIDER, files=self.files, max_temperature=1.0).read(request, history)
        body: dict[str, Any] = {"modelId": model, "messages": _messages(conv)}
        if conv.system:
            body["system"] = [{"text": text} for text in conv.system]
        inference = compact(maxTokens=conv.max_output_tokens, temperature=conv.temperature, topP=conv.top_p,
                             stopSequences=conv.stop or None)
        tool_config = _tool_config(conv)
        if tool_config is not None:
            body["toolConfig"] = tool_config
        if conv.output_format is not None:
            body["outputConfig"] = {"textFormat": _text_format(conv)}
        thinking = _thinking(conv, model, stream=stream)
        if thinking is not None:
            budget, inference["maxTokens"] = thinking
            body["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": budget}}
        if inference:
            body["inferenceConfig"] = inference
        if conv.metadata:
            body["requestMetadata"] = _request_metadata(conv.metadata)
        return ProviderCall(stream=stream, body=body, operation="converse_stream" if stream else "converse")

    # ---------------------------------------------------------------------------- answers
    def decode_whole(self, answer: Any) -> list[Event]:
        decoder = ConverseStreamDecoder()
        events: list[Event] = []
        content = (((answer.get("output") or {}).get("message") or {}).get("content")) or []
        for index, block in enumerate(content):
            events.extend(decoder.whole_block(index, block))
        events.append(_finish(answer.get("stopReason"), answer.get("usage")))
        return events

    def stream_decoder(self) -> "ConverseStreamDecoder":
        return ConverseStreamDecoder()


# ------------------------------------------------------------------------------ request parts
def _messages(conv: Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in conv.turns:
        # A reasoning item without a signature is nothing Claude can verify (OpenAI's own, or one
        # summarised elsewhere): it does not go back.
        blocks = [_block(p) for p in turn.parts if not (isinstance(p, Reasoning) and p.signature is None)]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == turn.role:  # the turn between them had nothing left
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn.role, "content": blocks})
    return messages


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Image):
        return {"image": _image(part)}
    if isinstance(part, File):
        return _file(part)
    if isinstance(part, (ToolCall, ToolResult)) and not _TOOL_USE_ID.fullmatch(part.call_id):
        fail(f"{part.param}.call_id", f"cannot be a Bedrock toolUseId (1-64 letters, digits or _.:-): "
                                      f"{describe(part.call_id)}")
    if isinstance(part, ToolCall):
        return {"toolUse": {"toolUseId": part.call_id, "name": part.name,
                            "input": part.args}}
    if isinstance(part, ToolResult):
        return {"toolResult": {"toolUseId": part.call_id, "content": [_block(p) for p in part.output]}}
    assert isinstance(part, Reasoning)
    if part.signature is not None and part.signature.startswith(REDACTED_PREFIX):
        try:
            redacted = base64.b64decode(part.signature[len(REDACTED_PREFIX):], validate=True)
        except ValueError:  # binascii.Error
            fail(f"{part.param}.encrypted_content", "is not reasoning state this gateway gave out")
        return {"reasoningContent": {"redactedContent": redacted}}
    return {"reasoningContent": {"reasoningText": {"text": part.text, "signature": part.signature}}}


def _image(part: Image) -> dict[str, Any]:
    if part.data is not None:
        fmt = _IMAGE_FORMATS.get(part.media_type or "")
        if fmt is None:
            fail(part.param, f"is an image of type {describe(part.media_type)}; {PROVIDER} takes "
                             f"{', '.join(sorted(_IMAGE_FORMATS))}")
        return {"format": fmt, "source": {"bytes": part.data}}
    assert part.url is not None
    if not part.url.startswith("s3://"):
        unsupported(part.param, PROVIDER, "it fetches no image URLs; send a base64 data: URL, an s3:// "
                                          "location or a gateway file_id")
    return {"format": _image_format(part.media_type, part.param), "source": {"s3Location": {"uri": part.url}}}


def _image_format(media_type: str | None, param: str) -> str:
    fmt = _IMAGE_FORMATS.get(media_type or "")
    if fmt is None:
        fail(param, f"must be a png, jpeg, gif or webp image for {PROVIDER} (known by its extension), "
                    f"got {describe(media_type)}")
    return fmt


def _file(part: File) -> dict[str, Any]:
    stored = part.file
    if not stored.uri.startswith("s3://"):
        fail(part.param, f"names a file that is not in S3; {PROVIDER} reads files from S3 only")
    media_type = stored.media_type or ""
    if media_type.startswith("image/") or extension(stored.filename) in ("png", "jpg", "jpeg", "gif", "webp"):
        return {"image": {"format": _image_format(media_type or media_type_of(stored.filename), part.param),
                          "source": {"s3Location": {"uri": stored.uri}}}}
    fmt = extension(stored.filename)
    if fmt not in _DOCUMENT_FORMATS:
        fail(part.param, f"is a file {PROVIDER} cannot read as a document: its name must end in one of "
                         f"{', '.join(sorted(_DOCUMENT_FORMATS))}, got {describe(stored.filename)}")
    return {"document": {"format": fmt, "name": document_name(stored.filename),
                         "source": {"s3Location": {"uri": stored.uri}}}}


def document_name(filename: str) -> str:
    """A DocumentBlock name: alphanumerics, single whitespace, hyphens, parentheses and square
    brackets only, 1–200 characters (docs/provider-facts.md §7.5)."""
    stem = filename.rpartition(".")[0] or filename
    name = re.sub(r"[^A-Za-z0-9\s\-()\[\]]", "-", stem)
    name = re.sub(r"\s+", " ", name).strip()
    return (name or "document")[:200]


def _tool_config(conv: Conversation) -> dict[str, Any] | None:
    if conv.tool_choice == "none":
        if conv.has_tool_blocks():
            unsupported("tool_choice", PROVIDER, '"none" while the conversation holds tool calls (Converse '
                                                 "needs toolConfig then, and has no choice that forbids tools)")
        return None  # no tools offered: the model cannot call one
    if not conv.tools:
        if conv.has_tool_blocks():
            fail("tools", f"{PROVIDER} needs the function tools declared while the conversation holds tool calls",
                 code="missing_required_parameter")
        return None
    for t in conv.tools:
        if not _TOOL_NAME.fullmatch(t.name):
            fail(f"{t.param}.name", f"must be 1-64 letters, digits, '_' or '-' for {PROVIDER}: {describe(t.name)}")
    config: dict[str, Any] = {"tools": [{"toolSpec": compact(
        name=t.name, description=t.description,
        inputSchema={"json": t.parameters if t.parameters is not None else {"type": "object", "properties": {}}},
    )} for t in conv.tools]}
    if conv.tool_choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif conv.tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif conv.tool_choice == "function":
        config["toolChoice"] = {"tool": {"name": conv.forced_tool}}
    return config


def _text_format(conv: Conversation) -> dict[str, Any]:
    fmt = conv.output_format
    assert fmt is not None
    # Converse's structured output takes a JSON schema only; JSON mode is "any JSON object".
    schema = fmt.schema if fmt.schema is not None else {"type": "object"}
    return {"type": "json_schema", "structure": {"jsonSchema": compact(
        schema=orjson.dumps(schema).decode(), name=fmt.name, description=fmt.description)}}


def _thinking(conv: Conversation, model: str, *, stream: bool) -> tuple[int, int] | None:
    """(budget_tokens, maxTokens) for Claude's extended thinking, or None without reasoning."""
    if conv.effort in (None, "none"):
        if conv.reasoning_summary is not None and conv.effort is None:
            unsupported("reasoning.summary", PROVIDER, "without reasoning.effort no reasoning is produced")
        return None
    if not _THINKING_MODEL.match(model.rpartition("/")[2]):
        unsupported("reasoning.effort", PROVIDER, f"model {describe(model)} has no extended thinking the bridge "
                                                  "knows (Anthropic Claude 3.7 Sonnet and Claude 4 models do)")
    for param, value in (("temperature", conv.temperature), ("top_p", conv.top_p)):
        if value is not None:  # "not compatible with temperature, top_p or top_k modifications"
            unsupported(param, PROVIDER, f"Claude's extended thinking takes no {param}")
    if conv.tool_choice in ("required", "function"):
        unsupported("tool_choice", PROVIDER, "Claude's extended thinking cannot be combined with a forced tool")
    budget = THINKING_BUDGETS[conv.effort]
    if conv.max_output_tokens is not None:
        if conv.max_output_tokens <= _MIN_BUDGET:
            fail("max_output_tokens", f"must be above {_MIN_BUDGET} with reasoning.effort on {PROVIDER} "
                                      "(Claude's smallest thinking budget)")
        return min(budget, conv.max_output_tokens - 1), conv.max_output_tokens
    # Claude needs max_tokens above the budget: leave room for the answer, within what a call
    # that does not stream may ask for.
    max_tokens = budget + _ANSWER_ROOM
    if not stream and max_tokens > _MAX_UNSTREAMED_TOKENS:
        max_tokens = _MAX_UNSTREAMED_TOKENS
        budget = min(budget, max_tokens - _MIN_BUDGET)
    return budget, max_tokens


def _request_metadata(metadata: dict[str, str]) -> dict[str, str]:
    for key, value in metadata.items():
        if not (1 <= len(key) <= 256 and _METADATA_TEXT.fullmatch(key)):
            fail("metadata", f"key {describe(key)} cannot be Bedrock requestMetadata: 1-256 letters, digits, "
                             "whitespace or :_@$#=/+,-.")
        if not (len(value) <= 256 and _METADATA_TEXT.fullmatch(value)):
            fail(f"metadata.{key}", "cannot be Bedrock requestMetadata: at most 256 letters, digits, whitespace "
                                    "or :_@$#=/+,-.")
    return metadata


# ------------------------------------------------------------------------------ answers
def _usage(usage: Any) -> Usage:
    usage = usage or {}
    cached = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    # inputTokens counts the uncached input only (as Claude's input_tokens); Responses'
    # input_tokens is every input token, cached_tokens the part read from the cache.
    return Usage(input_tokens=int(usage.get("inputTokens") or 0) + cached + written,
                 output_tokens=int(usage.get("outputTokens") or 0), cached_tokens=cached)


def _finish(stop_reason: Any, usage: Any) -> Event:
    mapped = _STOP.get(stop_reason)
    if mapped is None:
        return Failure("server_error", f"Bedrock ended the turn with stopReason {describe(stop_reason)}")
    return Finish(mapped[0], _usage(usage), mapped[1])


class ConverseStreamDecoder:
    """ConverseStream events (botocore's dicts, one event each) → neutral events.

    Bedrock sends ``contentBlockStart`` only for tool-use blocks; a text or reasoning block
    starts with its first delta. ``messageStop`` carries the stop reason and ``metadata`` (after
    it) the usage, so :class:`Finish` is emitted on ``metadata``; :meth:`close` ends a stream
    that stopped before it.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[int, str]] = {}  # contentBlockIndex -> (item, kind)
        self._next_item = 0
        self._stop_reason: Any = None
        self._done = False

    def _open(self, index: int, kind: str) -> tuple[int, list[Event]]:
        known = self._items.get(index)
        if known is not None:
            return known[0], []
        item = self._next_item
        self._next_item += 1
        self._items[index] = (item, kind)
        return item, [TextStart(item) if kind == "text" else ReasoningStart(item)]

    def whole_block(self, index: int, block: dict[str, Any]) -> list[Event]:
        """One content block of a whole ``converse`` answer."""
        if "toolUse" in block:
            use = block["toolUse"]
            item = self._start_tool(index, use)
            return [ToolCallStart(item, use["toolUseId"], use["name"]),
                    ToolArgsDelta(item, orjson.dumps(use.get("input", {})).decode()), ItemDone(item)]
        text = _block_text(block)
        if text is not None:
            item, events = self._open(index, "text")
            return [*events, TextDelta(item, text), ItemDone(item)]
        reasoning = block.get("reasoningContent")
        if reasoning is not None:
            item, events = self._open(index, "reasoning")
            if "redactedContent" in reasoning:
                events.append(ReasoningDelta(item, "", _redacted(reasoning["redactedContent"])))
            else:
                rt = reasoning.get("reasoningText") or {}
                events.append(ReasoningDelta(item, rt.get("text", ""), rt.get("signature")))
            return [*events, ItemDone(item)]
        return []  # output blocks a Responses turn has no item for (images, guard content)

    def _start_tool(self, index: int, use: dict[str, Any]) -> int:
        item = self._next_item
        self._next_item += 1
        self._items[index] = (item, "tool")
        return item

    def feed(self, frame: Any) -> Iterable[Event]:
        if self._done:
            return []
        if "contentBlockStart" in frame:
            start = frame["contentBlockStart"]
            use = (start.get("start") or {}).get("toolUse")
            if use is None:
                return []
            item = self._start_tool(start["contentBlockIndex"], use)
            return [ToolCallStart(item, use["toolUseId"], use["name"])]
        if "contentBlockDelta" in frame:
            return self._delta(frame["contentBlockDelta"])
        if "contentBlockStop" in frame:
            known = self._items.get(frame["contentBlockStop"]["contentBlockIndex"])
            return [ItemDone(known[0])] if known is not None else []
        if "messageStop" in frame:
            self._stop_reason = frame["messageStop"].get("stopReason")
            return []
        if "metadata" in frame:
            self._done = True
            return [_finish(self._stop_reason, frame["metadata"].get("usage"))]
        for name, code in _STREAM_ERRORS.items():
            if name in frame:
                self._done = True
                message = (frame[name] or {}).get("message") or name
                return [Failure(code, f"Bedrock: {message}")]
        return []  # messageStart, and event types newer than this module

    def _delta(self, event: dict[str, Any]) -> list[Event]:
        index = event["contentBlockIndex"]
        delta = event.get("delta") or {}
        if "text" in delta:
            item, events = self._open(index, "text")
            return [*events, TextDelta(item, delta["text"])]
        if "toolUse" in delta:
            known = self._items.get(index)
            if known is None:
                self._done = True
                return [Failure("server_error", "Bedrock streamed tool input before the tool use started")]
            return [ToolArgsDelta(known[0], delta["toolUse"].get("input", ""))]
        if "reasoningContent" in delta:
            item, events = self._open(index, "reasoning")
            rc = delta["reasoningContent"]
            if "redactedContent" in rc:
                return [*events, ReasoningDelta(item, "", _redacted(rc["redactedContent"]))]
            if "signature" in rc:
                return [*events, ReasoningDelta(item, "", rc["signature"])]
            return [*events, ReasoningDelta(item, rc.get("text", ""))]
        citation_text = _block_text(delta)
        if citation_text is not None:
            item, events = self._open(index, "text")
            return [*events, TextDelta(item, citation_text)]
        return []

    def close(self) -> list[Event]:
        """The event stream ended: a Finish or Failure if the stream did not give one."""
        if self._done:
            return []
        self._done = True
        if self._stop_reason is not None:  # messageStop came, metadata (usage) did not
            return [_finish(self._stop_reason, None)]
        return [Failure("server_error", "The Bedrock stream ended before the turn did")]


def _block_text(block: dict[str, Any]) -> str | None:
    if "text" in block and isinstance(block["text"], str):
        return str(block["text"])
    cited = block.get("citationsContent")
    if isinstance(cited, dict):
        return "".join(c.get("text", "") for c in cited.get("content") or [] if isinstance(c, dict))
    return None


def _redacted(data: Any) -> str:
    raw = data if isinstance(data, (bytes, bytearray)) else str(data).encode()
    return REDACTED_PREFIX + base64.b64encode(bytes(raw)).decode()


# ------------------------------------------------------------------------------ I/O helpers
_CLIENT_ERRORS: dict[str, tuple[int, str, bool]] = {
    "ValidationException": (400, "invalid_request_error", False),
    "ResourceNotFoundException": (400, "model_not_found", False),
    "AccessDeniedException": (502, "upstream_access_denied", False),
    "ThrottlingException": (429, "rate_limit_exceeded", True),
    "ServiceQuotaExceededException": (429, "rate_limit_exceeded", True),
    "ModelTimeoutException": (504, "upstream_timeout", True),
    "ModelNotReadyException": (503, "upstream_unavailable", True),
    "ServiceUnavailableException": (503, "upstream_unavailable", True),
    "InternalServerException": (502, "upstream_error", True),
    "ModelErrorException": (502, "upstream_error", True),
}


def converse_error(exc: Exception) -> GatewayError:
    """A botocore ``ClientError`` from ``converse`` / ``converse_stream`` → the gateway's error.
    Bedrock's message goes to the client (it names the client's own input, never a credential);
    a 403 is the gateway's credentials, so the client gets a 502 without the detail."""
    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code", ""))
    status, err_code, retryable = _CLIENT_ERRORS.get(code, (502, "upstream_error", True))
    if status == 502 and code == "AccessDeniedException":
        message = "Bedrock refused the gateway's credentials for this model."
    else:
        message = f"Bedrock: {error.get('Message') or code or 'the call failed'}"
    param = "model" if code == "ResourceNotFoundException" else None
    return GatewayError(status, message, code=err_code, param=param, retryable=retryable)


def _transport_error(exc: Exception, provider: str, *, answering: bool) -> GatewayError:
    """A botocore / aiohttp transport failure → the gateway's error, worded as the HTTP
    providers' are (proxy/providers/upstream.py): no answer in time (504), no connection (502),
    or an answer that broke off (``answering``: the stream had begun)."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)):
        return GatewayError(504, f"Provider '{provider}' (Bedrock) did not answer in time.", code="upstream_timeout",
                            retryable=True)
    if isinstance(exc, EndpointConnectionError) and not answering:
        return GatewayError(502, f"Could not reach provider '{provider}' (Bedrock).", code="upstream_unreachable",
                            retryable=True)
    what = "stream from" if answering else "call to"
    return GatewayError(502, f"The {what} provider '{provider}' broke: {type(exc).__name__}.",
                        code="upstream_stream_error" if answering else "upstream_error", retryable=True)


def _transport_errors() -> tuple[type[Exception], ...]:
    import aiohttp
    from botocore.exceptions import (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                                     ReadTimeoutError, ResponseStreamingError)

    return (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError, ConnectionClosedError,
            ResponseStreamingError, aiohttp.ClientError, ConnectionError, TimeoutError)


async def call_converse(client: Any, call: ProviderCall, provider: str = "bedrock") -> Any:
    """``converse`` with the call's keyword arguments; a ClientError becomes a GatewayError."""
    from botocore.exceptions import ClientError, ParamValidationError

    try:
        return await client.converse(**call.body)
    except ClientError as exc:
        raise converse_error(exc) from None
    except ParamValidationError as exc:  # botocore checks the body against the model first
        raise _invalid_body(exc) from None
    except _transport_errors() as exc:
        raise _transport_error(exc, provider, answering=False) from None


def _invalid_body(exc: Exception) -> GatewayError:
    return GatewayError(400, f"The request cannot be sent to Bedrock: {exc}", code="invalid_request_error")


async def open_converse_stream(client: Any, call: ProviderCall, provider: str = "bedrock") -> Any:
    """Start ``converse_stream``: its botocore event stream, once Bedrock has answered 200. A
    ClientError (or no answer) before that becomes a GatewayError."""
    from botocore.exceptions import ClientError, ParamValidationError

    try:
        response = await client.converse_stream(**call.body)
    except ClientError as exc:
        raise converse_error(exc) from None
    except ParamValidationError as exc:
        raise _invalid_body(exc) from None
    except _transport_errors() as exc:
        raise _transport_error(exc, provider, answering=False) from None
    return response["stream"]


async def stream_events(stream: Any, provider: str = "bedrock") -> AsyncGenerator[dict[str, Any], None]:
    """The ConverseStream events of an open stream, one botocore dict each, as they arrive. An
    exception event (which botocore raises as ``EventStreamError``) is yielded as its event dict
    ``{"throttlingException": {"message": …}}``, so the decoder sees one shape; a broken or
    stalled connection raises a GatewayError. The HTTP response is closed when the iteration
    ends, however it ends (a client that disconnects closes the upstream call)."""
    from botocore.exceptions import EventStreamError

    try:
        try:
            async for event in stream:
                yield event
        except EventStreamError as exc:
            error = exc.response.get("Error", {})
            yield {str(error.get("Code") or "internalServerException"): {"message": error.get("Message", "")}}
        except _transport_errors() as exc:
            raise _transport_error(exc, provider, answering=True) from None
    finally:
        stream.close()


async def converse_stream_events(client: Any, call: ProviderCall,
                                 provider: str = "bedrock") -> AsyncIterator[dict[str, Any]]:
    """:func:`open_converse_stream` then :func:`stream_events`, as one iteration."""
    stream = await open_converse_stream(client, call, provider)
    async for event in stream_events(stream, provider):
        yield event
