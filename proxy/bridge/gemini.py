"""The Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` dialect on Vertex AI
(sans-IO; docs/provider-facts.md §8.7).

:meth:`GeminiDialect.build_call` → ``ProviderCall(path=…, body=GenerateContentRequest)``: the
path is relative to the Vertex host (``https://{region}-aiplatform.googleapis.com``, or
``https://aiplatform.googleapis.com`` for the ``global`` location); the I/O layer posts the
JSON with the provider's ``Authorization: Bearer <access token>`` and, for a stream, splits
the SSE answer and feeds each event's ``data`` (one GenerateContentResponse) to the decoder.

Function-call ids: Vertex's ``FunctionCall.id`` is optional and older models leave it out, so
a call without one gets a minted id (:data:`MINTED_PREFIX` + 20 hex digits). The id is stored
with the turn like any other; when the conversation goes back to Gemini, a minted id is left
out of both the ``functionCall`` and its ``functionResponse`` (Gemini pairs them by order and
name then), a provider id is sent back on both.

Thought signatures (``thoughtSignature``, opaque; Gemini 3 requires them back on function-call
parts): a signature on a thought part travels with that reasoning item; one on a function call
travels as a reasoning item of no text right before the call and goes back onto the call. A
signature on a plain text part is not kept (Gemini does not require it).
"""
from __future__ import annotations

import base64
import re
import secrets
from typing import Any, Callable, Iterable, Mapping

import orjson

from ..errors import GatewayError
from ..transforms.chat_mapping import compact
from ..transforms.jsonl import describe
from .events import (Event, Failure, Finish, ItemDone, ProviderCall, ReasoningDelta, ReasoningStart, TextDelta,
                     TextStart, ToolArgsDelta, ToolCallStart, Usage)
from .request import (Conversation, File, Image, Part, Reasoning, RequestReader, StoredFile, Text, ToolCall,
                      ToolResult, fail, media_type_of, unsupported)

PROVIDER = "Vertex Gemini"
MINTED_PREFIX = "call_vtx"

_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_THINKING_MODEL = re.compile(r"gemini-(?:2\.5|[3-9])")
_URL_SCHEMES = ("gs://", "https://")
# reasoning.effort → thinkingConfig.thinkingBudget ("none" turns thinking off where a model can).
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}

_COMPLETED = ("completed", None)
_FINISH: dict[str, tuple[str, str | None]] = {
    "STOP": _COMPLETED, "FINISH_REASON_UNSPECIFIED": _COMPLETED, "OTHER": _COMPLETED,
    "MAX_TOKENS": ("incomplete", "max_output_tokens"), "CONTINUATION": ("incomplete", "max_output_tokens"),
    **{reason: ("incomplete", "content_filter") for reason in (
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MODEL_ARMOR", "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION")},
}
_FAILED_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                            "MALFORMED_RESPONSE"})
_ERROR_CODES = {"RESOURCE_EXHAUSTED": "rate_limit_exceeded", "INVALID_ARGUMENT": "invalid_prompt"}


def vertex_path(project: str, region: str, model: str, *, stream: bool) -> str:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:{method}"


def vertex_host(region: str) -> str:
    """The Vertex AI API host for a location (docs/provider-facts.md §8.7)."""
    return "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"


# An error answer's google.rpc status → (the gateway's status, code, retryable). 401/403 are the
# gateway's own credentials: the client gets a 502 without the detail.
_HTTP_ERRORS: dict[str, tuple[int, str, bool]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error", False),
    "FAILED_PRECONDITION": (400, "invalid_request_error", False),
    "OUT_OF_RANGE": (400, "invalid_request_error", False),
    "NOT_FOUND": (400, "model_not_found", False),
    "UNAUTHENTICATED": (502, "upstream_auth_failed", False),
    "PERMISSION_DENIED": (502, "upstream_auth_failed", False),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_exceeded", True),
    "UNAVAILABLE": (503, "upstream_unavailable", True),
    "DEADLINE_EXCEEDED": (504, "upstream_timeout", True),
}


