"""SQLite store (aiosqlite): the embedded default.

Records are immutable once written (only deleted), so lookups by id are served from a bounded
in-process cache; a delete evicts. Several worker processes may share one database file (WAL
mode), so the cache is trusted only while the database is unchanged: every lookup first reads
``PRAGMA data_version`` on a small synchronous connection (microseconds, no thread hop), and
any commit by another connection — another worker's delete included — empties the cache.
A record another worker deleted is therefore never served as live.

A lookup by id that misses the cache is read on that same synchronous connection, on the event
loop: one primary-key probe of a WAL database costs 4–6 µs, while aiosqlite's hop to its thread
and back costs tens of µs of CPU per query (bench/store_lookup.py; issue 10). A WAL reader never
waits for a writer; should the read still find the database busy (a WAL reset, a checkpoint
restart), it gives up after ``_READ_TIMEOUT`` and the lookup goes through aiosqlite instead.

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
from .base import BatchRecord, FileRecord, PartRecord, QuotaExceeded, Reservation, ResponseRecord, TurnRecord, UploadRecord
from .batch_rows import BATCH_COLS, BATCH_MUTABLE, NOT_ENDED, batch_args, mutable_args, row_to_batch
from .group_commit import GroupCommit

# A tenant's stored plus reserved bytes, leaving one reservation out (params: tenant, tenant, id).
_USED = ("SELECT (SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?)"
         " + (SELECT COALESCE(SUM(bytes), 0) FROM reservations WHERE tenant = ? AND id IS NOT ?)")
_RESERVATION_COLS = "id, tenant, owner, provider, bytes, location, started_at, heartbeat"
_BUSY_TIMEOUT_MS = 10_000
# The synchronous reader gives up this soon (seconds) and the read goes to aiosqlite's thread.
_READ_TIMEOUT = 0.005

_FILE_COLS = "id, tenant, provider, upstream_id, location, filename, purpose, bytes, created_at, expires_at, status"
_FILE_BY_ID = f"SELECT {_FILE_COLS} FROM files WHERE id = ?"
_BUSY = object()  # the synchronous reader could not answer


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(
        id=row[0], tenant=row[1], provider=row[2], upstream_id=row[3], location=orjson.loads(row[4]),
        filename=row[5], purpose=row[6], bytes=row[7], created_at=row[8], expires_at=row[9], status=row[10],
    )


TURN_COLS = "id, tenant, previous_id, status, input_items, output_items, response, events, owner, heartbeat"
# The state an update replaces (update_turn): every column but id, tenant, previous_id.
TURN_SET = ("status", "input_items", "output_items", "response", "events", "owner", "heartbeat")
# A turn and its predecessors, newest first ($1 id, $2 tenant; bounded depth: a cycle cannot loop).
CHAIN_SQL = ("WITH RECURSIVE chain(id, tenant, previous_id, status, input_items, output_items, depth) AS ("
             "SELECT id, tenant, previous_id, status, input_items, output_items, 0 FROM response_turns "
             "WHERE id = $1 AND tenant = $2 "
             "UNION ALL SELECT t.id, t.tenant, t.previous_id, t.status, t.input_items, t.output_items, c.depth + 1 "
             "FROM response_turns t JOIN chain c ON t.id = c.previous_id WHERE t.tenant = c.tenant AND c.depth < 100000) "
             "SELECT id, tenant, previous_id, status, input_items, output_items FROM chain ORDER BY depth")


def turn_args(t: TurnRecord) -> tuple[Any, ...]:
    return (t.id, t.tenant, t.previous_id, t.status, orjson.dumps(t.input_items).decode(),
            orjson.dumps(t.output_items).decode(), orjson.dumps(t.response).decode(),
            None if t.events is None else orjson.dumps(t.events).decode(), t.owner, t.heartbeat)


def row_to_turn(row: tuple[Any, ...]) -> TurnRecord:
    return TurnRecord(id=row[0], tenant=row[1], previous_id=row[2], status=row[3], input_items=orjson.loads(row[4]),
                      output_items=orjson.loads(row[5]), response=orjson.loads(row[6]),
                      events=None if row[7] is None else orjson.loads(row[7]), owner=row[8], heartbeat=row[9])


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
        self._absent: _LRU[bool] = _LRU(cache_size)  # ids looked up and not found
        self._responses: _LRU[ResponseRecord] = _LRU(cache_size)
        # One connection serves every coroutine: a transaction must not interleave with
        # another coroutine's statements.
        self._write_lock = asyncio.Lock()
        self._commits = GroupCommit(self._insert_responses)
        # Synchronous, on the loop: PRAGMA data_version (has another connection committed?) and
        # lookups by id; never writes.
        self._probe: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._checked = False  # data_version was read in this event-loop turn

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
            self._probe = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                          timeout=_READ_TIMEOUT)

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
        self._absent.pop(rec.id, None)
        self._files.put(rec.id, rec)

    def _check_cache(self) -> None:
        """Empty the file cache if any connection (another worker's too) committed since the
        last check: a cached record may have been deleted there.

        Checked once per event-loop turn, not per lookup (issue 10). That is as fresh as a
        check per lookup for every request a client can send after seeing a commit: a lookup
        that skips the check runs in a callback queued before the reset below, hence before
        the check it relies on, so its request had arrived before that check read the version.
        A request arriving after a commit is looked up in a later turn, after the reset.
        """
        if self._probe is None or self._checked:
            return
        self._checked = True
        asyncio.get_running_loop().call_soon(self._uncheck)
        try:
            (version,) = self._probe.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            version = None  # cannot tell: trust nothing cached
        if version is None or version != self._data_version:
            self._files.clear()
            self._absent.clear()
        self._data_version = version

    def _uncheck(self) -> None:
        self._checked = False

    def _read_now(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One row by key on the synchronous reader; ``_BUSY`` when there is none or it was
        kept waiting past ``_READ_TIMEOUT``."""
        if self._probe is not None:
            try:
                return self._probe.execute(sql, args).fetchone()
            except sqlite3.OperationalError:
                pass  # busy: the thread may wait as long as it takes
        return _BUSY

    async def _read_one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._read_now(sql, args)
        if row is not _BUSY:
            return row
        async with self.db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def get_file(self, file_id: str) -> FileRecord | None:
        self._check_cache()
        rec = self._files.get(file_id)
        if rec is not None:
            return rec
        if file_id in self._absent:
            return None
        row = self._read_now(_FILE_BY_ID, (file_id,))
        if row is _BUSY:
            async with self.db.execute(_FILE_BY_ID, (file_id,)) as cur:
                row = await cur.fetchone()
        elif row is None:
            # Known absent as of this data_version (read with no await in between, so no
            # commit can fall between the check and the read): an unseen id — a pass-through
            # provider's file the gateway never recorded — costs no read until the database
            # changes (issue 10).
            self._absent.put(file_id, True)
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
        self._absent.pop(rec.id, None)
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
        row = await self._read_one("SELECT id, tenant, provider, model, created_at FROM responses WHERE id = ?",
                                   (response_id,))
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
            await self.db.execute("BEGIN")
            try:
                cur = await self.db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                await self.db.execute("DELETE FROM response_turns WHERE id = ?", (response_id,))
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")
        return cur.rowcount > 0

    # -- turns of bridged responses --------------------------------------------------------

    async def add_turn(self, rec: ResponseRecord, turn: TurnRecord) -> None:
        async with self._immediate() as db:
            await db.execute(
                "INSERT OR REPLACE INTO responses (id, tenant, provider, model, created_at) VALUES (?,?,?,?,?)",
                (rec.id, rec.tenant, rec.provider, rec.model, rec.created_at))
            await db.execute(f"INSERT OR REPLACE INTO response_turns ({TURN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             turn_args(turn))
        self._responses.put(rec.id, rec)

    async def get_turn(self, response_id: str) -> TurnRecord | None:
        async with self.db.execute(f"SELECT {TURN_COLS} FROM response_turns WHERE id = ?", (response_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else row_to_turn(tuple(row))

    async def get_chain(self, response_id: str, tenant: str) -> list[TurnRecord]:
        async with self.db.execute(CHAIN_SQL.replace("$1", "?").replace("$2", "?"), (response_id, tenant)) as cur:
            rows = await cur.fetchall()
        return [row_to_turn((*r, "{}", None, None, 0)) for r in reversed(list(rows))]

    async def update_turn(self, turn: TurnRecord, *, only_if: tuple[str, ...]) -> bool:
        args = turn_args(turn)
        async with self._write_lock:
            cur = await self.db.execute(
                f"UPDATE response_turns SET {', '.join(c + ' = ?' for c in TURN_SET)} "
                f"WHERE id = ? AND status IN ({', '.join('?' * len(only_if))})", (*args[3:], turn.id, *only_if))
        return cur.rowcount > 0

    # -- batch output files ----------------------------------------------------------------

    async def adopt_file(self, rec: FileRecord) -> bool:
        async with self._write_lock:
            cur = await self.db.execute(
                f"INSERT INTO files ({_FILE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
                (rec.id, rec.tenant, rec.provider, rec.upstream_id, orjson.dumps(rec.location).decode(),
                 rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.expires_at, rec.status),
            )
        return cur.rowcount > 0

    # -- batches -----------------------------------------------------------------------------
    # Batch rows change (status, progress), so they are never cached: every read is the row.

    async def add_batch(self, rec: BatchRecord) -> None:
        async with self._write_lock:
            await self.db.execute(f"INSERT INTO batches ({BATCH_COLS}) VALUES ({','.join('?' * 18)})",
                                  batch_args(rec))

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        async with self.db.execute(f"SELECT {BATCH_COLS} FROM batches WHERE id = ?", (batch_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else row_to_batch(row)

    async def list_batches(self, tenant: str, *, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        where, args = "tenant = ?", [tenant]
        if after:
            # As for files: a cursor of another tenant (or none) gives an empty page.
            where += " AND seq < COALESCE((SELECT seq FROM batches WHERE id = ? AND tenant = ?), -1)"
            args += [after, tenant]
        async with self.db.execute(f"SELECT {BATCH_COLS} FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?",
                                   (*args, limit + 1)) as cur:
            rows = cast("list[aiosqlite.Row]", await cur.fetchall())
        return [row_to_batch(r) for r in rows[:limit]], len(rows) > limit

    async def update_batch(self, rec: BatchRecord) -> bool:
        sets = ", ".join(f"{c} = ?" for c in BATCH_MUTABLE)
        async with self._write_lock:
            cur = await self.db.execute(f"UPDATE batches SET {sets} WHERE id = ? AND {NOT_ENDED}",
                                        (*mutable_args(rec), rec.id))
        return cur.rowcount > 0

    async def claim_batch_poll(self, batch_id: str, now_ms: int, interval_ms: int) -> bool:
        async with self._write_lock:
            cur = await self.db.execute(
                "UPDATE batches SET polled_at = ? WHERE id = ? AND (polled_at IS NULL OR polled_at <= ?)",
                (now_ms, batch_id, now_ms - interval_ms))
        return cur.rowcount > 0
