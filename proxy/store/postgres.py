"""PostgreSQL store (asyncpg): what N replicas share. Same semantics as :mod:`.sqlite`.

* Quota steps (``add_file``, ``reserve``, ``grow_reservation``) are one transaction each that
  first takes ``pg_advisory_xact_lock(hashtext(tenant))``: every replica's step for one tenant
  runs one at a time, so the usage read cannot change before the write; other tenants do not
  wait (a hash collision only serialises two tenants, never wrongs them).
* Deleting is a claim, as on SQLite: one ``DELETE … RETURNING`` hands the row to exactly one
  caller in any replica; :meth:`restore_file` puts it back at the same ``seq``.
* Records are immutable once written (only deleted), so lookups by id are served from an
  in-process cache. Every delete sends ``pg_notify`` in its own statement (delivered at
  commit), and each replica keeps one ``LISTEN`` connection that evicts the id. While that
  connection is down the cache is bypassed and, once it is back, emptied: a notification
  missed meanwhile cannot leave a deleted record cached. A connection that dies silently (a
  network partition: no FIN) is found by a heartbeat query and treated the same way. A lookup whose query raced with an
  eviction does not cache its answer (it may predate the delete).
* ``add_response`` returns once the record is committed, by group commit as on SQLite:
  callers arriving while an INSERT runs share the next one (one multi-row statement), so
  under load a replica sends one round trip per batch of responses, not one per request.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, TypeVar

import asyncpg
import orjson

from . import migrations
from .base import BatchRecord, FileRecord, PartRecord, QuotaExceeded, Reservation, ResponseRecord, TurnRecord, UploadRecord
from .batch_rows import BATCH_COLS, BATCH_MUTABLE, NOT_ENDED, batch_args, mutable_args, row_to_batch
from .group_commit import GroupCommit
from .sqlite import _LRU, _PART_COLS, _UPLOAD_COLS, CHAIN_SQL, TURN_COLS, TURN_SET, row_to_part, row_to_turn, row_to_upload, turn_args, upload_args

log = logging.getLogger("sluicegate")
_V = TypeVar("_V")  # what a cache holds

CHANNEL = "sluicegate_evict"          # payload: "f:<file id>", "r:<response id>", or "s:<barrier token>"
_LISTENER_RETRY = (0.1, 5.0)          # first and longest wait between reconnects, seconds
_LISTENER_HEARTBEAT = 5.0             # seconds between checks that the LISTEN connection answers

_FILE_COLS = "id, tenant, provider, upstream_id, location, filename, purpose, bytes, created_at, expires_at, status"
_RESERVATION_COLS = "id, tenant, owner, provider, bytes, location, started_at, heartbeat"
# A tenant's stored plus reserved bytes, leaving one reservation out ($1 tenant, $2 id or NULL).
_USED = ("SELECT (SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = $1)"
         " + (SELECT COALESCE(SUM(bytes), 0) FROM reservations WHERE tenant = $1 AND id IS DISTINCT FROM $2)")
_LOCK_TENANT = "SELECT pg_advisory_xact_lock(hashtext($1))"


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(
        id=row["id"], tenant=row["tenant"], provider=row["provider"], upstream_id=row["upstream_id"],
        location=orjson.loads(row["location"]), filename=row["filename"], purpose=row["purpose"],
        bytes=row["bytes"], created_at=row["created_at"], expires_at=row["expires_at"], status=row["status"],
    )


def _file_args(rec: FileRecord) -> tuple[Any, ...]:
    return (rec.id, rec.tenant, rec.provider, rec.upstream_id, orjson.dumps(rec.location).decode(),
            rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.expires_at, rec.status)


class PostgresStore:
    def __init__(self, dsn: str, *, pool_min: int = 1, pool_max: int = 10, statement_timeout: float = 10.0,
                 cache_size: int = 50_000, listener_heartbeat: float = _LISTENER_HEARTBEAT) -> None:
        self.dsn = dsn
        self.pool_min, self.pool_max, self.statement_timeout = pool_min, pool_max, statement_timeout
        self._pool: asyncpg.Pool | None = None
        self._files: _LRU[FileRecord] = _LRU(cache_size)
        self._responses: _LRU[ResponseRecord] = _LRU(cache_size)
        self._listener: asyncpg.Connection | None = None
        self._listening = False        # the cache is trusted only while notifications arrive
        self._evictions = 0            # bumped by every eviction: a racing lookup does not cache
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        self._barriers: dict[str, asyncio.Future[None]] = {}
        # Responses being inserted by this process → deleted meanwhile? (then deleted after)
        self._adding: dict[str, bool] = {}
        self._heartbeat_every = listener_heartbeat
        self._records: asyncpg.Pool | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Group commit of response records: queued for the next INSERT, and its outcome.
        self._commits = GroupCommit(self._insert_responses)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "PostgresStore":
        return cls(url, **kw)

    def _server_settings(self) -> dict[str, str]:
        return {"statement_timeout": str(max(1, int(self.statement_timeout * 1000))),
                "application_name": "sluicegate"}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_min, max_size=self.pool_max, server_settings=self._server_settings())
        # Response records (group-committed one batch at a time, so one connection): committed
        # — visible to every replica at once — without waiting for the WAL flush. A crash of
        # the *gateway* loses nothing; a crash of the PostgreSQL server may lose the last
        # fraction of a second of records, the durability class of SQLite's WAL with
        # synchronous=NORMAL. The flush cost ~1-2 ms per commit here, most of responses.create's
        # gap to SQLite (bench/run.py --only store). Files, reservations and deletes keep the
        # server's default (synchronous).
        self._records = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=1,
            server_settings={**self._server_settings(), "synchronous_commit": "off",
                             "application_name": "sluicegate-records"})
        await self._migrate()
        await self._listen()
        self._heartbeat = asyncio.ensure_future(self._check_listener())

    async def _migrate(self) -> None:
        """Bring the schema to :data:`migrations.LATEST` in one transaction, under an advisory
        lock: replicas starting together wait for the first, then find the schema current."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Neither waiting for another replica's migration nor a long step is a stuck
            # statement: store.statement_timeout does not apply here.
            await conn.execute("SET LOCAL statement_timeout = 0")
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *migrations.PG_MIGRATION_LOCK)
            await conn.execute(migrations.CREATE_VERSION_TABLE)
            current = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            steps = migrations.pending(current or 0)
            for step in steps:
                for sql in step.statements("postgres"):
                    await conn.execute(sql)
            if steps:
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", steps[-1].version)

    # -- cross-replica cache invalidation ------------------------------------------------

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "sluicegate-listen"})
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn
        # Anything deleted while nobody listened may still be cached.
        self._files.clear()
        self._responses.clear()
        self._evictions += 1
        self._listening = True

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        # asyncpg hands on the NOTIFY payload as a str (its stubs declare object).
        kind, _, key = str(payload).partition(":")
        if kind == "s":
            waiter = self._barriers.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        self._evict(self._files if kind == "f" else self._responses, key)

    async def heard_of_deletes(self) -> None:
        """Return once this replica has heard of every delete committed (anywhere) before the
        call: a NOTIFY of our own, sent now, arrives after theirs (PostgreSQL delivers them in
        commit order)."""
        if not self._listening:  # the cache is bypassed, and emptied when listening resumes
            return
        token = secrets.token_hex(8)
        self._barriers[token] = waiter = asyncio.get_running_loop().create_future()
        try:
            await self.pool.execute(f"SELECT pg_notify('{CHANNEL}', $1)", "s:" + token)
            await waiter
        finally:
            self._barriers.pop(token, None)

    def _listener_lost(self, conn: Any) -> None:
        self._listening = False
        self._listener = None
        self._evictions += 1
        for waiter in self._barriers.values():  # nothing is served from the cache now
            if not waiter.done():
                waiter.set_result(None)
        if not self._closing and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.ensure_future(self._relisten())

    async def _check_listener(self) -> None:
        """A LISTEN connection whose peer vanished without closing it would never report the
        loss: query it now and then, and drop it (reconnect, cache emptied) when it does not
        answer in time."""
        while not self._closing:
            await asyncio.sleep(self._heartbeat_every)
            conn = self._listener
            if conn is None:
                continue
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._heartbeat_every)
            except Exception as exc:
                if conn is self._listener and not self._closing:
                    log.warning("store: notification listener not answering (%s); reconnecting", type(exc).__name__)
                    conn.terminate()  # runs _listener_lost

    async def _relisten(self) -> None:
        wait, longest = _LISTENER_RETRY
        while not self._closing:
            try:
                await self._listen()
                log.info("store: notification listener reconnected")
                return
            except Exception as exc:
                log.warning("store: notification listener down (%s); retrying in %.1fs",
                            type(exc).__name__, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    def _evict(self, cache: _LRU[Any], key: str) -> None:
        cache.pop(key, None)
        self._evictions += 1

    def _cached(self, cache: _LRU[_V], key: str) -> _V | None:
        return cache.get(key) if self._listening else None

    def _remember(self, cache: _LRU[_V], key: str, value: _V, evictions_before: int) -> None:
        if self._listening and self._evictions == evictions_before:
            cache.put(key, value)

    async def close(self) -> None:
        self._closing = True
        for task in (self._reconnect, self._heartbeat):
            if task is not None:
                task.cancel()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            self._listening = False
            try:  # bounded: a connection that went silent never answers the goodbye
                await listener.close(timeout=2)
            except Exception:
                listener.terminate()
        await self._commits.drain()  # the batch being committed lands before the pool goes
        if self._records is not None:
            records, self._records = self._records, None
            await records.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store not opened"
        return self._pool

    # -- files ---------------------------------------------------------------------------

    async def add_file(self, rec: FileRecord, *, quota: int | None = None, reservation: str | None = None) -> None:
        before = self._evictions
        async with self.pool.acquire() as conn, conn.transaction():
            if quota is not None:
                await conn.execute(_LOCK_TENANT, rec.tenant)
                used = int(await conn.fetchval(_USED, rec.tenant, reservation))
                if used + rec.bytes > quota:
                    raise QuotaExceeded(used, rec.bytes, quota)
            await conn.execute(f"INSERT INTO files ({_FILE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                               *_file_args(rec))
            if reservation is not None:
                await conn.execute("DELETE FROM reservations WHERE id = $1", reservation)
        self._remember(self._files, rec.id, rec, before)

    async def get_file(self, file_id: str) -> FileRecord | None:
        rec = self._cached(self._files, file_id)
        if rec is not None:
            return rec
        before = self._evictions
        row = await self.pool.fetchrow(f"SELECT {_FILE_COLS} FROM files WHERE id = $1", file_id)
        if row is None:
            return None
        rec = _row_to_file(row)
        self._remember(self._files, file_id, rec, before)
        return rec

    async def list_files(
        self, tenant: str, *, purpose: str | None, limit: int, order: str, after: str | None,
        provider: str | None = None,
    ) -> tuple[list[FileRecord], bool]:
        args: list[Any] = [tenant, int(time.time())]
        where = ["tenant = $1", "(expires_at IS NULL OR expires_at > $2)"]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if purpose:
            where.append(f"purpose = {arg(purpose)}")
        if provider:
            where.append(f"provider = {arg(provider)}")
        if after:
            # As on SQLite: the cursor is a file id of the same tenant; an unknown one gives an
            # empty page (never an error that would confirm or deny another tenant's id).
            missing = "9223372036854775807" if order == "asc" else "-1"
            where.append(f"seq {'>' if order == 'asc' else '<'} COALESCE("
                         f"(SELECT seq FROM files WHERE id = {arg(after)} AND tenant = $1), {missing})")
        sql = (f"SELECT {_FILE_COLS} FROM files WHERE {' AND '.join(where)} "
               f"ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT {arg(limit + 1)}")
        rows = await self.pool.fetch(sql, *args)
        return [_row_to_file(r) for r in rows[:limit]], len(rows) > limit

    async def expired_files(self, now: int, limit: int = 500) -> list[FileRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 "
            "ORDER BY expires_at LIMIT $2", now, limit)
        return [_row_to_file(r) for r in rows]

    async def delete_file(self, file_id: str) -> FileRecord | None:
        self._evict(self._files, file_id)
        row = await self.pool.fetchrow(
            f"WITH gone AS (DELETE FROM files WHERE id = $1 RETURNING seq, {_FILE_COLS}) "
            f"SELECT gone.*, pg_notify('{CHANNEL}', 'f:' || gone.id) FROM gone", file_id)
        if row is None:
            return None
        rec = _row_to_file(row)
        rec.seq = row["seq"]
        return rec

    async def restore_file(self, rec: FileRecord) -> None:
        await self.pool.execute(
            f"INSERT INTO files (seq, {_FILE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            rec.seq, *_file_args(rec))

    async def tenant_usage(self, tenant: str) -> int:
        return int(await self.pool.fetchval("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = $1", tenant))

    # -- reservations ----------------------------------------------------------------------

    async def reserve(self, res: Reservation, *, minimum: int, quota: int | None) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            used = 0
            if quota is not None:
                await conn.execute(_LOCK_TENANT, res.tenant)
                used = int(await conn.fetchval(_USED, res.tenant, None))
            granted = res.bytes if quota is None else min(res.bytes, quota - used)
            if granted < minimum:
                raise QuotaExceeded(used, minimum, quota or 0)
            await conn.execute(
                f"INSERT INTO reservations ({_RESERVATION_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                res.id, res.tenant, res.owner, res.provider, granted, orjson.dumps(res.location).decode(),
                res.started_at, res.heartbeat)
        return granted, used

    async def grow_reservation(self, res_id: str, tenant: str, want: int, *, quota: int | None) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK_TENANT, tenant)
            held = await conn.fetchval("SELECT bytes FROM reservations WHERE id = $1", res_id)
            if held is None:  # released already (the janitor took it): nothing more to grant
                return 0, int(await conn.fetchval(_USED, tenant, None))
            others = int(await conn.fetchval(_USED, tenant, res_id)) if quota is not None else 0
            granted = max(held, want if quota is None else min(want, quota - others))
            await conn.execute("UPDATE reservations SET bytes = $1, heartbeat = $2 WHERE id = $3",
                               granted, int(time.time()), res_id)
        return granted, others

    async def locate_reservation(self, res_id: str, location: dict[str, Any]) -> None:
        await self.pool.execute("UPDATE reservations SET location = $1 WHERE id = $2",
                                orjson.dumps(location).decode(), res_id)

    async def release_reservation(self, res_id: str) -> bool:
        return await self.pool.fetchval("DELETE FROM reservations WHERE id = $1 RETURNING 1", res_id) is not None

    async def reservations(self) -> list[Reservation]:
        rows = await self.pool.fetch(f"SELECT {_RESERVATION_COLS} FROM reservations ORDER BY started_at")
        return [Reservation(id=r["id"], tenant=r["tenant"], owner=r["owner"], provider=r["provider"],
                            bytes=r["bytes"], location=orjson.loads(r["location"]), started_at=r["started_at"],
                            heartbeat=r["heartbeat"]) for r in rows]

    async def touch_reservations(self, owner: str, now: int) -> int:
        status = await self.pool.execute("UPDATE reservations SET heartbeat = $1 WHERE owner = $2", now, owner)
        return int(status.rsplit(" ", 1)[1])

    # -- uploads -------------------------------------------------------------------------

    async def add_upload(self, rec: UploadRecord) -> None:
        marks = ",".join(f"${i}" for i in range(1, 15))
        await self.pool.execute(f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES ({marks})", *upload_args(rec))

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_UPLOAD_COLS} FROM uploads WHERE id = $1", upload_id)
        return row_to_upload(row) if row is not None else None

    async def move_upload(self, upload_id: str, from_status: tuple[str, ...], to_status: str, *,
                          file_id: str | None = None) -> UploadRecord | None:
        row = await self.pool.fetchrow(
            f"UPDATE uploads SET status = $1, file_id = COALESCE($2, file_id) WHERE id = $3 AND status = ANY($4::text[])"
            f" RETURNING {_UPLOAD_COLS}", to_status, file_id, upload_id, list(from_status))
        return row_to_upload(row) if row is not None else None

    async def add_part(self, part: PartRecord, *, max_total: int, max_parts: int) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            # The upload's row lock orders concurrent parts (any replica) and a complete/cancel.
            status = await conn.fetchval("SELECT status FROM uploads WHERE id = $1 FOR UPDATE", part.upload_id)
            if status != "pending":
                return "not_pending"
            row = await conn.fetchrow(
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM upload_parts WHERE upload_id = $1", part.upload_id)
            assert row is not None  # an aggregate always yields one row
            if int(row[0]) + part.bytes > max_total:
                return "too_large"
            if row[1] >= max_parts:
                return "too_many"
            await conn.execute(f"INSERT INTO upload_parts ({_PART_COLS}) VALUES ($1,$2,$3,$4,$5)",
                               part.id, part.upload_id, part.bytes, part.created_at,
                               orjson.dumps(part.location).decode())
        return "ok"

    async def upload_parts(self, upload_id: str) -> list[PartRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_PART_COLS} FROM upload_parts WHERE upload_id = $1 ORDER BY created_at, id", upload_id)
        return [row_to_part(r) for r in rows]

    async def delete_parts(self, upload_id: str) -> list[PartRecord]:
        rows = await self.pool.fetch(f"DELETE FROM upload_parts WHERE upload_id = $1 RETURNING {_PART_COLS}", upload_id)
        return [row_to_part(r) for r in rows]

    async def expired_uploads(self, now: int, limit: int = 500) -> list[UploadRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE status IN ('pending', 'completing') AND expires_at <= $1"
            " ORDER BY expires_at LIMIT $2", now, limit)
        return [row_to_upload(r) for r in rows]

    async def purge_uploads(self, before: int) -> int:
        status = await self.pool.execute(
            "DELETE FROM uploads WHERE status IN ('completed', 'cancelled', 'expired') AND expires_at < $1", before)
        return int(status.rsplit(" ", 1)[1])

    # -- responses -----------------------------------------------------------------------

    async def add_response(self, rec: ResponseRecord) -> None:
        """When it returns, the record is committed and every replica can read it. Concurrent
        callers share one autocommitted multi-row INSERT (see the module docstring).
        A delete of the id while the insert runs (in this process) wins, as on SQLite: the
        record is deleted right after it lands."""
        self._adding[rec.id] = False
        before = self._evictions
        try:
            await self._commits.add(rec)
        finally:
            deleted = self._adding.pop(rec.id, False)
        if deleted:
            await self._delete_response_row(rec.id)
        else:
            self._remember(self._responses, rec.id, rec, before)

    async def _insert_responses(self, batch: list[ResponseRecord]) -> None:
        # One statement, one round trip, one transaction for the whole batch (GroupCommit
        # keeps one record per id: ON CONFLICT cannot touch a row twice).
        assert self._records is not None, "store not opened"
        await self._records.execute(  # autocommitted, synchronous_commit off (see open)
            "INSERT INTO responses (id, tenant, provider, model, created_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) "
            "ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, provider = EXCLUDED.provider, "
            "model = EXCLUDED.model, created_at = EXCLUDED.created_at",
            [r.id for r in batch], [r.tenant for r in batch], [r.provider for r in batch],
            [r.model for r in batch], [r.created_at for r in batch])

    async def get_response(self, response_id: str) -> ResponseRecord | None:
        rec = self._cached(self._responses, response_id)
        if rec is not None:
            return rec
        before = self._evictions
        row = await self.pool.fetchrow(
            "SELECT id, tenant, provider, model, created_at FROM responses WHERE id = $1", response_id)
        if row is None:
            return None
        rec = ResponseRecord(*row)
        self._remember(self._responses, response_id, rec, before)
        return rec

    async def delete_response(self, response_id: str) -> bool:
        self._evict(self._responses, response_id)
        if response_id in self._adding:
            self._adding[response_id] = True
            return True
        return await self._delete_response_row(response_id)

    async def _delete_response_row(self, response_id: str) -> bool:
        row = await self.pool.fetchrow(
            "WITH gone AS (DELETE FROM responses WHERE id = $1 RETURNING id), "
            "turn AS (DELETE FROM response_turns WHERE id = $1) "
            f"SELECT pg_notify('{CHANNEL}', 'r:' || gone.id) FROM gone", response_id)
        return row is not None

    # -- batch output files ----------------------------------------------------------------

    async def adopt_file(self, rec: FileRecord) -> bool:
        before = self._evictions
        inserted = await self.pool.fetchval(
            f"INSERT INTO files ({_FILE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
            "ON CONFLICT (id) DO NOTHING RETURNING 1", *_file_args(rec))
        if inserted is not None:
            self._remember(self._files, rec.id, rec, before)
        return inserted is not None

    # -- batches -----------------------------------------------------------------------------
    # Batch rows change (status, progress), so they are never cached: every read is the row.

    async def add_batch(self, rec: BatchRecord) -> None:
        marks = ",".join(f"${i}" for i in range(1, 19))
        await self.pool.execute(f"INSERT INTO batches ({BATCH_COLS}) VALUES ({marks})", *batch_args(rec))

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self.pool.fetchrow(f"SELECT {BATCH_COLS} FROM batches WHERE id = $1", batch_id)
        return None if row is None else row_to_batch(row)

    async def list_batches(self, tenant: str, *, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        if after:
            # As for files: a cursor of another tenant (or none) gives an empty page.
            rows = await self.pool.fetch(
                f"SELECT {BATCH_COLS} FROM batches WHERE tenant = $1 AND seq < COALESCE("
                "(SELECT seq FROM batches WHERE id = $2 AND tenant = $1), -1) ORDER BY seq DESC LIMIT $3",
                tenant, after, limit + 1)
        else:
            rows = await self.pool.fetch(
                f"SELECT {BATCH_COLS} FROM batches WHERE tenant = $1 ORDER BY seq DESC LIMIT $2", tenant, limit + 1)
        return [row_to_batch(r) for r in rows[:limit]], len(rows) > limit

    async def update_batch(self, rec: BatchRecord) -> bool:
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(BATCH_MUTABLE, start=1))
        status = await self.pool.execute(
            f"UPDATE batches SET {sets} WHERE id = ${len(BATCH_MUTABLE) + 1} AND {NOT_ENDED}", *mutable_args(rec), rec.id)
        return status != "UPDATE 0"

    async def claim_batch_poll(self, batch_id: str, now_ms: int, interval_ms: int) -> bool:
        claimed = await self.pool.fetchval(
            "UPDATE batches SET polled_at = $1 WHERE id = $2 AND (polled_at IS NULL OR polled_at <= $3) "
            "RETURNING 1", now_ms, batch_id, now_ms - interval_ms)
        return claimed is not None

    # -- turns of bridged responses --------------------------------------------------------

    async def add_turn(self, rec: ResponseRecord, turn: TurnRecord) -> None:
        before = self._evictions
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO responses (id, tenant, provider, model, created_at) VALUES ($1,$2,$3,$4,$5) "
                "ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, provider = EXCLUDED.provider, "
                "model = EXCLUDED.model, created_at = EXCLUDED.created_at",
                rec.id, rec.tenant, rec.provider, rec.model, rec.created_at)
            await conn.execute(
                f"INSERT INTO response_turns ({TURN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
                f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in TURN_SET)}",
                *turn_args(turn))
        self._remember(self._responses, rec.id, rec, before)

    async def get_turn(self, response_id: str) -> TurnRecord | None:
        row = await self.pool.fetchrow(f"SELECT {TURN_COLS} FROM response_turns WHERE id = $1", response_id)
        return None if row is None else row_to_turn(tuple(row))

    async def get_chain(self, response_id: str, tenant: str) -> list[TurnRecord]:
        rows = await self.pool.fetch(CHAIN_SQL, response_id, tenant)
        return [row_to_turn((*r, "{}", None, None, 0)) for r in reversed(rows)]

    async def update_turn(self, turn: TurnRecord, *, only_if: tuple[str, ...]) -> bool:
        args = turn_args(turn)
        status = await self.pool.execute(
            f"UPDATE response_turns SET {', '.join(f'{c} = ${i}' for i, c in enumerate(TURN_SET, 1))} "
            f"WHERE id = ${len(TURN_SET) + 1} AND status = ANY(${len(TURN_SET) + 2}::text[])",
            *args[3:], turn.id, list(only_if))
        return int(status.rsplit(" ", 1)[1]) > 0
