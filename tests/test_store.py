"""Every store backend (SQLite, PostgreSQL): quota atomicity, pagination cursors, durable
responses, delete claims, and the cache across replicas (several store instances on one
database: worker processes on one SQLite file, replicas on one PostgreSQL database)."""
from __future__ import annotations

import asyncio
import re

import pytest

from proxy.store import open_store
from proxy.store.base import FileRecord, PartRecord, QuotaExceeded, Reservation, ResponseRecord, UploadRecord
from tests.support import eventually


def rec(i: int, tenant: str = "t", size: int = 10, purpose: str = "batch") -> FileRecord:
    return FileRecord(id=f"file-{i}", tenant=tenant, provider="local", filename=f"{i}.jsonl", purpose=purpose,
                      bytes=size, created_at=1000 + i)


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(request, tmp_path):
    """``await replicas()`` opens one more store on the test's database (a fresh one per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/s.db"
    else:
        db = request.getfixturevalue("pg_database")  # PostgreSQL missing: an error, not a skip
        await db.reset()
        url = db.url
    opened = []

    async def open_one():
        s = open_store(url)
        await s.open()
        opened.append(s)
        return s

    open_one.kind = request.param
    yield open_one
    for s in opened:
        await s.close()


@pytest.fixture
async def store(replicas):
    return await replicas()


async def test_concurrent_adds_cannot_overrun_quota(store):
    results = await asyncio.gather(*(store.add_file(rec(i, size=30), quota=100) for i in range(10)),
                                   return_exceptions=True)
    assert sum(r is None for r in results) == 3
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not None)
    assert await store.tenant_usage("t") == 90


async def test_pagination_and_isolation(store):
    for i in range(5):
        await store.add_file(rec(i))
    await store.add_file(rec(99, tenant="other"))
    page, more = await store.list_files("t", purpose=None, limit=2, order="desc", after=None)
    assert [r.id for r in page] == ["file-4", "file-3"] and more
    page, more = await store.list_files("t", purpose=None, limit=2, order="desc", after="file-3")
    assert [r.id for r in page] == ["file-2", "file-1"] and more
    page, more = await store.list_files("t", purpose=None, limit=10, order="asc", after="file-3")
    assert [r.id for r in page] == ["file-4"] and not more
    # Another tenant's id is no cursor.
    assert (await store.list_files("t", purpose=None, limit=10, order="asc", after="file-99"))[0] == []
    assert (await store.list_files("t", purpose="user_data", limit=10, order="asc", after=None))[0] == []
    assert await store.delete_file("file-4") and not await store.delete_file("file-4")
    assert await store.get_file("file-4") is None


async def test_responses_survive_reopen(replicas):
    s = await replicas()
    for i in range(50):
        await s.add_response(ResponseRecord(f"resp_{i}", "t", "p", "m", i))
    assert (await s.get_response("resp_7")).tenant == "t"  # visible at once
    assert await s.delete_response("resp_8")
    await s.close()
    s2 = await replicas()
    assert (await s2.get_response("resp_49")).model == "m"
    assert await s2.get_response("resp_8") is None


async def test_add_response_returns_only_once_committed(replicas):
    """Read back through another replica right after add_response: the record is in the
    database, not only in this process's cache; concurrent writers may share commits."""
    s, other = await replicas(), await replicas()

    async def in_db(rid: str) -> bool:
        return await other.get_response(rid) is not None

    await s.add_response(ResponseRecord("resp_one", "t", "p", "m", 1))
    assert await in_db("resp_one")
    await asyncio.gather(*(s.add_response(ResponseRecord(f"resp_c{i}", "t", "p", "m", i)) for i in range(40)))
    assert all([await in_db(f"resp_c{i}") for i in range(40)])
    # A writer whose record is deleted before its commit still returns; the record stays gone.
    writer = asyncio.ensure_future(s.add_response(ResponseRecord("resp_gone", "t", "p", "m", 1)))
    await asyncio.sleep(0)
    assert await s.delete_response("resp_gone")
    await asyncio.wait_for(writer, 5)
    assert not await in_db("resp_gone") and await s.get_response("resp_gone") is None


