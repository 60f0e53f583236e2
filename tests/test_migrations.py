"""The versioned schema: shared migrations, an unversioned database adopted, a newer one refused,
one transaction per upgrade, and replicas that start together migrating once."""
from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
import yaml

from proxy.store import migrations, open_store
from proxy.store.migrations import LATEST, Migration, SchemaTooNew
from tests.gateway_proc import free_port
from tests.support import eventually
from tests.test_startup import failure_lines, sluicegate

# The schema sluicegate created before it was versioned (proxy/store/sqlite.py up to f64dcc8).
UNVERSIONED_SQLITE_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    owner TEXT NOT NULL,
    provider TEXT NOT NULL,
    location TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_tenant ON reservations (tenant);
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"
    db = request.getfixturevalue("pg_database")
    await db.reset()
    return db.url


async def query(url: str, sql: str) -> list[tuple]:
    """Read the database directly, not through a store."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            return conn.execute(sql).fetchall()
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def opened(url: str):
    s = open_store(url)
    try:
        await s.open()
    except BaseException:
        await s.close()
        raise
    return s


async def test_a_database_made_before_versioning_is_adopted_and_upgraded(tmp_path):
    path = tmp_path / "sluicegate.db"
    with sqlite3.connect(path) as old:
        old.executescript(UNVERSIONED_SQLITE_SCHEMA)
        old.execute("INSERT INTO files (id, tenant, provider, upstream_id, location, filename, purpose, bytes,"
                    " created_at, expires_at, status) VALUES ('file-old', 't', 'local', NULL, '{\"path\": \"x\"}',"
                    " 'a.jsonl', 'batch', 42, 1000, NULL, 'processed')")
        old.execute("INSERT INTO responses VALUES ('resp_old', 't', 'p', 'm', 5)")
    old.close()
    url = f"sqlite:///{path}"
    s = await opened(url)
    try:
        rec = await s.get_file("file-old")
        assert (rec.bytes, rec.location, rec.tenant) == (42, {"path": "x"}, "t")
        assert (await s.get_response("resp_old")).model == "m"
        assert await s.tenant_usage("t") == 42
        from tests.test_store import rec as new_rec
        await s.add_file(new_rec(1))  # seq continues after the old rows
        page, _ = await s.list_files("t", purpose=None, limit=10, order="asc", after=None)
        assert [r.id for r in page] == ["file-old", "file-1"]
    finally:
        await s.close()
    assert await query(url, "SELECT version FROM schema_version") == [(LATEST,)]
    assert await query(url, "SELECT name FROM sqlite_master WHERE name = 'files_expires'") == [("files_expires",)]


async def test_a_newer_schema_is_refused(db_url):
    s = await opened(db_url)  # creates the schema at LATEST
    await s.close()
    await _set_version(db_url, LATEST + 1)
    with pytest.raises(SchemaTooNew) as info:
        await opened(db_url)
    assert str(info.value) == (f"database schema version {LATEST + 1} is newer than this sluicegate knows ({LATEST}); "
                               "run the newer sluicegate, or restore a backup made for this version")


async def _set_version(url: str, version: int) -> None:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.close()
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE schema_version SET version = $1", version)
    finally:
        await conn.close()


def test_gateway_on_a_newer_schema_exits_with_one_line(tmp_path):
    path = tmp_path / "gw.db"
    with sqlite3.connect(path) as conn:
        conn.execute(migrations.CREATE_VERSION_TABLE)
        conn.execute("INSERT INTO schema_version VALUES (?)", (LATEST + 5,))
    conn.close()
    cfg = tmp_path / "store.yaml"
    url = f"sqlite:///{path}"
    cfg.write_text(yaml.safe_dump({"store": {"url": url}}))
    r = sluicegate(["--config", str(cfg), "--port", str(free_port())], tmp_path / "cwd")
    assert r.returncode == 1
    assert failure_lines(r.stderr) == [
        f"sluicegate: cannot open store {url}: database schema version {LATEST + 5} is newer than this sluicegate "
        f"knows ({LATEST}); run the newer sluicegate, or restore a backup made for this version"]
    assert "Traceback" not in r.stderr


async def test_replicas_starting_together_migrate_once(db_url):
    stores = await asyncio.gather(*(opened(db_url) for _ in range(6)))
    try:
        assert await query(db_url, "SELECT version FROM schema_version") == [(LATEST,)]
        from tests.test_store import rec
        await stores[0].add_file(rec(1))
        assert all([(await s.get_file("file-1")) is not None for s in stores])
    finally:
        for s in stores:
            await s.close()


async def test_an_upgrade_is_one_transaction(db_url, monkeypatch):
    """A step that fails leaves the database as it was: no half-applied upgrade, the version
    unchanged; the next start (with the step fixed) applies it whole."""
    s = await opened(db_url)
    await s.close()
    both = ("CREATE TABLE extra (x INTEGER)", "CREATE INDEX extra_x ON extra (no_such_column)")
    broken = Migration(LATEST + 1, "broken", sqlite=both, postgres=both)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST", LATEST + 1)
    with pytest.raises((sqlite3.Error, asyncpg.PostgresError)):
        await opened(db_url)
    assert await query(db_url, "SELECT version FROM schema_version") == [(LATEST,)]
    with pytest.raises((sqlite3.Error, asyncpg.PostgresError)):
        await query(db_url, "SELECT * FROM extra")
    fixed = ("CREATE TABLE extra (x INTEGER)", "CREATE INDEX extra_x ON extra (x)")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:-1], Migration(LATEST + 1, "fixed", fixed, fixed)))
    s = await opened(db_url)
    await s.close()
    assert await query(db_url, "SELECT version FROM schema_version") == [(LATEST + 1,)]
    assert await query(db_url, "SELECT * FROM extra") == []


async def test_postgres_replicas_wait_for_a_migration_longer_than_the_statement_timeout(pg_database):
    """A replica starting while another holds the migration lock waits for it, even past
    store.statement_timeout (which bounds ordinary statements only)."""
    await pg_database.reset()
    holder = await asyncpg.connect(pg_database.url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1, $2)", *migrations.PG_MIGRATION_LOCK)
        s = open_store(pg_database.url, statement_timeout=0.2)
        opening = asyncio.ensure_future(s.open())

        async def waited_three_timeouts() -> bool:
            # By the server's clock: the replica's lock wait has lasted three statement timeouts
            # (one applied to it would have cancelled it by then). Asked on a connection of its
            # own, outside a transaction: pg_stat_activity is a snapshot per transaction.
            return bool(await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                " AND datname = current_database() AND now() - query_start > interval '600 milliseconds'"))

        watcher = await asyncpg.connect(pg_database.url)
        try:
            assert await eventually(waited_three_timeouts, timeout=30)
        finally:
            await watcher.close()
        assert not opening.done()
        await tx.rollback()
        await asyncio.wait_for(opening, 30)
        await s.close()
    finally:
        await holder.close()
    assert await query(pg_database.url, "SELECT version FROM schema_version") == [(LATEST,)]
