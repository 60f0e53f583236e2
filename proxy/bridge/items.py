"""The Responses request's ``input`` in one canonical form, for every dialect and for storage.

A client may send ``input`` as a string, messages with string content, messages without
``type``; OpenAI stores (and ``input_items.list`` returns) each as a full item. :func:`canonical_input`
gives that form (without ids: the state layer mints them), so a dialect reads one shape, the
history of earlier turns included:

* ``{"type": "message", "role": "user"|"system"|"developer", "content": [input parts]}``;
* ``{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text",
  "annotations": []} | {"type": "refusal", …}]}``;
* ``function_call`` (``call_id``, ``name``, ``arguments`` a string), ``function_call_output``
  (``call_id``, ``output`` a string or input parts), ``reasoning`` — as sent;
* any other item type is kept as sent, for the dialect to refuse by name.

Shape errors are 400s naming the field (``input[2].content``), before anything goes upstream.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Iterator

from ..errors import GatewayError, bad_request

ROLES = ("user", "assistant", "system", "developer")


def invalid(param: str, message: str) -> GatewayError:
    return bad_request(f"{param}: {message}", param=param, code="invalid_value")


def unsupported(param: str, provider: str, what: str | None = None) -> GatewayError:
    """The one 400 for what a provider cannot do (never a silent drop)."""
    detail = f" ({what})" if what else ""
    return bad_request(f"{param} is not supported on {provider} providers{detail}.", param=param,
                       code="unsupported_parameter")


def canonical_input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("input", "must be a string or an array of items.")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(param, "must be an object.")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message(item, param)
    if kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise invalid(f"{param}.{key}", "must be a string.")
        return {**item, "type": "function_call"}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise invalid(f"{param}.call_id", "must be a string.")
        out = item.get("output")
        if not isinstance(out, (str, list)):
            raise invalid(f"{param}.output", "must be a string or an array of content parts.")
        return dict(item)
    if not isinstance(kind, str):
        raise invalid(f"{param}.type", "is required.")
    return dict(item)


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise invalid(f"{param}.role", f"must be one of {', '.join(ROLES)}.")
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        parts = [{"type": text_type, "text": content}]
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid(f"{param}.content[{j}]", "must be an object with a type.")
            if role == "assistant" and part["type"] in ("input_text", "output_text"):
                part = {**part, "type": "output_text"}
            parts.append(dict(part))
    else:
        raise invalid(f"{param}.content", "must be a string or an array of content parts.")
    if role == "assistant":
        for part in parts:
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
    out = {k: v for k, v in item.items() if k not in ("content",)}
    out.update(type="message", role=role, content=parts)
    return out


def parts_of(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The content parts of an item that can carry files (messages, tool outputs)."""
    content = item.get("content") if item.get("type") == "message" else item.get("output")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                yield part


def map_file_ids(items: list[dict[str, Any]], resolve: Callable[[str], str]) -> list[dict[str, Any]]:
    """A copy of ``items`` whose ``input_file`` / ``input_image`` ``file_id`` s (the gateway's ids)
    are replaced by ``resolve(id)`` (the provider's own)."""
    out = []
    for item in items:
        if not any(isinstance(p.get("file_id"), str) for p in parts_of(item)):
            out.append(item)
            continue
        key = "content" if item.get("type") == "message" else "output"
        out.append({**item, key: [{**p, "file_id": resolve(p["file_id"])} if isinstance(p.get("file_id"), str)
                                  else p for p in item[key]]})
    return out


def data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` → ``(media type, base64 data)``; None for other URLs."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    media, _, encoding = head.partition(";")
    if not sep or encoding != "base64":
        raise ValueError("only base64 data URLs are supported")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data is not base64") from None
    return media.lower(), data
