"""Store backends. ``open_store(url)`` picks one by URL scheme."""
from __future__ import annotations

from .base import FileRecord, QuotaExceeded, ResponseRecord, Store


def open_store(url: str) -> Store:
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    raise ValueError(f"unsupported store url scheme: {url.split(':', 1)[0]!r}")


__all__ = ["FileRecord", "ResponseRecord", "QuotaExceeded", "Store", "open_store"]
