"""access_log: one JSON line per exchange on the ``sluicegate.access`` logger.

Never logs credentials or bodies: method, path, operation, status, tenant, provider, bytes,
duration, time to first byte, object id, model, token usage, error code. The line is built with
one ``orjson.dumps`` and handed finished to the writer :func:`proxy.logs.setup_logging` installed
(``proxy.logs.AccessLineHandler``: queued, written off the event loop by its own thread), so it
is valid JSON whatever the client sent; values that come from the client (method, path, id,
model) are cut to a bounded length and named in ``truncated`` when cut. Without that writer (an
embedding with its own logging) the line goes to the ``sluicegate.access`` logger instead.
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from proxy.logs import ACCESS_LOGGER, access_writer, utc_timestamp

from .base import Filter

if TYPE_CHECKING:
    from proxy.exchange import Exchange

log = logging.getLogger(ACCESS_LOGGER)

# Longest value logged for each client-derived field, in characters.
LIMITS = {"method": 32, "path": 2048, "id": 256, "model": 256}
_METHOD_MAX, _PATH_MAX, _ID_MAX, _MODEL_MAX = LIMITS["method"], LIMITS["path"], LIMITS["id"], LIMITS["model"]


def _clip(fields: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        fields[name] = None
        return
    if not isinstance(value, str):
        value = str(value)  # e.g. a "model" that is not a string: the gateway answers 400 anyway
    limit = LIMITS[name]
    if len(value) > limit:
        value = value[:limit]
        fields.setdefault("truncated", []).append(name)
    fields[name] = value


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


# Characters JSON allows raw in a string that some line readers (Python's ``splitlines``,
# older JavaScript, log shippers) still take as a line break: NEL, LINE and PARAGRAPH SEPARATOR.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def _dumps(fields: dict[str, Any]) -> bytes:
    try:
        line = orjson.dumps(fields)
    except orjson.JSONEncodeError:
        # A lone surrogate is not UTF-8: keep it visible as an escape.
        line = orjson.dumps({k: v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
                             for k, v in fields.items()})
    if not line.isascii():
        for raw, escaped in _LINE_BREAKS:
            line = line.replace(raw, escaped)
    return line


class AccessLogFilter(Filter):
    name = "access_log"

    def __init__(self) -> None:
        self.pid = os.getpid()  # built in the worker (after the fork): tells workers apart

    async def on_exchange_end(self, ex: "Exchange") -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        started = ex.started
        end = ex.ended or time.perf_counter()
        first_byte = ex.first_byte_at
        req = ex.request
        tenant, provider, usage = ex.tenant, ex.provider, ex.usage
        # One dict literal (the fields in the line's order), then the rare fix-ups.
        fields: dict[str, Any] = {
            "time": utc_timestamp(), "pid": self.pid, "method": req.method, "path": req.path,
            "op": ex.operation, "status": ex.status, "tenant": tenant.name if tenant else None,
            "provider": provider.name if provider else None, "upload_bytes": ex.file_bytes,
            "duration_ms": int((end - started) * 100_000 + 0.5) / 100,  # ms to 2 places (a third of round's cost)
            "ttfb_ms": int((first_byte - started) * 100_000 + 0.5) / 100 if first_byte else None,
            "id": ex.response_id or ex.object_id, "model": ex.model,
            "input_tokens": _int_or_none(usage.get("input_tokens")) if usage else None,
            "output_tokens": _int_or_none(usage.get("output_tokens")) if usage else None,
            "error": ex.error_code,
        }
        # Client-derived values: a string, at most LIMITS[name] long (one test for the usual
        # case, where none needs cutting; aiohttp's method and path are always strings).
        oid, model = fields["id"], fields["model"]
        if (len(fields["method"]) > _METHOD_MAX or len(fields["path"]) > _PATH_MAX
                or (oid is not None and (type(oid) is not str or len(oid) > _ID_MAX))
                or (model is not None and (type(model) is not str or len(model) > _MODEL_MAX))):
            for name, limit in LIMITS.items():
                value = fields[name]
                if value is not None and (type(value) is not str or len(value) > limit):
                    _clip(fields, name, value)
        writer = access_writer()
        if writer is not None:
            writer.put(_dumps(fields))  # queued: no record, no formatting, no write here
        else:
            log.info(_dumps(fields))