async def test_delete_is_a_claim_one_winner_across_connections(replicas):
    """Two stores on one database are two workers (replicas): each caches the record, both
    delete it at once; exactly one gets it, and neither serves it from its cache afterwards."""
    a, b = await replicas(), await replicas()
    for i in range(3):
        await a.add_file(rec(i))
    assert (await a.get_file("file-1")).id == (await b.get_file("file-1")).id == "file-1"  # both cached
    won = await asyncio.gather(*(s.delete_file("file-1") for s in (a, b, a, b)))
    [claimed] = [r for r in won if r is not None]
    assert claimed.id == "file-1" and claimed.bytes == 10
    assert await a.get_file("file-1") is None and await b.get_file("file-1") is None
    assert await b.tenant_usage("t") == 20
    # Undo: the row comes back where it was (list order) and counts again.
    await b.restore_file(claimed)
    assert (await a.get_file("file-1")).filename == "1.jsonl"
    page, _ = await a.list_files("t", purpose=None, limit=10, order="asc", after=None)
    assert [r.id for r in page] == ["file-0", "file-1", "file-2"]
    assert await a.tenant_usage("t") == 30


# -- reservations: bytes in flight -------------------------------------------------------------


def reservation(i: int, want: int, tenant: str = "t", owner: str = "h:1:x") -> Reservation:
    return Reservation(id=f"rsv-{i}", tenant=tenant, owner=owner, provider="local", bytes=want,
                       started_at=1, heartbeat=1)


async def test_reservations_cannot_overrun_quota_across_two_workers(replicas):
    # Two store instances on one database, as two worker processes (replicas) have.
    a, b = await replicas(), await replicas()
    await a.add_file(rec(0, size=10))
    results = await asyncio.gather(
        *((a if i % 2 else b).reserve(reservation(i, 30), minimum=30, quota=100) for i in range(12)),
        return_exceptions=True)
    granted = [r for r in results if not isinstance(r, BaseException)]
    assert len(granted) == 3 and all(g[0] == 30 for g in granted)
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
    # Growing competes the same way: what is left (0) cannot be granted twice.
    ids = [r.id for r in await a.reservations()]
    grown = await asyncio.gather(*((a if i % 2 else b).grow_reservation(rid, "t", 60, quota=100)
                                   for i, rid in enumerate(ids)))
    assert [g[0] for g in grown] == [30, 30, 30]
    assert sum(r.bytes for r in await b.reservations()) == 90
    # A file that does not come through a reservation sees the reserved bytes too.
    with pytest.raises(QuotaExceeded):
        await b.add_file(rec(1, size=1), quota=100)


async def heard_of_deletes(replicas, store) -> None:
    """SQLite: another worker sees a commit at once (PRAGMA data_version on each lookup).
    PostgreSQL: another replica hears of a delete by NOTIFY, sent at its commit, on its own
    connection; wait (bounded) until it has, as a replica has by the time a client that got
    the delete's answer from one replica reaches it."""
    if replicas.kind == "postgres":
        await asyncio.wait_for(store.heard_of_deletes(), 10)


async def test_cache_never_serves_a_record_another_worker_deleted(replicas):
    a, b = await replicas(), await replicas()
    await a.add_file(rec(1))
    await a.add_file(rec(2))
    assert (await b.get_file("file-1")) is not None and (await b.get_file("file-2")) is not None  # cached in b
    assert await a.delete_file("file-1") is not None
    await heard_of_deletes(replicas, b)
    assert await b.get_file("file-1") is None
    assert (await b.get_file("file-2")).id == "file-2"  # still there, re-read
