"""SQLite store (aiosqlite): the embedded default.

Records are immutable once written (only deleted), so lookups by id are served from a bounded
in-process cache; a delete evicts. Several worker processes may share one database file (WAL
mode); a record deleted by another worker can stay cached here, so callers that serve bytes
re-validate against the backend (the upstream answers 404, the local file is gone).
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import OrderedDict
from typing import Any

import aiosqlite
import orjson

from .base import FileRecord, QuotaExceeded, ResponseRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_id TEXT,
    location TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_tenant ON files (tenant, seq);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT,
    created_at INTEGER NOT NULL
);
"""

_BUSY_TIMEOUT_MS = 10_000

_FILE_COLS = "id, tenant, provider, upstream_id, location, filename, purpose, bytes, created_at, expires_at, status"


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(
        id=row[0], tenant=row[1], provider=row[2], upstream_id=row[3], location=orjson.loads(row[4]),
        filename=row[5], purpose=row[6], bytes=row[7], created_at=row[8], expires_at=row[9], status=row[10],
    )


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class SQLiteStore:
    def __init__(self, path: str, *, cache_size: int = 50_000) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._files = _LRU(cache_size)
        self._responses = _LRU(cache_size)
        # One connection serves every coroutine: a transaction must not interleave with
        # another coroutine's statements.
        self._write_lock = asyncio.Lock()
        self._pending_responses: dict[str, ResponseRecord] = {}
        self._flusher: asyncio.Future | None = None
        self.flush_delay = 0.005

    @classmethod
    def from_url(cls, url: str) -> "SQLiteStore":
        # sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:
        path = url[len("sqlite://"):]
        if path.startswith("/"):
            path = path[1:]
        return cls(path or ":memory:")

    async def open(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        # Workers starting together on a new database contend for the locks that switching to
        # WAL and creating the schema take, and must wait, not fail: busy_timeout first, and
        # the switch to WAL retried, since SQLite answers it "locked" without waiting.
        await self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                await self._db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store not opened"
        return self._db

    # -- files ---------------------------------------------------------------------------

    async def add_file(self, rec: FileRecord, *, quota: int | None = None) -> None:
        async with self._write_lock:
            await self._add_file_locked(rec, quota)
        self._files.put(rec.id, rec)

    async def _add_file_locked(self, rec: FileRecord, quota: int | None) -> None:
        db = self.db
        # BEGIN IMMEDIATE takes the write lock first, so the usage we read cannot change
        # before our insert, even with several worker processes on the same file.
        await db.execute("BEGIN IMMEDIATE")
        try:
            if quota is not None:
                async with db.execute("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?", (rec.tenant,)) as cur:
                    (used,) = await cur.fetchone()
                if used + rec.bytes > quota:
                    raise QuotaExceeded(used, rec.bytes, quota)
            await db.execute(
                f"INSERT INTO files ({_FILE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.id, rec.tenant, rec.provider, rec.upstream_id, orjson.dumps(rec.location).decode(),
                 rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.expires_at, rec.status),
            )
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def get_file(self, file_id: str) -> FileRecord | None:
        rec = self._files.get(file_id)
        if rec is not None:
            return rec
        async with self.db.execute(f"SELECT {_FILE_COLS} FROM files WHERE id = ?", (file_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        rec = _row_to_file(row)
        self._files.put(file_id, rec)
        return rec

    async def list_files(
        self, tenant: str, *, purpose: str | None, limit: int, order: str, after: str | None,
        provider: str | None = None,
    ) -> tuple[list[FileRecord], bool]:
        # Expired files are gone for clients even before the sweeper removes them.
        where, args = ["tenant = ?", "(expires_at IS NULL OR expires_at > ?)"], [tenant, int(time.time())]
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if provider:
            where.append("provider = ?")
            args.append(provider)
        if after:
            # The cursor is a file id of the same tenant; an unknown cursor yields an empty page
            # (never an error that would confirm or deny another tenant's id).
            where.append(f"seq {'>' if order == 'asc' else '<'} COALESCE((SELECT seq FROM files WHERE id = ? AND tenant = ?), {'1e18' if order == 'asc' else '-1'})")
            args += [after, tenant]
        sql = (f"SELECT {_FILE_COLS} FROM files WHERE {' AND '.join(where)} "
               f"ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT ?")
        args.append(limit + 1)
        async with self.db.execute(sql, args) as cur:
            rows = await cur.fetchall()
        recs = [_row_to_file(r) for r in rows[:limit]]
        return recs, len(rows) > limit

    async def expired_files(self, now: int, limit: int = 500) -> list[FileRecord]:
        async with self.db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        ) as cur:
            return [_row_to_file(r) for r in await cur.fetchall()]

    async def delete_file(self, file_id: str) -> bool:
        self._files.pop(file_id, None)
        async with self._write_lock:
            cur = await self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return cur.rowcount > 0

    async def tenant_usage(self, tenant: str) -> int:
        async with self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?", (tenant,)) as cur:
            (used,) = await cur.fetchone()
        return int(used)

    # -- responses -----------------------------------------------------------------------

    async def add_response(self, rec: ResponseRecord) -> None:
        """Write-behind: the record is visible in this process at once (cache) and reaches the
        database in the next batch, a few milliseconds later, together with its neighbours —
        one transaction for many responses instead of one per request."""
        self._responses.put(rec.id, rec)
        self._pending_responses[rec.id] = rec
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_responses())

    async def _flush_responses(self) -> None:
        await asyncio.sleep(self.flush_delay)
        while self._pending_responses:
            batch = list(self._pending_responses.values())
            self._pending_responses.clear()
            async with self._write_lock:
                await self.db.execute("BEGIN")
                try:
                    await self.db.executemany(
                        "INSERT OR REPLACE INTO responses (id, tenant, provider, model, created_at) VALUES (?,?,?,?,?)",
                        [(r.id, r.tenant, r.provider, r.model, r.created_at) for r in batch],
                    )
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    raise
                await self.db.execute("COMMIT")

    async def get_response(self, response_id: str) -> ResponseRecord | None:
        rec = self._responses.get(response_id)
        if rec is not None:
            return rec
        async with self.db.execute(
            "SELECT id, tenant, provider, model, created_at FROM responses WHERE id = ?", (response_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        rec = ResponseRecord(*row)
        self._responses.put(response_id, rec)
        return rec

    async def delete_response(self, response_id: str) -> bool:
        self._responses.pop(response_id, None)
        if self._pending_responses.pop(response_id, None) is not None:
            return True
        async with self._write_lock:
            cur = await self.db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return cur.rowcount > 0