def gemini_error(status: int, body: Any) -> GatewayError:
    """A non-200 answer of generateContent / streamGenerateContent (``{"error": {code, message,
    status}}``, docs/provider-facts.md §8.7) → the gateway's error."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    rpc = str(error.get("status") or "")
    default = (400, "invalid_request_error", False) if 400 <= status < 500 and status != 429 else (
        429, "rate_limit_exceeded", True) if status == 429 else (502, "upstream_error", True)
    http, code, retryable = _HTTP_ERRORS.get(rpc, default)
    if http == 502 and code == "upstream_auth_failed":
        message = "Vertex AI refused the gateway's credentials for this model."
    else:
        message = f"Vertex AI: {error.get('message') or rpc or f'HTTP {status}'}"
    return GatewayError(http, message, code=code, param="model" if rpc == "NOT_FOUND" else None,
                        retryable=retryable)


def mint_call_id() -> str:
    return MINTED_PREFIX + secrets.token_hex(10)


class GeminiDialect:
    def __init__(self, project: str, region: str, *, files: Mapping[str, StoredFile] | None = None,
                 new_call_id: Callable[[], str] = mint_call_id) -> None:
        self.project, self.region = project, region
        self.files: Mapping[str, StoredFile] = files or {}
        self.new_call_id = new_call_id

    def for_files(self, files: Mapping[str, StoredFile]) -> "GeminiDialect":
        return GeminiDialect(self.project, self.region, files=files, new_call_id=self.new_call_id)

    # ---------------------------------------------------------------------------- request
    def build_call(self, request: dict[str, Any], history: list[dict[str, Any]], model: str,
                   *, stream: bool) -> ProviderCall:
        model = model.removeprefix("publishers/google/models/")
        if not _MODEL.fullmatch(model):
            fail("model", f"is not a Gemini model name such as gemini-2.5-flash: {describe(model)}")
        conv = RequestReader(PROVIDER, files=self.files, max_temperature=2.0).read(request, history)
        body: dict[str, Any] = {"contents": _contents(conv)}
        if conv.system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in conv.system]}
        if conv.tools:
            body["tools"] = [{"functionDeclarations": [_declaration(t.param, t.name, t.description, t.parameters)
                                                       for t in conv.tools]}]
        calling = _function_calling(conv)
        if calling is not None:
            body["toolConfig"] = {"functionCallingConfig": calling}
        config = _generation_config(conv, model)
        if config:
            body["generationConfig"] = config
        if conv.metadata:
            body["labels"] = _labels(conv.metadata)
        return ProviderCall(stream=stream, body=body, path=vertex_path(self.project, self.region, model, stream=stream))

    # ---------------------------------------------------------------------------- answers
    def decode_whole(self, answer: Any) -> list[Event]:
        decoder = GeminiStreamDecoder(self.new_call_id)
        return [*decoder.feed(answer), *decoder.close()]

    def stream_decoder(self) -> "GeminiStreamDecoder":
        return GeminiStreamDecoder(self.new_call_id)


# ------------------------------------------------------------------------------ request parts
def _contents(conv: Conversation) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for turn in conv.turns:
        parts = _model_parts(turn.parts) if turn.role == "assistant" else [_user_part(p) for p in turn.parts]
        if not parts:
            continue  # an assistant turn of reasoning items only: nothing Gemini reads
        role = "model" if turn.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _user_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Image):
        if part.data is not None:
            return {"inlineData": {"mimeType": part.media_type, "data": base64.b64encode(part.data).decode()}}
        assert part.url is not None
        if not part.url.startswith(_URL_SCHEMES):
            unsupported(part.param, PROVIDER, "image URLs must be gs:// or https:// (or send a base64 data: URL)")
        if part.media_type is None:
            fail(part.param, f"must end in an image file extension for {PROVIDER} to know its type "
                             "(fileData.mimeType is required), or be a base64 data: URL")
        return {"fileData": {"mimeType": part.media_type, "fileUri": part.url}}
    if isinstance(part, File):
        stored = part.file
        if not stored.uri.startswith("gs://"):
            fail(part.param, f"names a file that is not in Cloud Storage; {PROVIDER} reads files from gs:// only")
        media_type = stored.media_type or media_type_of(stored.filename)
        if media_type is None:
            fail(part.param, f"names a file whose type {PROVIDER} cannot tell (fileData.mimeType is required): "
                             f"{describe(stored.filename)}")
        return {"fileData": {"mimeType": media_type, "fileUri": stored.uri}}
    if isinstance(part, ToolResult):
        texts = []
        for j, p in enumerate(part.output):
            if not isinstance(p, Text):
                unsupported(f"{part.param}.output[{j}]", PROVIDER, "function outputs take text only")
            texts.append(p.text)
        response: dict[str, Any] = {"name": part.name, "response": {"output": "".join(texts)}}
        if not part.call_id.startswith(MINTED_PREFIX):
            response["id"] = part.call_id
        return {"functionResponse": response}
    raise AssertionError(f"{type(part).__name__} in a user turn")  # RequestReader puts it elsewhere


def _model_parts(parts: list[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: str | None = None  # a signature that goes onto the next function call
    for part in parts:
        if isinstance(part, Reasoning):
            if part.text:
                out.append({"text": part.text, "thought": True,
                            **({"thoughtSignature": part.signature} if part.signature else {})})
            else:
                pending = part.signature
            continue
        if isinstance(part, ToolCall):
            call: dict[str, Any] = {"name": part.name, "args": part.args}
            if not part.call_id.startswith(MINTED_PREFIX):
                call["id"] = part.call_id
            rendered: dict[str, Any] = {"functionCall": call}
            if pending:
                rendered["thoughtSignature"] = pending
        else:
            assert isinstance(part, Text)  # RequestReader: assistant turns hold text, calls, reasoning
            rendered = {"text": part.text}
        pending = None
        out.append(rendered)
    return out


def _declaration(param: str, name: str, description: str | None, parameters: dict[str, Any] | None) -> dict[str, Any]:
    if not _FUNCTION_NAME.fullmatch(name):
        fail(f"{param}.name", f"must start with a letter or '_' and hold only letters, digits, '_', '.', ':' "
                              f"or '-', at most 128 characters, for {PROVIDER}: {describe(name)}")
    declaration: dict[str, Any] = {"name": name}
    if description:
        declaration["description"] = description
    if parameters is not None:
        declaration["parametersJsonSchema"] = parameters  # plain JSON Schema, as OpenAI tools write it
    return declaration


def _function_calling(conv: Conversation) -> dict[str, Any] | None:
    if conv.tool_choice is None:
        return None
    if conv.tool_choice == "function":
        return {"mode": "ANY", "allowedFunctionNames": [conv.forced_tool]}
    return {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[conv.tool_choice]}


def _generation_config(conv: Conversation, model: str) -> dict[str, Any]:
    config = compact(maxOutputTokens=conv.max_output_tokens, temperature=conv.temperature, topP=conv.top_p,
                     stopSequences=conv.stop or None)
    fmt = conv.output_format
    if fmt is not None:
        config["responseMimeType"] = "application/json"
        if fmt.schema is not None:
            config["responseJsonSchema"] = fmt.schema
    if conv.effort is not None or conv.reasoning_summary is not None:
        if not _THINKING_MODEL.match(model):
            unsupported("reasoning", PROVIDER, f"model {describe(model)} has no thinking the bridge knows "
                                               "(Gemini 2.5 and later models do)")
        thinking: dict[str, Any] = {}
        if conv.effort is not None:
            thinking["thinkingBudget"] = THINKING_BUDGETS[conv.effort]
        if conv.reasoning_summary is not None:
            thinking["includeThoughts"] = True  # Gemini's thought summaries
        config["thinkingConfig"] = thinking
    return config


def _label_ok(text: str, *, key: bool) -> bool:
    if not text:
        return not key
    if len(text) > 63 or (key and not text[0].islower()):
        return False
    return all(c.islower() or c.isdigit() or c in "_-" for c in text)


def _labels(metadata: dict[str, str]) -> dict[str, str]:
    for key, value in metadata.items():
        if not _label_ok(key, key=True):
            fail("metadata", f"key {describe(key)} cannot be a Vertex label: it must start with a lowercase "
                             "letter and hold at most 63 lowercase letters, digits, '_' or '-'")
        if not _label_ok(value, key=False):
            fail(f"metadata.{key}", "cannot be a Vertex label value: at most 63 lowercase letters, digits, '_' or '-'")
    return metadata


# ------------------------------------------------------------------------------ answers
def _usage(meta: Any) -> Usage:
    meta = meta or {}
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


class GeminiStreamDecoder:
    """GenerateContentResponse chunks (a dict, or the JSON text of one SSE ``data``) → neutral
    events. Text arrives as successive parts of successive chunks and continues the open text
    item; a thought part continues the open reasoning item; a function call arrives whole.
    The chunk that carries ``finishReason`` ends the turn, with the usage seen so far."""

    def __init__(self, new_call_id: Callable[[], str] = mint_call_id) -> None:
        self.new_call_id = new_call_id
        self._next_item = 0
        self._open: tuple[int, str] | None = None  # (item, "text" | "reasoning")
        self._usage: Any = None
        self._done = False

    def _start(self, kind: str) -> tuple[int, list[Event]]:
        events = self._close_open()
        item = self._next_item
        self._next_item += 1
        events.append(TextStart(item) if kind == "text" else ReasoningStart(item))
        self._open = (item, kind)
        return item, events

    def _close_open(self) -> list[Event]:
        if self._open is None:
            return []
        item = self._open[0]
        self._open = None
        return [ItemDone(item)]

    def _continue(self, kind: str) -> tuple[int, list[Event]]:
        if self._open is not None and self._open[1] == kind:
            return self._open[0], []
        return self._start(kind)

    def feed(self, frame: Any) -> Iterable[Event]:
        if self._done:
            return []
        chunk = orjson.loads(frame) if isinstance(frame, (bytes, bytearray, memoryview, str)) else frame
        if not isinstance(chunk, dict):
            return self._fail("server_error", "Gemini sent a stream chunk that is not a JSON object")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            code = _ERROR_CODES.get(str(error.get("status")), "server_error")
            return self._fail(code, f"Gemini: {error.get('message') or 'the stream failed'}")
        if chunk.get("usageMetadata"):
            self._usage = chunk["usageMetadata"]
        candidates = chunk.get("candidates") or []
        if not candidates:
            block = (chunk.get("promptFeedback") or {}).get("blockReason")
            if block:
                self._done = True
                return [*self._close_open(), Finish("incomplete", _usage(self._usage), "content_filter")]
            return []
        candidate = candidates[0]
        events: list[Event] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            events.extend(self._part(part))
        reason = candidate.get("finishReason")
        if reason:
            events.extend(self._close_open())
            events.extend(self._finish(str(reason), candidate.get("finishMessage")))
        return events

    def _part(self, part: dict[str, Any]) -> list[Event]:
        signature = part.get("thoughtSignature")
        if part.get("thought"):
            item, events = self._continue("reasoning")
            return [*events, ReasoningDelta(item, part.get("text") or "", signature)]
        if "functionCall" in part:
            call = part["functionCall"] or {}
            events = self._close_open()
            if signature:
                item, started = self._start("reasoning")
                events += [*started, ReasoningDelta(item, "", signature), *self._close_open()]
            item = self._next_item
            self._next_item += 1
            call_id = call.get("id") or self.new_call_id()
            return [*events, ToolCallStart(item, str(call_id), str(call.get("name", ""))),
                    ToolArgsDelta(item, orjson.dumps(call.get("args") or {}).decode()), ItemDone(item)]
        text = part.get("text")
        if isinstance(text, str) and text:
            item, events = self._continue("text")
            return [*events, TextDelta(item, text)]
        return []  # an empty text part (a bare signature), or output kinds a Responses turn has no item for

    def _finish(self, reason: str, message: Any) -> list[Event]:
        if reason in _FAILED_FINISH:
            return self._fail("server_error", f"Gemini ended the turn with {reason}"
                                              f"{': ' + str(message) if message else ''}")
        self._done = True
        status, incomplete = _FINISH.get(reason, _COMPLETED)
        return [Finish(status, _usage(self._usage), incomplete)]

    def _fail(self, code: str, message: str) -> list[Event]:
        self._done = True
        return [*self._close_open(), Failure(code, message)]

    def close(self) -> list[Event]:
        """The stream (or the whole answer) ended: a Failure if no chunk finished the turn."""
        if self._done:
            return []
        return self._fail("server_error", "The Gemini stream ended before the turn did")
