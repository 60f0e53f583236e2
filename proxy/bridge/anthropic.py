"""The Anthropic Messages dialect (sans-IO): a Responses request + history → ``POST /v1/messages``,
and Anthropic's answer (JSON, or the SSE events ``message_start`` … ``message_stop``) → neutral
events. Facts: docs/provider-facts.md §13.

Request (each field the Responses API has, translated or refused by name — never dropped):

* ``input`` items and the stored history → ``messages``: user parts ``input_text`` → ``text``,
  ``input_image`` (``https`` URL, base64 data URL, or a gateway file id) → ``image``,
  ``input_file`` (a gateway file id, a PDF URL or base64 PDF data) → ``document``; assistant
  ``output_text`` → ``text``; ``function_call`` → ``tool_use`` (``call_id`` is the tool-use id),
  ``function_call_output`` → ``tool_result``; ``reasoning`` (ours: ``encrypted_content`` is the
  thinking signature, or ``redacted:<data>``) → ``thinking`` / ``redacted_thinking``. Items of
  one role in a row form one message (tool results first, as Anthropic requires).
* ``instructions`` and ``system`` / ``developer`` messages → ``system`` (text only).
* ``max_output_tokens`` → ``max_tokens`` (required by Anthropic: :data:`DEFAULT_MAX_TOKENS` when
  absent); ``temperature`` (0–1 on Anthropic), ``top_p``, ``stop`` → ``stop_sequences``;
  function ``tools`` → ``tools`` (``parameters`` → ``input_schema``, ``strict``),
  ``tool_choice`` ``auto``/``required``/``none``/a function → ``auto``/``any``/``none``/``tool``,
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``;
  ``text.format`` ``json_schema`` → ``output_config.format``; ``reasoning.effort`` → ``thinking``
  with a token budget (:data:`THINKING_BUDGET`); ``user`` / ``safety_identifier`` →
  ``metadata.user_id``. ``metadata`` stays with the gateway's Response object (Anthropic's
  ``metadata`` has no free-form keys).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import orjson

from ..errors import GatewayError
from . import events as ev
from .events import ProviderCall
from .items import data_url, invalid, unsupported

if TYPE_CHECKING:
    from .request import StoredFile

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096
# reasoning.effort → thinking.budget_tokens (≥ 1024 and below max_tokens: docs/provider-facts.md §13.2).
THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
REDACTED = "redacted:"

# Fields the bridge itself acts on (state, streaming, the Response object): accepted here.
GATEWAY_FIELDS = frozenset({"model", "input", "stream", "store", "previous_response_id", "metadata",
                            "stream_options", "background"})
DIALECT_FIELDS = frozenset({"instructions", "max_output_tokens", "temperature", "top_p", "stop", "tools",
                            "tool_choice", "parallel_tool_calls", "text", "reasoning", "user",
                            "safety_identifier", "include", "truncation", "service_tier"})

# Anthropic error types (in an SSE ``error`` event) → the Responses error codes (ResponseError.code).
_ERROR_CODES = {"rate_limit_error": "rate_limit_exceeded", "invalid_request_error": "invalid_prompt"}


class AnthropicDialect:
    def build_call(self, request: dict[str, Any], history: list[dict[str, Any]], model: str,
                   *, stream: bool) -> ProviderCall:
        _check_fields(request)
        body: dict[str, Any] = {"model": model}
        system: list[dict[str, Any]] = []
        if request.get("instructions") is not None:
            if not isinstance(request["instructions"], str):
                raise unsupported("instructions", PROVIDER, "only a string")
            system.append({"type": "text", "text": request["instructions"]})
        items = [(item, "previous_response_id") for item in history]
        items += [(item, f"input[{i}]") for i, item in enumerate(request.get("input") or [])]
        body["messages"] = _messages(items, system)
        if system:
            body["system"] = system
        _sampling(request, body)
        _tools(request, body)
        _output(request, body)
        if stream:
            body["stream"] = True
        return ProviderCall(stream=stream, body=body, path="/v1/messages")

    def decode_whole(self, answer: Any) -> list[ev.Event]:
        if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
            return [ev.Failure("server_error", "The provider answered with an unreadable message.")]
        out: list[ev.Event] = []
        for i, block in enumerate(answer["content"]):
            started = _block_start(i, block) if isinstance(block, dict) else ()
            if not started:
                return out + [_untranslatable(block)]
            out += started
            out += _block_whole(i, block)
            out.append(ev.ItemDone(i))
        return out + [_finish(answer.get("stop_reason"), answer.get("usage") or {})]

    def stream_decoder(self) -> "AnthropicStream":
        return AnthropicStream()

    def for_files(self, files: Mapping[str, "StoredFile"]) -> "AnthropicDialect":
        return self   # the request names Anthropic's own file ids (Provider.bridge_file_id)


class AnthropicStream:
    """Anthropic's SSE events (each ``data`` parsed as JSON) → neutral events."""

    def __init__(self) -> None:
        self._items: dict[int, int] = {}   # Anthropic block index → item number
        self._kinds: dict[int, str] = {}
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None

    def feed(self, frame: Any) -> Iterable[ev.Event]:
        if not isinstance(frame, dict):
            return ()
        kind = frame.get("type")
        if kind == "content_block_delta":
            item = self._items.get(frame.get("index", -1))
            delta = frame.get("delta") or {}
            if item is None or not isinstance(delta, dict):
                return ()
            dk = delta.get("type")
            if dk == "text_delta":
                return (ev.TextDelta(item, str(delta.get("text", ""))),)
            if dk == "input_json_delta":
                return (ev.ToolArgsDelta(item, str(delta.get("partial_json", ""))),)
            if dk == "thinking_delta":
                return (ev.ReasoningDelta(item, str(delta.get("thinking", ""))),)
            if dk == "signature_delta":
                return (ev.ReasoningDelta(item, "", signature=str(delta.get("signature", ""))),)
            return ()   # citations_delta: the bridge never turns citations on
        if kind == "content_block_start":
            block = frame.get("content_block")
            index = frame.get("index")
            if not isinstance(block, dict) or not isinstance(index, int):
                return ()
            item = len(self._items)
            self._items[index] = item
            started = _block_start(item, block)
            if not started:
                return (_untranslatable(block),)
            return started + _block_whole(item, block)
        if kind == "content_block_stop":
            item = self._items.get(frame.get("index", -1))
            return () if item is None else (ev.ItemDone(item),)
        if kind == "message_start":
            message = frame.get("message") or {}
            self._usage = dict(message.get("usage") or {}) if isinstance(message, dict) else {}
            return ()
        if kind == "message_delta":
            delta = frame.get("delta") or {}
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self._stop = delta["stop_reason"]
            usage = frame.get("usage")
            if isinstance(usage, dict):   # cumulative counts: the latest win
                self._usage.update({k: v for k, v in usage.items() if v is not None})
            return ()
        if kind == "message_stop":
            return (_finish(self._stop, self._usage),)
        if kind == "error":
            err = frame.get("error") or {}
            return (failure(err.get("type"), err.get("message")),)
        return ()   # ping, and event types added later

    def close(self) -> Iterable[ev.Event]:
        return ()   # only message_stop ends a turn: a stream that stops before it has failed


