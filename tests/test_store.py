"""The SQLite store: quota atomicity, pagination cursors, group-committed responses."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proxy.store.base import FileRecord, QuotaExceeded, ResponseRecord
from proxy.store.sqlite import SQLiteStore


def rec(i: int, tenant: str = "t", size: int = 10, purpose: str = "batch") -> FileRecord:
    return FileRecord(id=f"file-{i}", tenant=tenant, provider="local", filename=f"{i}.jsonl", purpose=purpose,
                      bytes=size, created_at=1000 + i)


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "s.db"))
    await s.open()
    yield s
    await s.close()


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


async def test_responses_survive_reopen(tmp_path):
    s = SQLiteStore(str(tmp_path / "r.db"))
    await s.open()
    for i in range(50):
        await s.add_response(ResponseRecord(f"resp_{i}", "t", "p", "m", i))
    assert (await s.get_response("resp_7")).tenant == "t"  # visible at once
    assert await s.delete_response("resp_8")
    await s.close()
    s2 = SQLiteStore(str(tmp_path / "r.db"))
    await s2.open()
    assert (await s2.get_response("resp_49")).model == "m"
    assert await s2.get_response("resp_8") is None
    await s2.close()


async def test_add_response_returns_only_once_committed(tmp_path):
    """Read back from a second connection right after add_response: the record is in the
    database, not only in this process's cache; concurrent writers share commits."""
    path = str(tmp_path / "d.db")
    s = SQLiteStore(path)
    await s.open()
    other = sqlite3.connect(path)

    def in_db(rid: str) -> bool:
        return other.execute("SELECT 1 FROM responses WHERE id = ?", (rid,)).fetchone() is not None

    await s.add_response(ResponseRecord("resp_one", "t", "p", "m", 1))
    assert in_db("resp_one")
    await asyncio.gather(*(s.add_response(ResponseRecord(f"resp_c{i}", "t", "p", "m", i)) for i in range(40)))
    assert all(in_db(f"resp_c{i}") for i in range(40))
    # A writer whose record is deleted before its commit still returns; the record stays gone.
    writer = asyncio.ensure_future(s.add_response(ResponseRecord("resp_gone", "t", "p", "m", 1)))
    await asyncio.sleep(0)
    assert await s.delete_response("resp_gone")
    await asyncio.wait_for(writer, 5)
    assert not in_db("resp_gone") and await s.get_response("resp_gone") is None
    other.close()
    await s.close()


async def test_delete_is_a_claim_one_winner_across_connections(tmp_path):
    """Two stores on one file are two workers: each caches the record, both delete it at once;
    exactly one gets it, and neither serves it from its cache afterwards."""
    a, b = SQLiteStore(str(tmp_path / "w.db")), SQLiteStore(str(tmp_path / "w.db"))
    await a.open()
    await b.open()
    try:
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
    finally:
        await a.close()
        await b.close()


async def test_cache_never_serves_a_record_another_worker_deleted(tmp_path):
    a, b = SQLiteStore(str(tmp_path / "c.db")), SQLiteStore(str(tmp_path / "c.db"))
    await a.open()
    await b.open()
    try:
        await a.add_file(rec(1))
        await a.add_file(rec(2))
        assert (await b.get_file("file-1")) is not None and (await b.get_file("file-2")) is not None  # cached in b
        assert await a.delete_file("file-1") is not None
        assert await b.get_file("file-1") is None
        assert (await b.get_file("file-2")).id == "file-2"  # still there, re-read
    finally:
        await a.close()
        await b.close()
