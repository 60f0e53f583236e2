"""Object ids inside a JSON request body (sans-IO): which ids does this body make the upstream
dereference, and where do they sit?

A path id (``/files/{id}``) is checked against the store before anything goes upstream; an id
inside a body (``previous_response_id``, an ``input_file``'s ``file_id``, a ``file_search``
tool's ``vector_store_ids``…) makes the upstream read the same objects, so it gets the same
check. This module only *finds* them: :func:`body_references` returns one
:class:`Reference` per id with its JSON path (``input[2].content[0].file_id``) for the error,
and refuses (400, naming that path) an id that is not a string. The tenancy check itself is
the ``provider_route`` filter's.

Two kinds of rules, after openai-python's ``ResponseCreateParams`` types (which ids are
provider-scoped: docs/provider-facts.md §3.3):

* top-level fields, per operation (:data:`TOP_LEVEL`): a string id, or an object whose ``id``
  is the id (``conversation: {"id"}``, ``prompt: {"id", "variables"}``);
* keys that carry ids wherever they appear in the rest of the body (:data:`NESTED_KEYS`:
  ``file_id``, ``file_ids``, ``vector_store_ids``, ``container_id``, a string ``container``,
  ``skill_id``, ``tunnel_id``, ``comparison_response_id``) and item references (an input
  item of ``type: "item_reference"``, or an item with only an ``id``). Matching keys anywhere
  means a content type added later that carries ``file_id`` is checked without a change here.

Free-form subtrees are not searched (:data:`FREE_FORM`: ``metadata``, JSON schemas, MCP
``headers``), nor descriptions of past output that the upstream does not dereference
(``annotations``, ``file_search_call`` ``results``); under a prompt's ``variables`` the keys
are the client's names, so only the values are searched. Call ids (``call_id``,
``approval_request_id``) are scoped to the response chain that ``previous_response_id``
names, which is itself checked, so they are not references.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .errors import bad_request

# Kinds the gateway records (a store lookup decides); every other kind is never recorded, so
# its ids are "unseen" ids.
RECORDED_KINDS = frozenset({"file", "response"})

# operation -> {top-level field: kind}. A body-carrying operation adds its row here.
TOP_LEVEL: dict[str, Mapping[str, str]] = {
    "responses.create": {"previous_response_id": "response", "conversation": "conversation", "prompt": "prompt"},
    "batches.create": {"input_file_id": "file"},
}

# key -> (kind, holds a list of ids)
NESTED_KEYS: dict[str, tuple[str, bool]] = {
    "file_id": ("file", False),
    "file_ids": ("file", True),
    "vector_store_ids": ("vector_store", True),
    "container_id": ("container", False),
    "skill_id": ("skill", False),
    "tunnel_id": ("mcp_tunnel", False),
    "comparison_response_id": ("response", False),
}

FREE_FORM = frozenset({"metadata", "parameters", "input_schema", "schema", "headers", "annotations", "results"})
USER_NAMED = frozenset({"variables"})  # a map whose keys the client chose: search the values only


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str    # "file", "response", "conversation", "vector_store", "container", "prompt", "item", ...
    id: str
    param: str   # JSON path of the id in the body, for the error's ``param``


def body_references(operation: str, body: Any) -> list[Reference]:
    """Every object id ``body`` carries for ``operation``, top-level fields first (in the
    table's order), then nested ones in document order. Raises a 400 for an id that is not a
    string (or a list of ids that is not a list of strings)."""
    top = TOP_LEVEL.get(operation)
    if top is None or not isinstance(body, dict):
        return []
    refs: list[Reference] = []
    for field, kind in top.items():
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, dict):
            refs.append(Reference(kind, _id_string(value.get("id"), f"{field}.id"), f"{field}.id"))
            refs.extend(_walk({k: v for k, v in value.items() if k != "id"}, field))
        else:
            refs.append(Reference(kind, _id_string(value, field), field))
    for key, value in body.items():
        # only an object or an array can hold an id below the top level ("model": "…" cannot)
        if (type(value) is dict or type(value) is list) and key not in top and key not in FREE_FORM:
            refs.extend(_walk(value, key, items=key == "input"))
    return refs


def _id_string(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"Invalid type for '{param}': expected an id (a non-empty string).", param=param,
                          code="invalid_type")
    return value


def _walk(node: Any, path: str, *, items: bool = False) -> Iterator[Reference]:
    """Nested references under ``node`` (at JSON path ``path``); ``items``: node is an input
    item list, whose elements may be item references."""
    if isinstance(node, list):
        for i, child in enumerate(node):
            here = f"{path}[{i}]"
            if items and isinstance(child, dict) and _is_item_reference(child):
                yield Reference("item", _id_string(child.get("id"), f"{here}.id"), f"{here}.id")
            else:
                yield from _walk(child, here)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = f"{path}.{key}"
        if key in FREE_FORM or value is None:
            continue
        rule = NESTED_KEYS.get(key)
        if rule is not None:
            kind, many = rule
            if many:
                if not isinstance(value, list):
                    raise bad_request(f"Invalid type for '{here}': expected an array of ids.", param=here,
                                      code="invalid_type")
                for i, one in enumerate(value):
                    yield Reference(kind, _id_string(one, f"{here}[{i}]"), f"{here}[{i}]")
            else:
                yield Reference(kind, _id_string(value, here), here)
        elif key == "container" and isinstance(value, str):
            yield Reference("container", _id_string(value, here), here)  # code_interpreter by id
        elif key in USER_NAMED and isinstance(value, dict):
            for name, v in value.items():
                yield from _walk(v, f"{here}.{name}")
        else:
            yield from _walk(value, here)


def _is_item_reference(item: dict[str, Any]) -> bool:
    # ItemReference: {"id", "type": "item_reference"}; its type is optional, so an item with
    # nothing but an id is one too.
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and set(item) <= {"id", "type"})
