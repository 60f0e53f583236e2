"""One codec for a batch row, shared by the SQLite and PostgreSQL stores (the same columns,
JSON columns as text, in this order)."""
from __future__ import annotations

from typing import Any

import orjson

from .base import TERMINAL_BATCH_STATUSES, BatchRecord

BATCH_COLS = ("id, tenant, provider, upstream_id, input_file_id, endpoint, completion_window, metadata, status, "
              "job, output_file_id, error_file_id, created_at, timestamps, request_counts, errors, "
              "output_expires_after, polled_at")
# What update_batch writes (the rest never changes after create), and the condition it writes
# under: a batch that has ended is final (the statuses are constants, not client input).
BATCH_MUTABLE = ("status", "job", "output_file_id", "error_file_id", "timestamps", "request_counts", "errors")
NOT_ENDED = "status NOT IN (" + ", ".join(f"'{s}'" for s in TERMINAL_BATCH_STATUSES) + ")"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def batch_args(rec: BatchRecord) -> tuple[Any, ...]:
    """The row of ``rec``, in :data:`BATCH_COLS` order."""
    return (rec.id, rec.tenant, rec.provider, rec.upstream_id, rec.input_file_id, rec.endpoint,
            rec.completion_window, _json(rec.metadata), rec.status, _json(rec.job), rec.output_file_id,
            rec.error_file_id, rec.created_at, _json(rec.timestamps), _json(rec.request_counts),
            _json(rec.errors), rec.output_expires_after, rec.polled_at)


def mutable_args(rec: BatchRecord) -> tuple[Any, ...]:
    """The values of :data:`BATCH_MUTABLE`, in order."""
    return (rec.status, _json(rec.job), rec.output_file_id, rec.error_file_id, _json(rec.timestamps),
            _json(rec.request_counts), _json(rec.errors))


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def row_to_batch(row: Any) -> BatchRecord:
    """A row selected as :data:`BATCH_COLS` (a tuple or an asyncpg Record: read by position)."""
    return BatchRecord(
        id=row[0], tenant=row[1], provider=row[2], upstream_id=row[3], input_file_id=row[4], endpoint=row[5],
        completion_window=row[6], metadata=_load(row[7]), status=row[8], job=_load(row[9]) or {},
        output_file_id=row[10], error_file_id=row[11], created_at=row[12], timestamps=_load(row[13]) or {},
        request_counts=_load(row[14]) or {}, errors=_load(row[15]), output_expires_after=row[16],
        polled_at=row[17],
    )
