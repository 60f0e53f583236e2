"""``store.get_file`` by id, cached and uncached, on SQLite and on PostgreSQL (µs per lookup).

    python bench/store_lookup.py [--n 2000]

PostgreSQL: the local Debian cluster (tests/pg.py starts it if it is down, as root), a scratch
role and database, dropped at the end. The hot path of files.retrieve/content is one such
lookup; an uncached lookup is one indexed query.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.store import open_store  # noqa: E402
from proxy.store.base import FileRecord  # noqa: E402
from tests import pg  # noqa: E402


async def lookups(url: str, n: int) -> tuple[float, float]:
    store = open_store(url)
    await store.open()
    try:
        await store.add_file(FileRecord(id="file-x", tenant="t", provider="local", filename="f",
                                        purpose="batch", bytes=1, created_at=1))
        await store.get_file("file-x")
        start = time.perf_counter()
        for _ in range(n):
            await store.get_file("file-x")
        cached = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for _ in range(n):
            store._files.clear()  # every lookup a miss
            await store.get_file("file-x")
        uncached = (time.perf_counter() - start) / n
        return cached * 1e6, uncached * 1e6
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as scratch:
        results = {"sqlite": await lookups(f"sqlite:///{scratch}/bench.db", n)}
    db = pg.create_database()
    try:
        await db.reset()
        results["postgresql"] = await lookups(db.url, n)
    finally:
        pg.drop_database(db)
    print(f"{'store':<12}{'cached µs':>12}{'uncached µs':>14}")
    for name, (cached, uncached) in results.items():
        print(f"{name:<12}{cached:>12.1f}{uncached:>14.1f}")


if __name__ == "__main__":
    asyncio.run(main())
