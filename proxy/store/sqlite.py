"""SQLite store (aiosqlite): the embedded default.

Records are immutable once written (only deleted), so lookups by id are served from a bounded
in-process cache; a delete evicts. Several worker processes may share one database file (WAL
mode), so the cache is trusted only while the database is unchanged: every lookup first reads
``PRAGMA data_version`` on a small synchronous connection (microseconds, no thread hop), and
any commit by another connection — another worker's delete included — empties the cache.
A record another worker deleted is therefore never served as live.

Deleting is a claim: ``DELETE … RETURNING`` removes the row and hands it to exactly one caller
(concurrent deletes of one id, in any worker, get None); :meth:`restore_file` puts it back if
its bytes could not be removed. The same statements work on PostgreSQL.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

import aiosqlite
import orjson

from . import migrations
from .base import FileRecord, PartRecord, QuotaExceeded, Reservation, ResponseRecord, UploadRecord
from .group_commit import GroupCommit

# A tenant's stored plus reserved bytes, leaving one reservation out (params: tenant, tenant, id).
_USED = ("SELECT (SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?)"
         " + (SELECT COALESCE(SUM(bytes), 0) FROM reservations WHERE tenant = ? AND id IS NOT ?)")
_RESERVATION_COLS = "id, tenant, owner, provider, bytes, location, started_at, heartbeat"
_BUSY_TIMEOUT_MS = 10_000

_FILE_COLS = "id, tenant, provider, upstream_id, location, filename, purpose, bytes, created_at, expires_at, status"


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(
        id=row[0], tenant=row[1], provider=row[2], upstream_id=row[3], location=orjson.loads(row[4]),
        filename=row[5], purpose=row[6], bytes=row[7], created_at=row[8], expires_at=row[9], status=row[10],
    )


_UPLOAD_COLS = ("id, tenant, provider, upstream_id, filename, purpose, bytes, mime_type, created_at, expires_at,"
                " status, reservation, file_id, file_expires_after")
_PART_COLS = "id, upload_id, bytes, created_at, location"


def row_to_upload(row: Any) -> UploadRecord:
    """An ``uploads`` row (columns in ``_UPLOAD_COLS`` order; PostgreSQL's records too)."""
    return UploadRecord(
        id=row[0], tenant=row[1], provider=row[2], upstream_id=row[3], filename=row[4], purpose=row[5],
        bytes=row[6], mime_type=row[7], created_at=row[8], expires_at=row[9], status=row[10],
        reservation=row[11], file_id=row[12], file_expires_after=row[13],
    )


def upload_args(rec: UploadRecord) -> tuple[Any, ...]:
    return (rec.id, rec.tenant, rec.provider, rec.upstream_id, rec.filename, rec.purpose, rec.bytes,
            rec.mime_type, rec.created_at, rec.expires_at, rec.status, rec.reservation, rec.file_id,
            rec.file_expires_after)


def row_to_part(row: Any) -> PartRecord:
    return PartRecord(id=row[0], upload_id=row[1], bytes=row[2], created_at=row[3], location=orjson.loads(row[4]))


_V = TypeVar("_V")  # what a cache holds


class _LRU(OrderedDict[str, _V]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class SQLiteStore:
    def __init__(self, path: str, *, cache_size: int = 50_000) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._files: _LRU[FileRecord] = _LRU(cache_size)
        self._responses: _LRU[ResponseRecord] = _LRU(cache_size)
        # One connection serves every coroutine: a transaction must not interleave with
        # another coroutine's statements.
        self._write_lock = asyncio.Lock()
        self._commits = GroupCommit(self._insert_responses)
        # Reads only PRAGMA data_version, to know when another connection has committed.
        self._probe: sqlite3.Connection | None = None
        self._data_version: int | None = None

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
        await self._migrate()
        if self.path != ":memory:":  # an in-memory database has no other connection
            self._probe = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.1)

    async def _migrate(self) -> None:
        """Bring the schema to :data:`migrations.LATEST` in one write transaction (BEGIN
        IMMEDIATE: a worker starting at the same time waits, then finds it current)."""
        async with self._immediate() as db:
            await db.execute(migrations.CREATE_VERSION_TABLE)
            async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            assert row is not None  # an aggregate always yields one row
            steps = migrations.pending(row[0] or 0)
            for step in steps:
                for sql in step.statements("sqlite"):
                    await db.execute(sql)
            if steps:
                await db.execute("DELETE FROM schema_version")
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (steps[-1].version,))

    async def close(self) -> None:
        await self._commits.drain()
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store not opened"
        return self._db

    # -- files ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _immediate(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the database's write lock first, so the
        usage read inside cannot change before the write, even with several worker processes
        on the same file."""
        async with self._write_lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @staticmethod
    async def _used(db: aiosqlite.Connection, tenant: str, leaving_out: str | None = None) -> int:
        async with db.execute(_USED, (tenant, tenant, leaving_out)) as cur:
            row = await cur.fetchone()
        assert row is not None  # an aggregate always yields one row
        return int(row[0])

    async def add_file(self, rec: FileRecord, *, quota: int | None = None, reservation: str | None = None) -> None:
        async with self._immediate() as db:
            if quota is not None:
                used = await self._used(db, rec.tenant, reservation)
                if used + rec.bytes > quota:
                    raise QuotaExceeded(used, rec.bytes, quota)
            await db.execute(
                f"INSERT INTO files ({_FILE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.id, rec.tenant, rec.provider, rec.upstream_id, orjson.dumps(rec.location).decode(),
                 rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.expires_at, rec.status),
            )
            if reservation is not None:
                await db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
        self._files.put(rec.id, rec)

    def _check_cache(self) -> None:
        """Empty the file cache if any connection (another worker's too) committed since the
        last check: a cached record may have been deleted there."""
        if self._probe is None:
            return
        try:
            (version,) = self._probe.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            version = None  # cannot tell: trust nothing cached
        if version is None or version != self._data_version:
            self._files.clear()
        self._data_version = version

    async def get_file(self, file_id: str) -> FileRecord | None:
        self._check_cache()
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
            # aiosqlite declares Iterable[Row]; it hands on sqlite3's list.
            rows = cast("list[aiosqlite.Row]", await cur.fetchall())
        recs = [_row_to_file(r) for r in rows[:limit]]
        return recs, len(rows) > limit

    async def expired_files(self, now: int, limit: int = 500) -> list[FileRecord]:
        async with self.db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        ) as cur:
            return [_row_to_file(r) for r in await cur.fetchall()]

    async def delete_file(self, file_id: str) -> FileRecord | None:
        self._files.pop(file_id, None)
        async with self._write_lock:
            async with self.db.execute(f"DELETE FROM files WHERE id = ? RETURNING seq, {_FILE_COLS}", (file_id,)) as cur:
                row = await cur.fetchone()
        if row is None:
            return None
        rec = _row_to_file(row[1:])
        rec.seq = row[0]
        return rec

    async def restore_file(self, rec: FileRecord) -> None:
        async with self._write_lock:
            await self.db.execute(
                f"INSERT INTO files (seq, {_FILE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.seq, rec.id, rec.tenant, rec.provider, rec.upstream_id, orjson.dumps(rec.location).decode(),
                 rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.expires_at, rec.status),
            )

    async def tenant_usage(self, tenant: str) -> int:
        async with self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?", (tenant,)) as cur:
            row = await cur.fetchone()
        assert row is not None  # an aggregate always yields one row
        return int(row[0])

    # -- reservations ----------------------------------------------------------------------

    async def reserve(self, res: Reservation, *, minimum: int, quota: int | None) -> tuple[int, int]:
        async with self._immediate() as db:
            used = await self._used(db, res.tenant) if quota is not None else 0
            granted = res.bytes if quota is None else min(res.bytes, quota - used)
            if granted < minimum:
                raise QuotaExceeded(used, minimum, quota or 0)
            await db.execute(
                f"INSERT INTO reservations ({_RESERVATION_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                (res.id, res.tenant, res.owner, res.provider, granted, orjson.dumps(res.location).decode(),
                 res.started_at, res.heartbeat),
            )
        return granted, used

    async def grow_reservation(self, res_id: str, tenant: str, want: int, *, quota: int | None) -> tuple[int, int]:
        async with self._immediate() as db:
            async with db.execute("SELECT bytes FROM reservations WHERE id = ?", (res_id,)) as cur:
                row = await cur.fetchone()
            if row is None:  # released already (the janitor took it): nothing more to grant
                return 0, await self._used(db, tenant)
            others = await self._used(db, tenant, res_id) if quota is not None else 0
            granted = max(row[0], want if quota is None else min(want, quota - others))
            await db.execute("UPDATE reservations SET bytes = ?, heartbeat = ? WHERE id = ?",
                             (granted, int(time.time()), res_id))
        return granted, others

    async def locate_reservation(self, res_id: str, location: dict[str, Any]) -> None:
        async with self._write_lock:
            await self.db.execute("UPDATE reservations SET location = ? WHERE id = ?",
                                  (orjson.dumps(location).decode(), res_id))

    async def release_reservation(self, res_id: str) -> bool:
        async with self._write_lock:
            cur = await self.db.execute("DELETE FROM reservations WHERE id = ?", (res_id,))
        return cur.rowcount > 0

    async def reservations(self) -> list[Reservation]:
        async with self.db.execute(f"SELECT {_RESERVATION_COLS} FROM reservations ORDER BY started_at") as cur:
            rows = await cur.fetchall()
        return [Reservation(id=r[0], tenant=r[1], owner=r[2], provider=r[3], bytes=r[4], location=orjson.loads(r[5]),
                            started_at=r[6], heartbeat=r[7]) for r in rows]

    async def touch_reservations(self, owner: str, now: int) -> int:
        async with self._write_lock:
            cur = await self.db.execute("UPDATE reservations SET heartbeat = ? WHERE owner = ?", (now, owner))
        return cur.rowcount

    # -- uploads -------------------------------------------------------------------------

    async def add_upload(self, rec: UploadRecord) -> None:
        async with self._write_lock:
            await self.db.execute(f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES ({','.join('?' * 14)})",
                                  upload_args(rec))

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        async with self.db.execute(f"SELECT {_UPLOAD_COLS} FROM uploads WHERE id = ?", (upload_id,)) as cur:
            row = await cur.fetchone()
        return row_to_upload(row) if row is not None else None

    async def move_upload(self, upload_id: str, from_status: tuple[str, ...], to_status: str, *,
                          file_id: str | None = None) -> UploadRecord | None:
        marks = ",".join("?" * len(from_status))
        async with self._write_lock:
            async with self.db.execute(
                f"UPDATE uploads SET status = ?, file_id = COALESCE(?, file_id) WHERE id = ? AND status IN ({marks})"
                f" RETURNING {_UPLOAD_COLS}", (to_status, file_id, upload_id, *from_status),
            ) as cur:
                row = await cur.fetchone()
        return row_to_upload(row) if row is not None else None

    async def add_part(self, part: PartRecord, *, max_total: int, max_parts: int) -> str:
        async with self._immediate() as db:
            async with db.execute("SELECT status FROM uploads WHERE id = ?", (part.upload_id,)) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "pending":
                return "not_pending"
            async with db.execute("SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM upload_parts WHERE upload_id = ?",
                                  (part.upload_id,)) as cur:
                total = await cur.fetchone()
            assert total is not None  # an aggregate always yields one row
            if total[0] + part.bytes > max_total:
                return "too_large"
            if total[1] >= max_parts:
                return "too_many"
            await db.execute(f"INSERT INTO upload_parts ({_PART_COLS}) VALUES (?,?,?,?,?)",
                             (part.id, part.upload_id, part.bytes, part.created_at,
                              orjson.dumps(part.location).decode()))
        return "ok"

    async def upload_parts(self, upload_id: str) -> list[PartRecord]:
        async with self.db.execute(f"SELECT {_PART_COLS} FROM upload_parts WHERE upload_id = ? ORDER BY created_at, id",
                                   (upload_id,)) as cur:
            return [row_to_part(r) for r in await cur.fetchall()]

    async def delete_parts(self, upload_id: str) -> list[PartRecord]:
        async with self._write_lock:
            async with self.db.execute(f"DELETE FROM upload_parts WHERE upload_id = ? RETURNING {_PART_COLS}",
                                       (upload_id,)) as cur:
                return [row_to_part(r) for r in await cur.fetchall()]

    async def expired_uploads(self, now: int, limit: int = 500) -> list[UploadRecord]:
        async with self.db.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE status IN ('pending', 'completing') AND expires_at <= ?"
            " ORDER BY expires_at LIMIT ?", (now, limit),
        ) as cur:
            return [row_to_upload(r) for r in await cur.fetchall()]

    async def purge_uploads(self, before: int) -> int:
        async with self._write_lock:
            cur = await self.db.execute(
                "DELETE FROM uploads WHERE status IN ('completed', 'cancelled', 'expired') AND expires_at < ?",
                (before,))
        return cur.rowcount

    # -- responses -----------------------------------------------------------------------

    async def add_response(self, rec: ResponseRecord) -> None:
        """Group commit: returns once the record is committed. The record is visible in this
        process at once (cache); concurrent callers share one transaction — whoever arrives
        while a commit is running joins the next one — so there is no fixed delay and, under
        load, one commit for many responses instead of one per request."""
        self._responses.put(rec.id, rec)
        await self._commits.add(rec)

    async def _insert_responses(self, batch: list[ResponseRecord]) -> None:
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
        if self._commits.discard(response_id):
            return True
        async with self._write_lock:
            cur = await self.db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return cur.rowcount > 0