def _untranslatable(block: Any) -> ev.Failure:
    kind = block.get("type") if isinstance(block, dict) else None
    return ev.Failure("server_error", f"The provider sent a content block of type {str(kind)[:64]!r} "
                                      "the bridge cannot translate.")


def failure(kind: Any, message: Any) -> ev.Failure:
    return ev.Failure(_ERROR_CODES.get(str(kind), "server_error"),
                      f"The provider failed: {str(message or kind or 'unknown error')[:500]}")


def _block_start(item: int, block: dict[str, Any]) -> tuple[ev.Event, ...]:
    kind = block.get("type")
    if kind == "text":
        return (ev.TextStart(item),)
    if kind == "tool_use":
        return (ev.ToolCallStart(item, str(block.get("id", "")), str(block.get("name", ""))),)
    if kind in ("thinking", "redacted_thinking"):
        return (ev.ReasoningStart(item),)
    return ()


def _block_whole(item: int, block: dict[str, Any]) -> tuple[ev.Event, ...]:
    """What a block already carries when it starts (all of it, in a JSON answer)."""
    kind = block.get("type")
    if kind == "text" and block.get("text"):
        return (ev.TextDelta(item, str(block["text"])),)
    if kind == "tool_use" and block.get("input"):
        return (ev.ToolArgsDelta(item, orjson.dumps(block["input"]).decode()),)
    if kind == "thinking":
        out: list[ev.Event] = []
        if block.get("thinking"):
            out.append(ev.ReasoningDelta(item, str(block["thinking"])))
        if block.get("signature"):
            out.append(ev.ReasoningDelta(item, "", signature=str(block["signature"])))
        return tuple(out)
    if kind == "redacted_thinking":
        return (ev.ReasoningDelta(item, "", signature=REDACTED + str(block.get("data", ""))),)
    return ()


