"""The expiry sweeper on several replicas at once: each expired file is claimed by exactly one,
its bytes removed once; a file whose bytes cannot be removed stays (for the next sweep)."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from proxy.config import parse_config
from proxy.gateway import Gateway
from proxy.store.base import FileRecord

EXPIRED = 40


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sweep.db"
    db = request.getfixturevalue("pg_database")
    await db.reset()
    return db.url


async def test_replicas_sweep_each_expired_file_once(store_url, tmp_path):
    shared = tmp_path / "shared-files"  # one filesystem for both replicas' local provider
    cfg = {"store": {"url": store_url}, "server": {"data_dir": str(tmp_path / "data")},
           "providers": [{"name": "local", "type": "local", "path": str(shared)}]}
    a, b = Gateway(parse_config(cfg, env={})), Gateway(parse_config(cfg, env={}))
    await a.start()
    await b.start()
    try:
        past = int(time.time()) - 10
        for i in range(EXPIRED + 2):
            (shared / f"file-{i}").write_bytes(b"x" * 5)
            await a.store.add_file(FileRecord(id=f"file-{i}", tenant="t", provider="local", filename="f",
                                              purpose="batch", bytes=5, created_at=past,
                                              location={"path": f"file-{i}"},
                                              expires_at=past if i < EXPIRED else None))
        # A file whose bytes cannot be removed (a directory where the file should be) is kept.
        (shared / "file-0").unlink()
        (shared / "file-0").mkdir()
        removed = await asyncio.gather(a.sweep_expired(), b.sweep_expired(), a.sweep_expired(), b.sweep_expired())
        assert sum(removed) == EXPIRED - 1
        assert sorted(n for n in os.listdir(shared) if n.startswith("file-")) == sorted(["file-0", f"file-{EXPIRED}", f"file-{EXPIRED + 1}"])
        assert [r.id for r in await b.store.expired_files(int(time.time()))] == ["file-0"]
        assert await a.store.tenant_usage("t") == 15
    finally:
        await a.close()
        await b.close()
