"""(method, path) → operation.

Paths are matched under ``/v1`` and under the configured ``base_path`` (so a client can use
``base_url=https://host/api/llm``). Matching is a split on ``/``, no regular expressions.
"""
from __future__ import annotations

from .errors import GatewayError

# (first segment, number of segments after it, trailing segment or None, method) -> operation
_TABLE: dict[tuple[str, int, str | None, str], str] = {
    ("files", 0, None, "POST"): "files.create",
    ("files", 0, None, "GET"): "files.list",
    ("files", 1, None, "GET"): "files.retrieve",
    ("files", 1, None, "DELETE"): "files.delete",
    ("files", 2, "content", "GET"): "files.content",
    ("responses", 0, None, "POST"): "responses.create",
    ("responses", 1, None, "GET"): "responses.retrieve",
    ("responses", 1, None, "DELETE"): "responses.delete",
    ("responses", 2, "cancel", "POST"): "responses.cancel",
    ("responses", 2, "input_items", "GET"): "responses.input_items",
    ("batches", 0, None, "POST"): "batches.create",
    ("batches", 0, None, "GET"): "batches.list",
    ("batches", 1, None, "GET"): "batches.retrieve",
    ("batches", 2, "cancel", "POST"): "batches.cancel",
    ("uploads", 0, None, "POST"): "uploads.create",
    ("uploads", 2, "parts", "POST"): "uploads.parts",
    ("uploads", 2, "complete", "POST"): "uploads.complete",
    ("uploads", 2, "cancel", "POST"): "uploads.cancel",
}

ADMIN_PATHS = {"/healthz": "admin.healthz", "/readyz": "admin.readyz", "/metrics": "admin.metrics",
               "/openapi.json": "admin.openapi"}

_RESOURCES = frozenset(seg for (seg, _n, _tail, _method) in _TABLE)
_ALLOWED: dict[tuple[str, int, str | None], list[str]] = {}
for (_seg, _n, _tail, _method) in _TABLE:
    _ALLOWED.setdefault((_seg, _n, _tail), []).append(_method)


class Router:
    def __init__(self, base_paths: list[str]) -> None:
        # Longest prefix first so "/api/llm/v1" is not eaten by "/api/llm".
        # "/" as a base path means the API sits at the root: prefix "".
        self.prefixes = sorted({p.rstrip("/") for p in base_paths}, key=len, reverse=True)
        # The answers for paths without an id ("POST /v1/responses"): a finite set (each
        # resource's collection under each prefix, with or without its trailing slash), kept as
        # they are found; a hit is one dict lookup instead of the split (issue 10).
        self._collections: dict[tuple[str, str], tuple[str, None]] = {}

    def match(self, method: str, path: str) -> tuple[str, str | None]:
        """Return ``(operation, id)``; raise a 404/405 GatewayError when nothing matches."""
        known = self._collections.get((method, path))
        if known is not None:
            return known
        admin = ADMIN_PATHS.get(path)
        if admin is not None:
            return admin, None
        for prefix in self.prefixes:
            if not (path.startswith(prefix) and path[len(prefix):len(prefix) + 1] == "/"):
                continue
            parts = path[len(prefix) + 1:].split("/")
            if parts[0] not in _RESOURCES:
                continue
            n = len(parts) - 1
            if parts[-1] == "" and n:  # tolerate one trailing slash
                parts.pop()
                n -= 1
            if n and not parts[1]:
                continue
            tail = parts[2] if n == 2 else None
            key = (parts[0], n, tail)
            op = _TABLE.get((parts[0], n, tail, method))
            if op is not None:
                if n:
                    return op, parts[1]
                found = self._collections[(method, path)] = (op, None)
                return found
            allowed = _ALLOWED.get(key)
            if allowed:
                methods = ", ".join(sorted(allowed))
                # RFC 9110: a 405 must say what is allowed
                raise GatewayError(405, f"Method {method} is not allowed on {path}; use {methods}.",
                                   code="method_not_allowed", headers={"Allow": methods})
        raise GatewayError(404, f"Unknown path: {method} {path}", code="unknown_url")