async def test_reservation_grants_what_the_quota_leaves(store):
    await store.add_file(rec(0, size=70))
    # Up to 50 wanted, at least 10 needed: the 30 left are granted.
    assert await store.reserve(reservation(1, 50), minimum=10, quota=100) == (30, 70)
    with pytest.raises(QuotaExceeded) as e:
        await store.reserve(reservation(2, 50), minimum=1, quota=100)
    assert (e.value.used, e.value.adding) == (100, 1)
    # An empty want always fits; growing it gets nothing while the quota is full.
    assert await store.reserve(reservation(3, 0), minimum=0, quota=100) == (0, 100)
    assert await store.grow_reservation("rsv-3", "t", 5, quota=100) == (0, 100)
    # Other tenants are not counted; no quota grants everything.
    assert await store.reserve(reservation(4, 500, tenant="u"), minimum=500, quota=None) == (500, 0)
    # Releasing gives the bytes back at once.
    assert await store.release_reservation("rsv-1") and not await store.release_reservation("rsv-1")
    assert await store.grow_reservation("rsv-3", "t", 5, quota=100) == (5, 70)
    # A released reservation cannot grow again.
    assert (await store.grow_reservation("rsv-1", "t", 5, quota=100))[0] == 0


async def test_commit_converts_the_reservation_into_the_file(store):
    assert (await store.reserve(reservation(1, 60), minimum=60, quota=100))[0] == 60
    await store.locate_reservation("rsv-1", {"file_id": "file-1"})
    assert (await store.reservations())[0].location == {"file_id": "file-1"}
    # Its own reservation does not count against the file it becomes.
    await store.add_file(rec(1, size=60), quota=100, reservation="rsv-1")
    assert await store.reservations() == []
    assert await store.tenant_usage("t") == 60
    with pytest.raises(QuotaExceeded):
        await store.reserve(reservation(2, 50), minimum=50, quota=100)
    # A failed commit keeps the reservation (released by the upload's finally, not lost).
    await store.reserve(reservation(3, 40), minimum=40, quota=100)
    with pytest.raises(QuotaExceeded):
        await store.add_file(rec(3, size=41), quota=100, reservation="rsv-3")
    assert [r.id for r in await store.reservations()] == ["rsv-3"]


async def test_heartbeats_refresh_only_the_owners_rows(store):
    await store.reserve(reservation(1, 1, owner="h:1:a"), minimum=0, quota=None)
    await store.reserve(reservation(2, 1, owner="h:2:b"), minimum=0, quota=None)
    assert await store.touch_reservations("h:1:a", 99) == 1
    assert {r.id: r.heartbeat for r in await store.reservations()} == {"rsv-1": 99, "rsv-2": 1}


async def test_postgres_cache_survives_a_lost_listener_without_going_stale(pg_database):
    """The LISTEN connection drops (server restart, failover, idle kill): deletes it missed
    must not leave records cached; it reconnects and evictions flow again."""
    await pg_database.reset()
    a, b = open_store(pg_database.url), open_store(pg_database.url)
    await a.open()
    await b.open()
    try:
        for i in (1, 2):
            await a.add_file(rec(i))
            assert await b.get_file(f"file-{i}") is not None  # cached in b
        await a.pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'sluicegate-listen' AND datname = current_database()")
        assert await a.delete_file("file-1") is not None  # b's listener may be gone: no NOTIFY for it
        async def file_1_gone() -> bool:  # b notices the lost connection, bypasses and empties its cache
            return await b.get_file("file-1") is None

        assert await eventually(file_1_gone)
        # Back to listening, then a later delete reaches b's cache again.
        assert await eventually(lambda: b._listening and a._listening)
        assert await b.get_file("file-2") is not None and b._files.get("file-2") is not None
        assert await a.delete_file("file-2") is not None
        await asyncio.wait_for(b.heard_of_deletes(), 10)
        assert b._files.get("file-2") is None and await b.get_file("file-2") is None
    finally:
        await a.close()
        await b.close()


