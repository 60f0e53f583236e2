"""A Responses request plus its stored history, read into one provider-neutral conversation
(sans-IO). The dialects (converse.py, gemini.py) only lay this out in their provider's JSON;
what the Responses API means — roles, items, content parts, the generation settings — is read
here once, and every field the bridge cannot carry is a 400 naming it (``param``), never a
silent drop.

Shape of what is read (docs/provider-facts.md §3.2, §3.3):

* ``instructions`` and ``system`` / ``developer`` messages → :attr:`Conversation.system`, in order;
* ``user`` / ``assistant`` messages, ``function_call``, ``function_call_output`` and ``reasoning``
  items → :class:`Turn` s; consecutive items of one side are merged into one turn (a function
  call belongs to the assistant, its output to the user), as the message APIs want alternation;
* ``history`` (the previous turns' input and output items, oldest first) comes before ``input``
  and is read with the same rules, with params named ``history[i]`` for the operator's logs.

Accepted and not passed on, because they do not change what is generated or no provider
here can honour them without failing the default request: ``user``, ``safety_identifier``,
``prompt_cache_key``, ``input_image.detail``, a function tool's ``strict`` (OpenAI's default is
true; Converse's ``toolSpec.strict`` exists only on some models, Gemini has none), and
``text.format.strict`` (both providers' schema outputs are always constrained).

Reasoning items travel back to the provider through :attr:`Reasoning.signature`: the emitter
stores a neutral ``ReasoningDelta.signature`` as the reasoning item's ``encrypted_content``
(the Responses field for opaque reasoning state), and this reader takes it from there.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn, Union

import orjson

from ..errors import GatewayError
from ..transforms.jsonl import describe

# Fields the bridge itself acts on (emitter, state, routing): never the dialect's business.
BRIDGE_FIELDS = frozenset({
    "model", "stream", "store", "previous_response_id", "background", "stream_options",
})
# Fields that do not change what is generated (identifiers and hints for the caller's own use).
HARMLESS_FIELDS = frozenset({"user", "safety_identifier", "prompt_cache_key"})
READ_FIELDS = frozenset({
    "input", "instructions", "max_output_tokens", "temperature", "top_p", "stop", "tools",
    "tool_choice", "text", "reasoning", "metadata", "parallel_tool_calls", "include",
    "service_tier", "truncation",
})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_SUMMARIES = ("auto", "concise", "detailed")
_MEDIA_ALIASES = {"image/jpg": "image/jpeg"}


def fail(param: str, problem: str, *, code: str = "invalid_value") -> NoReturn:
    raise GatewayError(400, f"{param}: {problem}", param=param, code=code)


def unsupported(param: str, provider: str, why: str = "") -> NoReturn:
    fail(param, f"is not supported on {provider}{': ' + why if why else ''}.", code="unsupported_parameter")


# ------------------------------------------------------------------------------ the parts
@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    """An image: inline bytes (from a data: URL) or a URL the provider fetches itself."""
    param: str
    media_type: str | None
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class StoredFile:
    """Where a gateway file id's bytes live, as the wiring resolved it from the store before
    the (sans-IO) dialect runs: ``uri`` is ``s3://bucket/key`` (bedrock) or ``gs://bucket/name``
    (vertex)."""
    uri: str
    filename: str
    media_type: str | None = None


@dataclass(frozen=True)
class File:
    param: str
    file: StoredFile


@dataclass(frozen=True)
class ToolCall:
    param: str
    call_id: str
    name: str
    args: dict[str, Any]  # the item's ``arguments`` JSON text, parsed (every provider takes an object)


@dataclass(frozen=True)
class ToolResult:
    param: str
    call_id: str
    name: str           # the called function's name (Gemini needs it), from the matching call
    output: list["Part"]


@dataclass(frozen=True)
class Reasoning:
    param: str
    text: str
    signature: str | None


Part = Union[Text, Image, File, ToolCall, ToolResult, Reasoning]


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    parts: list[Part]


@dataclass(frozen=True)
class FunctionTool:
    param: str
    name: str
    description: str | None
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class OutputFormat:
    kind: str  # "json_schema" or "json_object"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None


@dataclass
class Conversation:
    system: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[FunctionTool] = field(default_factory=list)
    tool_choice: str | None = None        # "auto", "none", "required", "function" (see forced_tool)
    forced_tool: str | None = None
    output_format: OutputFormat | None = None
    effort: str | None = None
    reasoning_summary: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def has_tool_blocks(self) -> bool:
        return any(isinstance(p, (ToolCall, ToolResult)) for t in self.turns for p in t.parts)


# ------------------------------------------------------------------------------ the reader
class RequestReader:
    """Reads one request for one provider. ``provider`` names it in messages
    (``"Bedrock Converse"``); ``files`` maps the gateway file ids the request names to where
    their bytes live (resolved by the caller; a missing id is a 400 naming it)."""

    def __init__(self, provider: str, *, files: Mapping[str, StoredFile] | None = None,
                 max_temperature: float = 2.0) -> None:
        self.provider = provider
        self.files = files or {}
        self.max_temperature = max_temperature
        self._calls: dict[str, str] = {}  # call_id -> function name, across history and input

    def read(self, request: dict[str, Any], history: list[dict[str, Any]]) -> Conversation:
        for key, value in request.items():
            if value is None or key in BRIDGE_FIELDS or key in HARMLESS_FIELDS:
                continue
            if key not in READ_FIELDS:
                unsupported(key, self.provider)
        conv = Conversation()
        instructions = request.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                fail("instructions", f"must be a string, got {describe(instructions)}")
            if instructions:
                conv.system.append(instructions)
        for i, item in enumerate(history):
            self.item(conv, item, f"history[{i}]")
        items = request.get("input")
        if isinstance(items, str):
            self.append(conv, "user", Text(items))
        elif isinstance(items, list):
            for i, item in enumerate(items):
                self.item(conv, item, f"input[{i}]")
        elif items is not None:
            fail("input", f"must be a string or an array of items, got {describe(items)}")
        if not conv.turns:
            fail("input", "must hold at least one user message", code="missing_required_parameter")
        self.settings(conv, request)
        return conv

    # -- items ----------------------------------------------------------------------------
    @staticmethod
    def append(conv: Conversation, role: str, *parts: Part) -> None:
        if conv.turns and conv.turns[-1].role == role:
            conv.turns[-1].parts.extend(parts)
        else:
            conv.turns.append(Turn(role, list(parts)))

    def item(self, conv: Conversation, item: object, where: str) -> None:
        if not isinstance(item, dict):
            fail(where, f"must be an object, got {describe(item)}")
        kind = item.get("type", "message")
        if kind == "message":
            self.message(conv, item, where)
        elif kind == "function_call":
            call_id = self.string(item, "call_id", where)
            name = self.string(item, "name", where)
            self._calls[call_id] = name
            self.append(conv, "assistant", ToolCall(where, call_id, name, self.arguments(item, where)))
        elif kind == "function_call_output":
            call_id = self.string(item, "call_id", where)
            called = self._calls.get(call_id)
            if called is None:
                fail(f"{where}.call_id", f"no function_call with call_id {describe(call_id)} precedes it in "
                                         "the conversation")
            output = item.get("output")
            if isinstance(output, str):
                parts: list[Part] = [Text(output)]
            elif isinstance(output, list):
                parts = self.content(output, f"{where}.output", ("input_text",))
            else:
                fail(f"{where}.output", f"must be a string or an array of content parts, got {describe(output)}")
            self.append(conv, "user", ToolResult(where, call_id, called, parts))
        elif kind == "reasoning":
            self.append(conv, "assistant", self.reasoning(item, where))
        else:
            unsupported(f"{where}.type", self.provider, f"item type {describe(kind)}")

    def message(self, conv: Conversation, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role in ("system", "developer"):
            for j, part in enumerate(self.content(content, f"{where}.content", ("input_text",))):
                if not isinstance(part, Text):
                    unsupported(f"{where}.content[{j}]", self.provider, "system instructions take text only")
                if part.text:  # an empty instruction says nothing (and Converse refuses it)
                    conv.system.append(part.text)
        elif role == "user":
            self.append(conv, "user", *self.content(content, f"{where}.content", ("input_text",)))
        elif role == "assistant":
            parts = self.content(content, f"{where}.content", ("output_text", "refusal", "input_text"))
            for j, part in enumerate(parts):
                if not isinstance(part, Text):
                    unsupported(f"{where}.content[{j}]", self.provider, "assistant messages take text only")
            self.append(conv, "assistant", *parts)
        else:
            fail(f"{where}.role", f"must be user, assistant, system or developer, got {describe(role)}")

    def content(self, content: object, where: str, text_types: tuple[str, ...]) -> list[Part]:
        if isinstance(content, str):
            return [Text(content)]
        if not isinstance(content, list):
            fail(where, f"must be a string or an array of content parts, got {describe(content)}")
        parts: list[Part] = []
        for j, part in enumerate(content):
            at = f"{where}[{j}]"
            if not isinstance(part, dict):
                fail(at, f"must be an object, got {describe(part)}")
            kind = part.get("type")
            if kind in text_types:
                key = "refusal" if kind == "refusal" else "text"
                parts.append(Text(self.string(part, key, at)))
            elif kind == "input_image":
                parts.append(self.image(part, at))
            elif kind == "input_file":
                parts.append(self.file(part, at))
            else:
                unsupported(f"{at}.type", self.provider, f"content part {describe(kind)}")
        return parts

    def image(self, part: dict[str, Any], at: str) -> Part:
        file_id = part.get("file_id")
        url = part.get("image_url")
        if file_id is not None:
            return File(f"{at}.file_id", self.stored(file_id, f"{at}.file_id"))
        if not isinstance(url, str) or not url:
            fail(f"{at}.image_url", f"must be an image URL or a data: URL, got {describe(url)}")
        if url[:5].lower() == "data:":
            media_type, data = decode_data_url(url, f"{at}.image_url")
            return Image(f"{at}.image_url", media_type, data=data)
        return Image(f"{at}.image_url", media_type_of(url), url=url)

    def file(self, part: dict[str, Any], at: str) -> Part:
        for key in ("file_data", "file_url"):
            if part.get(key) is not None:
                unsupported(f"{at}.{key}", self.provider, "send the file by a gateway file_id")
        file_id = part.get("file_id")
        if file_id is None:
            fail(f"{at}.file_id", "is required", code="missing_required_parameter")
        return File(f"{at}.file_id", self.stored(file_id, f"{at}.file_id"))

    def stored(self, file_id: object, param: str) -> StoredFile:
        if not isinstance(file_id, str) or file_id not in self.files:
            raise GatewayError(404, f"{param}: no such file: {describe(file_id)}", param=param, code="file_not_found")
        return self.files[file_id]

    def reasoning(self, item: dict[str, Any], where: str) -> Reasoning:
        texts: list[str] = []
        for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
            parts = item.get(key)
            if isinstance(parts, list) and parts:
                texts = [p["text"] for p in parts if isinstance(p, dict) and p.get("type") == kind
                         and isinstance(p.get("text"), str)]
                break
        signature = item.get("encrypted_content")
        if signature is not None and not isinstance(signature, str):
            fail(f"{where}.encrypted_content", f"must be a string, got {describe(signature)}")
        return Reasoning(where, "".join(texts), signature)

    @staticmethod
    def arguments(item: dict[str, Any], where: str) -> dict[str, Any]:
        arguments = item.get("arguments") or "{}"
        if not isinstance(arguments, str):
            fail(f"{where}.arguments", f"must be a JSON string, got {describe(arguments)}")
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            fail(f"{where}.arguments", "must be the JSON text of an object")
        return value

    @staticmethod
    def string(obj: dict[str, Any], key: str, where: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str):
            fail(f"{where}.{key}", f"must be a string, got {describe(value)}")
        return value

    # -- settings --------------------------------------------------------------------------
    def settings(self, conv: Conversation, request: dict[str, Any]) -> None:
        conv.max_output_tokens = self.positive_int(request, "max_output_tokens")
        conv.temperature = self.number(request, "temperature", self.max_temperature)
        conv.top_p = self.number(request, "top_p", 1.0)
        stop = request.get("stop")
        if isinstance(stop, str):
            conv.stop = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            conv.stop = list(stop)
        elif stop is not None:
            fail("stop", f"must be a string or an array of strings, got {describe(stop)}")
        if "" in conv.stop:
            fail("stop", "must not hold an empty stop sequence")
        self.tools(conv, request.get("tools"))
        self.tool_choice(conv, request.get("tool_choice"))
        self.text(conv, request.get("text"))
        self.reasoning_settings(conv, request.get("reasoning"))
        self.metadata(conv, request.get("metadata"))
        if request.get("parallel_tool_calls") is False:
            unsupported("parallel_tool_calls", self.provider, "it cannot turn parallel tool calls off")
        include = request.get("include")
        if include is not None:
            if not isinstance(include, list):
                fail("include", f"must be an array, got {describe(include)}")
            for j, entry in enumerate(include):
                if entry != "reasoning.encrypted_content":  # always returned by the bridge
                    unsupported(f"include[{j}]", self.provider, describe(entry))
        if request.get("service_tier") not in (None, "auto", "default"):
            unsupported("service_tier", self.provider, describe(request["service_tier"]))
        if request.get("truncation") not in (None, "disabled"):
            unsupported("truncation", self.provider, "the bridge never truncates a conversation")

    def positive_int(self, request: dict[str, Any], key: str) -> int | None:
        value = request.get(key)
        if value is not None and (type(value) is not int or value < 1):
            fail(key, f"must be a positive integer, got {describe(value)}")
        return value

    def number(self, request: dict[str, Any], key: str, upper: float) -> float | None:
        value = request.get(key)
        if value is None:
            return None
        if type(value) not in (int, float) or not 0 <= value <= upper:
            fail(key, f"must be a number from 0 to {upper:g} on {self.provider}, got {describe(value)}")
        return float(value)

    def tools(self, conv: Conversation, tools: object) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            fail("tools", f"must be an array, got {describe(tools)}")
        for i, tool in enumerate(tools):
            at = f"tools[{i}]"
            if not isinstance(tool, dict):
                fail(at, f"must be an object, got {describe(tool)}")
            if tool.get("type") != "function":
                unsupported(f"{at}.type", self.provider, f"only function tools are, not {describe(tool.get('type'))}")
            for key in tool:
                if key not in ("type", "name", "description", "parameters", "strict"):
                    unsupported(f"{at}.{key}", self.provider)
            name = self.string(tool, "name", at)
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                fail(f"{at}.description", f"must be a string, got {describe(description)}")
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                fail(f"{at}.parameters", f"must be a JSON schema object, got {describe(parameters)}")
            conv.tools.append(FunctionTool(at, name, description or None, parameters))

    def tool_choice(self, conv: Conversation, choice: object) -> None:
        if choice is None:
            return
        if choice in ("auto", "none", "required"):
            conv.tool_choice = str(choice)
        elif isinstance(choice, dict) and choice.get("type") == "function":
            name = self.string(choice, "name", "tool_choice")
            if name not in {t.name for t in conv.tools}:
                fail("tool_choice.name", f"names no function in tools: {describe(name)}")
            conv.tool_choice, conv.forced_tool = "function", name
        else:
            unsupported("tool_choice", self.provider, describe(choice))
        if conv.tool_choice in ("required", "function") and not conv.tools:
            fail("tool_choice", f"{describe(choice)} needs at least one function in tools")

    def text(self, conv: Conversation, text: object) -> None:
        if text is None:
            return
        if not isinstance(text, dict):
            fail("text", f"must be an object, got {describe(text)}")
        for key in text:
            if key == "verbosity" and text[key] in (None, "medium"):
                continue
            if key != "format":
                unsupported(f"text.{key}", self.provider)
        fmt = text.get("format")
        if fmt is None:
            return
        if not isinstance(fmt, dict):
            fail("text.format", f"must be an object, got {describe(fmt)}")
        kind = fmt.get("type")
        if kind == "text":
            return
        if kind == "json_object":
            conv.output_format = OutputFormat("json_object")
            return
        if kind != "json_schema":
            fail("text.format.type", f'must be "text", "json_object" or "json_schema", got {describe(kind)}')
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            fail("text.format.schema", f"must be a JSON schema object, got {describe(schema)}")
        name = fmt.get("name")
        description = fmt.get("description")
        conv.output_format = OutputFormat("json_schema", name if isinstance(name, str) else None, schema,
                                          description if isinstance(description, str) else None)

    def reasoning_settings(self, conv: Conversation, reasoning: object) -> None:
        if reasoning is None:
            return
        if not isinstance(reasoning, dict):
            fail("reasoning", f"must be an object, got {describe(reasoning)}")
        for key, value in reasoning.items():
            if key not in ("effort", "summary", "generate_summary") and value is not None:
                unsupported(f"reasoning.{key}", self.provider)
        effort = reasoning.get("effort")
        if effort is not None and effort not in EFFORTS:
            fail("reasoning.effort", f"must be one of {', '.join(EFFORTS)}, got {describe(effort)}")
        summary = reasoning.get("summary", reasoning.get("generate_summary"))
        if summary is not None and summary not in _SUMMARIES:
            fail("reasoning.summary", f"must be one of {', '.join(_SUMMARIES)}, got {describe(summary)}")
        conv.effort, conv.reasoning_summary = effort, summary

    def metadata(self, conv: Conversation, metadata: object) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            fail("metadata", f"must be an object of strings, got {describe(metadata)}")
        conv.metadata = dict(metadata)


# ------------------------------------------------------------------------------ helpers
def decode_data_url(url: str, param: str) -> tuple[str, bytes]:
    """``data:<type>;base64,<data>`` → (media type, bytes); 400 naming ``param`` otherwise."""
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        fail(param, "must be a base64 data: URL such as data:image/png;base64,...")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        fail(param, "holds data that is not valid base64")
    media_type = media_type.lower()
    return _MEDIA_ALIASES.get(media_type, media_type), raw


_EXTENSION_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "txt": "text/plain",
    "md": "text/markdown", "csv": "text/csv", "html": "text/html", "htm": "text/html",
    "json": "application/json", "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def extension(name: str) -> str:
    path = name.split("?", 1)[0].split("#", 1)[0]
    tail = path.rpartition("/")[2]
    return tail.rpartition(".")[2].lower() if "." in tail else ""


def media_type_of(name: str) -> str | None:
    """The media type a file name or URL's extension says, if it is one the bridge knows."""
    return _EXTENSION_TYPES.get(extension(name))
