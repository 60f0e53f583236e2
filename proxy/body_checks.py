"""Types of the JSON body fields the gateway itself acts on (sans-IO), checked before routing.

The gateway decides on a few fields of a body it otherwise forwards untouched: ``stream``
picks SSE or JSON, ``model`` (required, a non-empty string) may carry a provider prefix, ``input`` and the ids in the body are searched for references
(:mod:`proxy.references`, which checks the id fields' types).
A wrong type there must be the client's 400 naming the field, not a 502 when the upstream
answers in a shape the gateway did not ask for (``"stream": "false"`` is truthy upstream).
Every other field is the upstream's to judge.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import bad_request


def _boolean(v: Any) -> bool:
    return isinstance(v, bool)


def _string(v: Any) -> bool:
    return isinstance(v, str)


def _input(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(item, dict) for item in v))


# field -> (test, what it must be); null (absent) passes, as for OpenAI's optional fields.
RESPONSES_CREATE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stream": (_boolean, "a boolean"),
    "background": (_boolean, "a boolean"),
    "store": (_boolean, "a boolean"),
    "previous_response_id": (_string, "a string"),
    "input": (_input, "a string or an array of objects"),
}

CHECKS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {"responses.create": RESPONSES_CREATE}


# Fields an operation cannot go without: each must be a non-empty string.
REQUIRED: dict[str, tuple[str, ...]] = {"responses.create": ("model",),
                                        "batches.create": ("input_file_id", "endpoint", "completion_window")}


def check_body(operation: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first required field missing from ``body``, else the first field
    the gateway acts on that has a wrong type."""
    for field in REQUIRED.get(operation, ()):
        value = body.get(field)
        if not isinstance(value, str) or not value:
            raise bad_request(f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter")
    for field, (test, expected) in CHECKS.get(operation, {}).items():
        value = body.get(field)
        if value is not None and not test(value):
            raise bad_request(f"Invalid type for '{field}': expected {expected}, got {_json_type(value)}.",
                              param=field, code="invalid_type")


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array" if all(isinstance(x, dict) for x in v) else "an array with a non-object item"
    return "an object"