async def test_postgres_pool_and_statement_timeout_are_applied(pg_database):
    await pg_database.reset()
    import asyncpg

    s = open_store(pg_database.url, pool_min=2, pool_max=3, statement_timeout=0.5)
    await s.open()
    try:
        assert (s.pool.get_min_size(), s.pool.get_max_size()) == (2, 3)
        assert await s.pool.fetchval("SHOW statement_timeout") == "500ms"
        with pytest.raises(asyncpg.QueryCanceledError):
            await s.pool.execute("SELECT pg_sleep(5)")
    finally:
        await s.close()


class _FreezableForwarder:
    """A TCP forwarder to PostgreSQL (loopback) that can stop passing bytes on the connection
    that issued LISTEN without closing it: a network partition, as the client sees one."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.frozen = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.serving: set[asyncio.Task] = set()

    async def __aenter__(self) -> "_FreezableForwarder":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.serving:  # the frozen ones would wait forever
            task.cancel()
        await asyncio.gather(*self.serving, return_exceptions=True)

    async def _serve(self, reader, writer) -> None:
        self.serving.add(asyncio.current_task())
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        listening = asyncio.Event()

        async def pipe(src, dst, watch: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if watch and re.search(rb'(?<!UN)LISTEN "', chunk):  # not the pool's "UNLISTEN *"
                        listening.set()
                    if listening.is_set() and self.frozen.is_set():
                        await asyncio.Event().wait()  # hold everything, close nothing
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()  # one side closed (or frozen forever): the other is closed too

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        except asyncio.CancelledError:  # __aexit__: end quietly (asyncio logs a cancelled handler)
            pass


async def test_postgres_listener_that_goes_silent_is_replaced(pg_database):
    """A partition that leaves the LISTEN connection open but dead (no FIN, no notifications)
    is found by the heartbeat: the cache is bypassed, nothing deleted meanwhile is served."""
    await pg_database.reset()
    from proxy.store.postgres import PostgresStore

    a = open_store(pg_database.url)
    await a.open()
    async with _FreezableForwarder(pg_database.port) as fwd:
        b = PostgresStore(pg_database.url.replace(f":{pg_database.port}/", f":{fwd.port}/"), listener_heartbeat=0.2)
        await b.open()
        try:
            await a.add_file(rec(1))
            assert await b.get_file("file-1") is not None and b._files.get("file-1") is not None  # cached in b
            fwd.frozen.set()
            assert await a.delete_file("file-1") is not None  # b's listener will not hear of it
            assert await eventually(lambda: not b._listening)  # a 0.2 s heartbeat
            assert await b.get_file("file-1") is None
        finally:
            await b.close()
            await a.close()


async def test_postgres_concurrent_add_response_share_statements(pg_url):
    """Group commit on PostgreSQL as on SQLite: concurrent add_response calls share one
    multi-row INSERT instead of one round trip + commit each (the responses.create hot path).
    Counted by a statement-level trigger on the table, in the database itself."""
    import asyncpg

    s = open_store(pg_url)
    await s.open()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE insert_statements (n int NOT NULL); INSERT INTO insert_statements VALUES (0);"
            "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN UPDATE insert_statements SET n = n + 1; RETURN NULL; END$$;"
            "CREATE TRIGGER count_insert AFTER INSERT ON responses FOR EACH STATEMENT EXECUTE FUNCTION count_insert()")
        await asyncio.gather(*(s.add_response(ResponseRecord(f"resp_g{i}", "t", "p", "m", i)) for i in range(40)))
        assert await conn.fetchval("SELECT count(*) FROM responses WHERE id LIKE 'resp_g%'") == 40
        assert await conn.fetchval("SELECT n FROM insert_statements") <= 4
    finally:
        await conn.close()
        await s.close()


async def test_postgres_response_records_skip_the_wal_flush_files_do_not(pg_url):
    """Response records are committed (visible to every replica) without waiting for the WAL
    flush; files, reservations and deletes wait for it (the server's default)."""
    s = open_store(pg_url)
    await s.open()
    try:
        assert await s._records.fetchval("SHOW synchronous_commit") == "off"
        assert await s.pool.fetchval("SHOW synchronous_commit") == "on"
        await s.add_response(ResponseRecord("resp_sync", "t", "p", "m", 1))
        other = open_store(pg_url)
        await other.open()
        try:
            assert (await other.get_response("resp_sync")).tenant == "t"  # another replica sees it at once
        finally:
            await other.close()
    finally:
        await s.close()


async def test_an_id_looked_up_before_it_exists_is_found_once_added_anywhere(replicas):
    """SQLite remembers ids it looked up and did not find (an unseen id costs no read until the
    database changes): a record added afterwards — through this store or another worker's on
    the same database — is found at once."""
    a = await replicas()
    b = await replicas()
    assert await a.get_file("file-1") is None
    assert await a.get_file("file-1") is None  # the remembered answer
    await a.add_file(rec(1))
    assert (await a.get_file("file-1")).id == "file-1"
    assert await a.get_file("file-2") is None
    await b.add_file(rec(2))
    assert (await a.get_file("file-2")).id == "file-2"


def turn(i: int, previous: str | None, tenant: str = "t", status: str = "completed"):
    from proxy.store.base import TurnRecord
    return TurnRecord(id=f"resp_{i}", tenant=tenant, previous_id=previous, status=status,
                      input_items=[{"id": f"msg_in{i}", "type": "message", "role": "user", "content": []}],
                      output_items=[{"id": f"msg_out{i}", "type": "message"}],
                      response={"id": f"resp_{i}", "status": status}, events=[{"type": "response.created"}])


async def test_turns_chain_and_delete(replicas):
    a = await replicas()
    b = await replicas()   # another worker / replica on the same database
    for i in range(5):
        await a.add_turn(ResponseRecord(id=f"resp_{i}", tenant="t", provider="claude", model="m", created_at=1),
                         turn(i, f"resp_{i - 1}" if i else None))
    # committed when add_turn returns: the other store reads it at once
    got = await b.get_turn("resp_3")
    assert got == turn(3, "resp_2")
    assert (await b.get_response("resp_3")).provider == "claude"
    chain = await b.get_chain("resp_4", "t")
    assert [t.id for t in chain] == [f"resp_{i}" for i in range(5)]
    assert chain[0].input_items[0]["id"] == "msg_in0" and chain[4].output_items[0]["id"] == "msg_out4"
    assert chain[0].response == {} and chain[0].events is None   # the chain carries only the items
    assert await b.get_chain("resp_4", "other") == []             # another tenant's: nothing
    assert [t.id for t in await b.get_chain("resp_1", "t")] == ["resp_0", "resp_1"]
    # replacing a turn (its final state) keeps one row
    await a.add_turn(ResponseRecord(id="resp_4", tenant="t", provider="claude", model="m", created_at=1),
                     turn(4, "resp_3", status="failed"))
    assert (await b.get_turn("resp_4")).status == "failed"
    # delete is one claim over the record and its turn
    results = await asyncio.gather(a.delete_response("resp_2"), b.delete_response("resp_2"))
    assert sorted(results) == [False, True]
    assert await a.get_turn("resp_2") is None and await b.get_turn("resp_2") is None
    assert [t.id for t in await b.get_chain("resp_4", "t")] == ["resp_3", "resp_4"]   # the chain stops at the gap


async def test_update_turn_only_from_the_statuses_named(replicas):
    a = await replicas()
    b = await replicas()
    running = turn(1, None, status="in_progress")
    running.owner, running.heartbeat = "host:1:x", 5
    await a.add_turn(ResponseRecord(id="resp_1", tenant="t", provider="claude", model="m", created_at=1), running)
    assert (await b.get_turn("resp_1")).owner == "host:1:x"
    cancelled = turn(1, None, status="cancelled")
    assert await b.update_turn(cancelled, only_if=("queued", "in_progress"))
    # the runner's final write loses: the turn was cancelled meanwhile
    assert not await a.update_turn(turn(1, None, status="completed"), only_if=("in_progress",))
    got = await a.get_turn("resp_1")
    assert got.status == "cancelled" and got.owner is None and got.heartbeat == 0
    assert not await a.update_turn(turn(9, None), only_if=("in_progress",))   # no such turn


# -- uploads (the Uploads API) -------------------------------------------------------------


def upload(i: int, size: int = 10, tenant: str = "t", expires_at: int = 5000) -> UploadRecord:
    return UploadRecord(id=f"upload_{i}", tenant=tenant, provider="local", filename="f.bin", purpose="assistants",
                        bytes=size, mime_type="application/octet-stream", created_at=1000, expires_at=expires_at,
                        reservation=f"rsv-{i}")


def part(i: int, upload_id: str, size: int) -> PartRecord:
    return PartRecord(id=f"part_{i}", upload_id=upload_id, bytes=size, created_at=1000 + i,
                      location={"path": f"{upload_id}/part_{i}"})


async def test_upload_rows_and_status_moves(store):
    await store.add_upload(upload(1))
    assert await store.get_upload("upload_1") == upload(1)
    assert await store.get_upload("upload_2") is None
    # One winner among concurrent moves from one status (complete vs cancel, two completes).
    moved = await asyncio.gather(store.move_upload("upload_1", ("pending",), "completing"),
                                 store.move_upload("upload_1", ("pending",), "cancelled"))
    assert sum(m is not None for m in moved) == 1
    winner = next(m for m in moved if m is not None)
    assert (await store.get_upload("upload_1")).status == winner.status
    done = await store.move_upload("upload_1", (winner.status,), "completed", file_id="file-9")
    assert (done.status, done.file_id) == ("completed", "file-9")
    assert await store.move_upload("upload_1", ("pending",), "cancelled") is None


async def test_parts_only_while_pending_and_within_the_declared_size(replicas):
    a, b = await replicas(), await replicas()  # two workers / replicas on one database
    await a.add_upload(upload(1, size=100))
    # Concurrent parts from two replicas: together they never pass the declared 100 bytes.
    results = await asyncio.gather(*((a if i % 2 else b).add_part(part(i, "upload_1", 30), max_total=100, max_parts=5)
                                     for i in range(6)))
    assert sorted(results) == ["ok"] * 3 + ["too_large"] * 3
    assert sum(p.bytes for p in await b.upload_parts("upload_1")) == 90
    # At most max_parts parts, whatever their size (empty parts too).
    assert [await a.add_part(part(20 + i, "upload_1", 0), max_total=100, max_parts=5) for i in range(3)] == \
        ["ok", "ok", "too_many"]
    assert await a.add_part(part(9, "upload_nope", 1), max_total=100, max_parts=5) == "not_pending"
    await b.move_upload("upload_1", ("pending",), "cancelled")
    assert await a.add_part(part(10, "upload_1", 1), max_total=100, max_parts=5) == "not_pending"
    gone = await a.delete_parts("upload_1")
    assert len(gone) == 5 and gone[0].location["path"].startswith("upload_1/")
    assert await b.upload_parts("upload_1") == [] and await b.delete_parts("upload_1") == []


async def test_expired_uploads_and_purge(store):
    await store.add_upload(upload(1, expires_at=100))
    await store.add_upload(upload(2, expires_at=100))
    await store.add_upload(upload(3, expires_at=9000))
    await store.move_upload("upload_2", ("pending",), "completed")
    assert [u.id for u in await store.expired_uploads(200)] == ["upload_1"]
    await store.move_upload("upload_1", ("pending",), "completing")
    assert [u.id for u in await store.expired_uploads(200)] == ["upload_1"]  # a complete that may have died
    await store.move_upload("upload_1", ("completing",), "expired")
    assert await store.purge_uploads(150) == 2
    assert [u is None for u in [await store.get_upload(f"upload_{i}") for i in (1, 2, 3)]] == [True, True, False]
