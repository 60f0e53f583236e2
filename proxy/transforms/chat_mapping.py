"""Read an OpenAI batch request (chat completions or Responses) into a target-neutral shape.

Every rule about what a target can express lives here, driven by a :class:`Target`
description, so the per-provider modules only rearrange a :class:`ChatRequest` into their
own JSON and never decide what is allowed. Anything a target cannot express raises
:class:`~proxy.transforms.jsonl.BatchLineError` naming the line and the field; nothing is
silently dropped except fields that do not change what is generated (``user``, ``store``,
``metadata``, ``service_tier``, image ``detail``, and any field set to ``null`` or ``false``)
and ``model``, which only the Anthropic rows use (Bedrock and Vertex jobs name the model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn, Union

from .jsonl import BatchLineError, describe


@dataclass(frozen=True)
class Target:
    """What a provider's batch rows can express."""

    name: str  # in error messages, e.g. "Bedrock (Claude)"
    image_types: frozenset[str]  # media types of images it accepts
    url_schemes: frozenset[str] = frozenset()  # image URLs it fetches itself; else data: URLs only
    url_needs_media_type: bool = False  # a fetched image must be typed (by its URL's extension)
    json_output: bool = False  # JSON mode / JSON-schema output
    max_temperature: float = 1.0


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    media_type: str | None  # None only for a URL whose type is unknown
    data: str | None = None  # base64, from a data: URL
    url: str | None = None  # otherwise the URL the target fetches


Part = Union[Text, Image]


@dataclass
class Turn:
    role: str  # "user" or "assistant"; consecutive turns of one role are merged
    parts: list[Part]


@dataclass
class ChatRequest:
    model: str | None = None
    system: list[str] = field(default_factory=list)  # system/developer texts, in order
    turns: list[Turn] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    json_output: bool = False
    json_schema: dict[str, Any] | None = None  # with json_output: the schema the output must follow


# Read (model) or harmless to drop: they do not change what is generated.
_COMMON_FIELDS = frozenset({"model", "user", "store", "metadata", "service_tier"})
_CHAT_FIELDS = _COMMON_FIELDS | {
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "response_format", "n",
}
_RESPONSES_FIELDS = _COMMON_FIELDS | {
    "input", "instructions", "max_output_tokens", "temperature", "top_p", "text",
}
_CHAT_MESSAGE_FIELDS = frozenset({"role", "content"})
_RESPONSES_ITEM_FIELDS = frozenset({"type", "role", "content", "id", "status"})  # id/status: echoed output items
_TEXT_FIELDS = frozenset({"format"})
_SYSTEM_ROLES = ("system", "developer")
_TURN_ROLES = ("user", "assistant")
_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg"}  # common in hand-written data: URLs
_EXTENSION_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif",
}


def compact(**fields: object) -> dict[str, Any]:
    """The keyword arguments that are not ``None``, for building optional JSON fields."""
    return {key: value for key, value in fields.items() if value is not None}


def read_request(line: int, request: dict[str, Any], target: Target) -> ChatRequest:
    """Read a validated batch request (``url`` + ``body``) for ``target``."""
    reader = _Reader(line, target)
    url, body = request["url"], request["body"]
    if url == "/v1/chat/completions":
        return reader.chat(body)
    if url == "/v1/responses":
        return reader.responses(body)
    reader.fail("url", f"{describe(url)} cannot be translated to {target.name}: "
                       "only /v1/chat/completions and /v1/responses batches can")