def _finish(stop: Any, usage: dict[str, Any]) -> ev.Finish:
    def n(key: str) -> int:
        v = usage.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0
    cached, written = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    u = ev.Usage(input_tokens=n("input_tokens") + cached + written, output_tokens=n("output_tokens"),
                 cached_tokens=cached, cache_write_tokens=written)
    if stop in ("max_tokens", "model_context_window_exceeded"):
        return ev.Finish("incomplete", u, "max_output_tokens")
    if stop == "refusal":
        return ev.Finish("incomplete", u, "content_filter")
    return ev.Finish("completed", u)


# --------------------------------------------------------------------------- request


def _check_fields(request: dict[str, Any]) -> None:
    for key, value in request.items():
        if value is None or key in GATEWAY_FIELDS or key in DIALECT_FIELDS:
            continue
        raise unsupported(key, PROVIDER)
    include = request.get("include") or []
    if not isinstance(include, list):
        raise invalid("include", "must be an array.")
    for i, value in enumerate(include):
        if value != "reasoning.encrypted_content":   # always included: it carries the thinking signature
            raise unsupported(f"include[{i}]", PROVIDER, f"{str(value)[:64]!r}")
    for key, allowed in (("truncation", "disabled"), ("service_tier", "auto")):
        if request.get(key) not in (None, allowed):
            raise unsupported(key, PROVIDER, f"only {allowed!r}")


