"""The store's batch rows and adopted (batch output) files, on SQLite and PostgreSQL alike:
cursor listing per tenant, state updates that survive a reopen, and the poll claim that lets
replicas ask a provider at most once per interval per batch."""
from __future__ import annotations

import asyncio

from proxy.store.base import BatchRecord, FileRecord
from tests.test_store import replicas, store  # noqa: F401 - the parametrised (sqlite, postgres) fixtures


def batch(i: int, tenant: str = "t") -> BatchRecord:
    return BatchRecord(id=f"batch_{i}", tenant=tenant, provider="p", input_file_id=f"file-{i}",
                       endpoint="/v1/chat/completions", completion_window="24h", created_at=1000 + i,
                       metadata={"k": str(i)}, job={"arn": f"job-{i}", "nested": [1, {"x": None}]})


async def test_batches_list_newest_first_with_cursor_per_tenant(store):
    for i in range(5):
        await store.add_batch(batch(i))
    await store.add_batch(batch(99, tenant="other"))
    page, more = await store.list_batches("t", limit=2, after=None)
    assert [b.id for b in page] == ["batch_4", "batch_3"] and more
    page, more = await store.list_batches("t", limit=2, after="batch_3")
    assert [b.id for b in page] == ["batch_2", "batch_1"] and more
    page, more = await store.list_batches("t", limit=2, after="batch_1")
    assert [b.id for b in page] == ["batch_0"] and not more
    # Another tenant's batch is no cursor; nor is an unknown id.
    assert await store.list_batches("t", limit=10, after="batch_99") == ([], False)
    assert await store.list_batches("t", limit=10, after="batch_nope") == ([], False)
    assert [b.id for b in (await store.list_batches("other", limit=10, after=None))[0]] == ["batch_99"]


async def test_batch_state_round_trips_and_survives_reopen(replicas):
    s = await replicas()
    b = batch(1)
    await s.add_batch(b)
    assert await s.get_batch("batch_1") == b
    b.status, b.output_file_id, b.error_file_id = "completed", "file-out", "file-err"
    b.job = {"arn": "job-1", "done": True}
    b.timestamps = {"completed_at": 1234, "in_progress_at": 1200}
    b.request_counts = {"total": 3, "completed": 2, "failed": 1}
    b.errors = [{"code": "x", "message": "y", "line": 2, "param": None}]
    assert await s.update_batch(b)
    await s.close()
    again = await replicas()
    got = await again.get_batch("batch_1")
    assert got is not None and got.polled_at is None
    assert got == b
    assert await again.get_batch("batch_2") is None


async def test_poll_claim_is_granted_once_per_interval_across_replicas(replicas):
    a, b = await replicas(), await replicas()
    await a.add_batch(batch(1))
    results = await asyncio.gather(*(s.claim_batch_poll("batch_1", 10_000, 1000) for s in (a, b, a, b)))
    assert sorted(results) == [False, False, False, True]
    assert not await b.claim_batch_poll("batch_1", 10_999, 1000)  # within the interval
    assert await b.claim_batch_poll("batch_1", 11_000, 1000)
    assert (await a.get_batch("batch_1")).polled_at == 11_000
    assert not await a.claim_batch_poll("batch_nope", 99_000, 1000)


async def test_adopt_file_inserts_once_and_keeps_the_first_owner(replicas):
    a, b = await replicas(), await replicas()
    out = FileRecord(id="file-out", tenant="t", provider="p", filename="out.jsonl", purpose="batch_output",
                     bytes=7, created_at=5, upstream_id="file-out")
    results = await asyncio.gather(a.adopt_file(out), b.adopt_file(out))
    assert sorted(results) == [False, True]
    thief = FileRecord(id="file-out", tenant="other", provider="p", filename="x", purpose="batch_output",
                       bytes=1, created_at=6)
    assert not await a.adopt_file(thief)
    got = await b.get_file("file-out")
    assert got is not None and got.tenant == "t" and got.bytes == 7 and got.purpose == "batch_output"


async def test_an_ended_batch_is_final(replicas):
    """A slower poll of another replica, answering from before the end, never undoes it."""
    a, b = await replicas(), await replicas()
    await a.add_batch(batch(1))
    stale = await b.get_batch("batch_1")
    ended = await a.get_batch("batch_1")
    ended.status, ended.output_file_id = "completed", "file-out"
    assert await a.update_batch(ended)
    stale.status = "in_progress"
    assert not await b.update_batch(stale)
    got = await b.get_batch("batch_1")
    assert (got.status, got.output_file_id) == ("completed", "file-out")
