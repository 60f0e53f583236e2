"""Store backends. ``open_store(url)`` picks one by URL scheme."""
from __future__ import annotations

from .base import FileRecord, QuotaExceeded, ResponseRecord, Store


PG_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, *, pool_min: int = 1, pool_max: int = 10, statement_timeout: float = 10.0) -> Store:
    """The pool settings apply to PostgreSQL only (SQLite has one connection per process)."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(PG_SCHEMES):
        from .postgres import PostgresStore

        return PostgresStore.from_url(url, pool_min=pool_min, pool_max=pool_max,
                                      statement_timeout=statement_timeout)
    raise ValueError(f"unsupported store url scheme: {url.split(':', 1)[0]!r}")


__all__ = ["FileRecord", "ResponseRecord", "QuotaExceeded", "Store", "open_store"]