class _Reader:
    def __init__(self, line: int, target: Target) -> None:
        self.line = line
        self.target = target

    def fail(self, field: str, problem: str) -> NoReturn:
        raise BatchLineError(self.line, f'"{field}" {problem}')

    def unsupported(self, field: str) -> NoReturn:
        self.fail(field, f"cannot be translated to {self.target.name}")

    # ---------------------------------------------------------------- the two request shapes

    def chat(self, body: dict[str, Any]) -> ChatRequest:
        self.check_fields(body, _CHAT_FIELDS, "body")
        req = self.common(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.fail("body.messages", f"must be a non-empty array, got {describe(messages)}")
        for i, message in enumerate(messages):
            where = f"body.messages[{i}]"
            if not isinstance(message, dict):
                self.fail(where, f"must be an object, got {describe(message)}")
            self.check_fields(message, _CHAT_MESSAGE_FIELDS, where)
            self.add_message(req, message, where, responses=False)
        self.require_turns(req, "body.messages")

        n = body.get("n")
        if n is not None and (type(n) is not int or n != 1):
            self.fail("body.n", f"must be 1 for {self.target.name} (one choice per request), got {describe(n)}")
        max_tokens = self.positive_int(body, "max_tokens")
        max_completion_tokens = self.positive_int(body, "max_completion_tokens")
        if max_tokens is not None and max_completion_tokens is not None:
            self.fail("body.max_completion_tokens", 'cannot be set together with "body.max_tokens"')
        req.max_tokens = max_completion_tokens if max_tokens is None else max_tokens
        self.stop(req, body.get("stop"))
        self.output_format(req, body.get("response_format"), "body.response_format", flat=False)
        return req

    def responses(self, body: dict[str, Any]) -> ChatRequest:
        self.check_fields(body, _RESPONSES_FIELDS, "body")
        req = self.common(body)
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                self.fail("body.instructions", f"must be a string, got {describe(instructions)}")
            req.system.append(instructions)
        items = body.get("input")
        if isinstance(items, str):
            req.turns.append(Turn("user", [Text(items)]))
        elif isinstance(items, list) and items:
            for i, item in enumerate(items):
                where = f"body.input[{i}]"
                if not isinstance(item, dict):
                    self.fail(where, f"must be an object, got {describe(item)}")
                kind = item.get("type")
                if kind not in (None, "message"):
                    self.fail(f"{where}.type", f"{describe(kind)} cannot be translated to {self.target.name}")
                self.check_fields(item, _RESPONSES_ITEM_FIELDS, where)
                self.add_message(req, item, where, responses=True)
        else:
            self.fail("body.input", f"must be a string or a non-empty array, got {describe(items)}")
        self.require_turns(req, "body.input")

        req.max_tokens = self.positive_int(body, "max_output_tokens")
        text = body.get("text")
        if text is not None:
            if not isinstance(text, dict):
                self.fail("body.text", f"must be an object, got {describe(text)}")
            self.check_fields(text, _TEXT_FIELDS, "body.text")
            self.output_format(req, text.get("format"), "body.text.format", flat=True)
        return req

    def common(self, body: dict[str, Any]) -> ChatRequest:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            self.fail("body.model", f"must be a string, got {describe(model)}")
        return ChatRequest(
            model=model,
            temperature=self.number(body, "temperature", self.target.max_temperature),
            top_p=self.number(body, "top_p", 1.0),
        )

    def check_fields(self, obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        for key, value in obj.items():
            if key not in allowed and value is not None and value is not False:
                self.unsupported(f"{where}.{key}")

    # ---------------------------------------------------------------- messages and content

    def add_message(self, req: ChatRequest, message: dict[str, Any], where: str, *, responses: bool) -> None:
        role = message.get("role")
        if role not in _SYSTEM_ROLES and role not in _TURN_ROLES:
            self.fail(f"{where}.role", f"must be system, developer, user or assistant for "
                                       f"{self.target.name}, got {describe(role)}")
        parts = self.content(message.get("content"), f"{where}.content", responses=responses)
        if role in _SYSTEM_ROLES:
            for j, part in enumerate(parts):
                if not isinstance(part, Text):
                    self.fail(f"{where}.content[{j}]", f"must be text: {self.target.name} takes no images "
                                                       "in system instructions")
                req.system.append(part.text)
        elif req.turns and req.turns[-1].role == role:
            req.turns[-1].parts.extend(parts)
        else:
            req.turns.append(Turn(role, parts))

    def require_turns(self, req: ChatRequest, where: str) -> None:
        if not req.turns:
            self.fail(where, "must hold at least one user or assistant message")

    def content(self, content: object, where: str, *, responses: bool) -> list[Part]:
        if isinstance(content, str):
            return [Text(content)]
        if not isinstance(content, list) or not content:
            self.fail(where, f"must be a string or a non-empty array of parts, got {describe(content)}")
        text_types = ("input_text", "output_text") if responses else ("text",)
        image_type = "input_image" if responses else "image_url"
        parts: list[Part] = []
        for j, part in enumerate(content):
            at = f"{where}[{j}]"
            if not isinstance(part, dict):
                self.fail(at, f"must be an object, got {describe(part)}")
            kind = part.get("type")
            if kind in text_types:
                text = part.get("text")
                if not isinstance(text, str):
                    self.fail(f"{at}.text", f"must be a string, got {describe(text)}")
                parts.append(Text(text))
            elif kind == image_type and responses:
                if part.get("file_id") is not None:
                    self.unsupported(f"{at}.file_id")
                parts.append(self.image(part.get("image_url"), f"{at}.image_url"))
            elif kind == image_type:
                image_url = part.get("image_url")
                if not isinstance(image_url, dict):
                    self.fail(f"{at}.image_url", f"must be an object, got {describe(image_url)}")
                parts.append(self.image(image_url.get("url"), f"{at}.image_url.url"))
            else:
                self.fail(f"{at}.type", f"{describe(kind)} cannot be translated to {self.target.name}")
        return parts

    def image(self, url: object, where: str) -> Image:
        if not isinstance(url, str) or not url:
            self.fail(where, f"must be an image URL, got {describe(url)}")
        target = self.target
        if url[:5].lower() == "data:":
            header, comma, data = url[5:].partition(",")
            media_type, *params = header.split(";")
            if not comma or "base64" not in params:
                self.fail(where, "must be a base64 data: URL such as data:image/png;base64,...")
            return Image(self.media_type(media_type.lower(), where), data=data)
        if url.partition(":")[0].lower() not in target.url_schemes:
            accepted = "a base64 data: URL"
            if target.url_schemes:
                accepted += " or a URL of scheme " + " or ".join(sorted(target.url_schemes))
            self.fail(where, f"must be {accepted} for {target.name}, got {describe(url)}")
        path = url.split("?", 1)[0].split("#", 1)[0]
        url_type = _EXTENSION_TYPES.get(path.rpartition(".")[2].lower())
        if url_type is not None:
            self.media_type(url_type, where)
        elif target.url_needs_media_type:
            self.fail(where, f"must end in an image file extension ({', '.join(_EXTENSION_TYPES)}) for "
                             f"{target.name} to know its type, or be a base64 data: URL; got {describe(url)}")
        return Image(url_type, url=url)

    def media_type(self, media_type: str, where: str) -> str:
        media_type = _MEDIA_TYPE_ALIASES.get(media_type, media_type)
        if media_type not in self.target.image_types:
            self.fail(where, f"is an image of type {describe(media_type)}; {self.target.name} takes "
                             f"{', '.join(sorted(self.target.image_types))}")
        return media_type

    # ---------------------------------------------------------------- generation settings

    def positive_int(self, body: dict[str, Any], key: str) -> int | None:
        value = body.get(key)
        if value is not None and (type(value) is not int or value < 1):
            self.fail(f"body.{key}", f"must be a positive integer, got {describe(value)}")
        return value

    def number(self, body: dict[str, Any], key: str, upper: float) -> float | None:
        value = body.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= upper):
            self.fail(f"body.{key}", f"must be a number from 0 to {upper:g} for {self.target.name}, "
                                     f"got {describe(value)}")
        return value

    def stop(self, req: ChatRequest, stop: object) -> None:
        if isinstance(stop, str):
            req.stop = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            req.stop = stop
        elif stop is not None:
            self.fail("body.stop", f"must be a string or an array of strings, got {describe(stop)}")

    def output_format(self, req: ChatRequest, fmt: object, where: str, *, flat: bool) -> None:
        """``response_format`` (schema under ``json_schema``) or Responses ``text.format`` (flat)."""
        if fmt is None:
            return
        if not isinstance(fmt, dict):
            self.fail(where, f"must be an object, got {describe(fmt)}")
        kind = fmt.get("type")
        if kind == "text":
            return
        if kind not in ("json_object", "json_schema"):
            self.fail(f"{where}.type", f'must be "text", "json_object" or "json_schema", got {describe(kind)}')
        if not self.target.json_output:
            self.fail(where, f"{describe(kind)} cannot be translated to {self.target.name}, "
                             "which has no JSON output mode")
        req.json_output = True
        if kind == "json_object":
            return
        holder, at = (fmt, where) if flat else (fmt.get("json_schema"), f"{where}.json_schema")
        if not isinstance(holder, dict):
            self.fail(at, f"must be an object, got {describe(holder)}")
        schema = holder.get("schema")
        if not isinstance(schema, dict):
            self.fail(f"{at}.schema", f"must be an object, got {describe(schema)}")
        req.json_schema = schema