def _messages(items: list[tuple[dict[str, Any], str]], system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": list(blocks)})

    for item, param in items:
        kind = item.get("type")
        if kind == "message":
            role = item["role"]
            if role in ("system", "developer"):
                for j, part in enumerate(item["content"]):
                    if part.get("type") != "input_text":
                        raise unsupported(f"{param}.content[{j}]", PROVIDER, "system messages take text only")
                    system.append({"type": "text", "text": str(part.get("text", ""))})
            elif role == "user":
                add("user", [_user_part(p, f"{param}.content[{j}]") for j, p in enumerate(item["content"])])
            else:
                # An empty text (a block Claude opened and left empty) cannot go back: Anthropic
                # refuses empty text blocks, and it carries nothing.
                blocks = [_assistant_part(p, f"{param}.content[{j}]") for j, p in enumerate(item["content"])]
                blocks = [b for b in blocks if b["text"]]
                if blocks:
                    add("assistant", blocks)
        elif kind == "function_call":
            try:
                args = orjson.loads(item["arguments"]) if item["arguments"] else {}
            except orjson.JSONDecodeError:
                raise invalid(f"{param}.arguments", "must be a JSON object.") from None
            if not isinstance(args, dict):
                raise invalid(f"{param}.arguments", "must be a JSON object.")
            add("assistant", [{"type": "tool_use", "id": item["call_id"], "name": item["name"], "input": args}])
        elif kind == "function_call_output":
            out = item["output"]
            content: Any = out if isinstance(out, str) else [
                _user_part(p, f"{param}.output[{j}]") for j, p in enumerate(out)]
            add("user", [{"type": "tool_result", "tool_use_id": item["call_id"], "content": content}])
        elif kind == "reasoning":
            add("assistant", [_thinking(item, param)])
        else:
            raise unsupported(f"{param}.type", PROVIDER, f"item type {str(kind)[:64]!r}")
    for m in messages:   # Anthropic: a user turn's tool results come before anything else in it
        if m["role"] == "user":
            m["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return messages


def _user_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "input_image":
        if part.get("detail") not in (None, "auto"):
            raise unsupported(f"{param}.detail", PROVIDER, "only 'auto'")
        if isinstance(part.get("file_id"), str):
            return {"type": "image", "source": {"type": "file", "file_id": part["file_id"]}}
        url = part.get("image_url")
        if not isinstance(url, str):
            raise invalid(f"{param}.image_url", "an image_url or a file_id is required.")
        return {"type": "image", "source": _source(url, f"{param}.image_url", IMAGE_TYPES)}
    if kind == "input_file":
        block: dict[str, Any] = {"type": "document"}
        if isinstance(part.get("file_id"), str):
            block["source"] = {"type": "file", "file_id": part["file_id"]}
        elif isinstance(part.get("file_url"), str):
            block["source"] = _source(part["file_url"], f"{param}.file_url", ("application/pdf",))
        elif isinstance(part.get("file_data"), str):
            data = part["file_data"]
            block["source"] = (_source(data, f"{param}.file_data", ("application/pdf",)) if data.startswith("data:")
                               else {"type": "base64", "media_type": "application/pdf", "data": data})
        else:
            raise invalid(param, "a file_id, file_url or file_data is required.")
        if isinstance(part.get("filename"), str):
            block["title"] = part["filename"]
        return block
    raise unsupported(f"{param}.type", PROVIDER, f"content type {str(kind)[:64]!r}")


def _source(url: str, param: str, media_types: tuple[str, ...]) -> dict[str, Any]:
    try:
        parsed = data_url(url)
    except ValueError as exc:
        raise invalid(param, f"{exc}.") from None
    if parsed is None:
        if not url.startswith(("https://", "http://")):
            raise invalid(param, "must be an http(s) URL or a base64 data URL.")
        return {"type": "url", "url": url}
    media, data = parsed
    if media not in media_types:
        raise unsupported(param, PROVIDER, f"media type {media[:64]!r}; accepted: {', '.join(media_types)}")
    return {"type": "base64", "media_type": media, "data": data}


def _assistant_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "output_text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    raise unsupported(f"{param}.type", PROVIDER, f"assistant content type {str(kind)[:64]!r}")


def _thinking(item: dict[str, Any], param: str) -> dict[str, Any]:
    sealed = item.get("encrypted_content")
    if not isinstance(sealed, str) or not sealed:
        raise unsupported(f"{param}.encrypted_content", PROVIDER,
                          "a reasoning item goes back to Anthropic only with the signature it came with")
    if sealed.startswith(REDACTED):
        return {"type": "redacted_thinking", "data": sealed[len(REDACTED):]}
    text = "".join(str(c.get("text", "")) for c in item.get("content") or [] if isinstance(c, dict))
    return {"type": "thinking", "thinking": text, "signature": sealed}


def _number(request: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(key, "must be a number.")
    if not low <= value <= high:
        raise unsupported(key, PROVIDER, f"Anthropic accepts {low:g} to {high:g}")
    return value


def _sampling(request: dict[str, Any], body: dict[str, Any]) -> None:
    max_out = request.get("max_output_tokens")
    if max_out is not None and (isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1):
        raise invalid("max_output_tokens", "must be a positive integer.")
    reasoning = request.get("reasoning") or {}
    if not isinstance(reasoning, dict):
        raise invalid("reasoning", "must be an object.")
    for key in reasoning:
        if key not in ("effort", "summary") and reasoning[key] is not None:
            raise unsupported(f"reasoning.{key}", PROVIDER)
    if reasoning.get("summary") not in (None, "auto"):
        raise unsupported("reasoning.summary", PROVIDER, "only 'auto': Anthropic returns its own thinking summary")
    effort = reasoning.get("effort")
    budget = 0
    if effort not in (None, "none"):
        if effort not in THINKING_BUDGET:
            raise invalid("reasoning.effort", f"must be one of none, {', '.join(THINKING_BUDGET)}.")
        budget = THINKING_BUDGET[effort]
        if max_out is not None:
            if max_out <= 1024:
                raise unsupported("max_output_tokens", PROVIDER,
                                  "with reasoning it must exceed 1024, Anthropic's smallest thinking budget")
            budget = min(budget, max_out - 1)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_out if max_out is not None else DEFAULT_MAX_TOKENS + budget
    t = _number(request, "temperature", 0, 1)
    if t is not None:
        body["temperature"] = t
    p = _number(request, "top_p", 0, 1)
    if p is not None:
        body["top_p"] = p
    stop = request.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise invalid("stop", "must be a string or an array of non-empty strings.")
        body["stop_sequences"] = stops
    user = request.get("safety_identifier") or request.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise invalid("user", "must be a string.")
        body["metadata"] = {"user_id": user}


def _tools(request: dict[str, Any], body: dict[str, Any]) -> None:
    tools = request.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools", "must be an array.")
        out = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise unsupported(f"tools[{i}].type", PROVIDER, f"only function tools, not {str(kind)[:64]!r}")
            if not isinstance(tool.get("name"), str):
                raise invalid(f"tools[{i}].name", "must be a string.")
            spec: dict[str, Any] = {"name": tool["name"],
                                    "input_schema": tool.get("parameters") or {"type": "object", "properties": {}}}
            if isinstance(tool.get("description"), str):
                spec["description"] = tool["description"]
            if tool.get("strict") is True:
                spec["strict"] = True
            out.append(spec)
        if out:
            body["tools"] = out
    choice = request.get("tool_choice")
    parallel = request.get("parallel_tool_calls")
    tc: dict[str, Any] | None = None
    if choice is None or choice == "auto":
        tc = {"type": "auto"} if parallel is False else None
    elif choice == "required":
        tc = {"type": "any"}
    elif choice == "none":
        tc = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        tc = {"type": "tool", "name": choice["name"]}
    else:
        raise unsupported("tool_choice", PROVIDER, "auto, required, none or a function")
    if tc is not None:
        if parallel is False and tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
        body["tool_choice"] = tc


def _output(request: dict[str, Any], body: dict[str, Any]) -> None:
    text = request.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise invalid("text", "must be an object.")
    for key in text:
        if key != "format" and text[key] is not None:
            raise unsupported(f"text.{key}", PROVIDER)
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        raise unsupported("text.format.type", PROVIDER, f"only 'text' and 'json_schema', not {str(kind)[:64]!r}")
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("text.format.schema", "must be a JSON schema object.")
    body["output_config"] = {"format": {"type": "json_schema", "schema": fmt["schema"]}}


def gateway_error_for(err: GatewayError) -> GatewayError:
    """An error answer of ``/v1/messages``, from the provider's Files-API mapping: a 404 is a
    model (or a file source) Anthropic does not know and a 413 a request too large, not the
    ``file_id`` / upload that mapping names. Status and message stay."""
    if err.status == 404:
        return GatewayError(404, err.message, type="invalid_request_error", code="not_found")
    if err.status == 413:
        return GatewayError(413, err.message, type="invalid_request_error", code="request_too_large")
    return err
