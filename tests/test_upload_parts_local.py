"""The ``local`` provider's part store (proxy/providers/parts_local.py) on a real temporary disk."""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import stat
import threading
from pathlib import Path

import pytest

from proxy.errors import GatewayError
from proxy.providers import parts_local
from proxy.providers.configs import LocalConfig
from proxy.providers.local import LocalProvider
from proxy.providers.parts_local import LocalPartStore
from proxy.upload_parts import PartRef
from tests.unit.fakes import exchange

MiB = 1 << 20
SIZES = [0, 1, 5 * MiB - 1, 5 * MiB, 3 * MiB + 17, 64 << 10]


async def write_part(store: LocalPartStore, upload_id: str, part_id: str, data: bytes,
                     chunk: int = (64 << 10) + 3) -> PartRef:
    sink = store.open_part(upload_id, part_id)
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        await sink.write(view[start:start + chunk])
    result = await sink.complete()
    return PartRef(part_id, result.bytes, result.location)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def store(tmp_path: Path) -> LocalPartStore:
    provider = LocalProvider(LocalConfig(name="local", path=str(tmp_path / "files")))
    part_store = provider.part_store(exchange())
    assert isinstance(part_store, LocalPartStore)
    os.makedirs(part_store.partial_dir)   # the provider's start() creates it
    return part_store


async def test_parts_compose_and_read_back_in_the_given_order(store: LocalPartStore, tmp_path: Path) -> None:
    rnd = random.Random(7)
    blobs = [rnd.randbytes(n) for n in SIZES]
    refs = [await write_part(store, "upload_a", f"part_{i}", blob) for i, blob in enumerate(blobs)]
    assert [r.bytes for r in refs] == SIZES
    part_file = tmp_path / "files" / ".uploads" / "upload_a" / "part_3"
    assert stat.S_IMODE(part_file.stat().st_mode) == 0o600

    order = [refs[i] for i in (3, 0, 5, 1, 4, 2)]
    expected = b"".join(blobs[i] for i in (3, 0, 5, 1, 4, 2))
    dest = store.destination("file-abc", tenant="t", filename="x.jsonl", purpose="batch")
    result = await store.compose(order, dest)
    assert result.bytes == len(expected) and result.location == {"path": "file-abc"}
    final = tmp_path / "files" / "file-abc"
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert os.listdir(store.partial_dir) == []

    pieces = [chunk async for chunk in store.read(order, chunk_size=MiB)]
    assert max(len(p) for p in pieces) <= MiB
    assert b"".join(pieces) == expected

    await store.delete(refs)
    assert not (tmp_path / "files" / ".uploads" / "upload_a").exists()
    await store.delete(refs)  # idempotent
    assert final.exists()      # the composed file is the provider's, not a part


async def test_abort_of_a_part_leaves_nothing(store: LocalPartStore, tmp_path: Path) -> None:
    sink = store.open_part("upload_b", "part_1")
    await sink.write(b"x" * 1000)
    await sink.abort()
    await sink.abort()
    assert files_under(tmp_path / "files" / ".uploads") == []


async def test_abort_keeps_the_other_parts_of_the_upload(store: LocalPartStore, tmp_path: Path) -> None:
    kept = await write_part(store, "upload_c", "part_1", b"kept")
    sink = store.open_part("upload_c", "part_2")
    await sink.write(b"gone")
    await sink.abort()
    assert files_under(tmp_path / "files" / ".uploads") == ["upload_c", "upload_c/part_1"]
    assert b"".join([c async for c in store.read([kept])]) == b"kept"


async def test_remove_upload_takes_parts_being_written_and_nothing_outside(store: LocalPartStore,
                                                                          tmp_path: Path) -> None:
    await write_part(store, "upload_d", "part_1", b"kept")
    writing = store.open_part("upload_d", "part_2")   # still streaming when its upload ends
    await writing.write(b"half")
    other = await write_part(store, "upload_e", "part_1", b"other")
    assert store.upload_ids() == ["upload_d", "upload_e"]
    store.remove_upload("upload_d")
    store.remove_upload("..")          # not an upload id: nothing outside the store goes
    store.remove_upload("../files")
    assert store.upload_ids() == ["upload_e"] and (tmp_path / "files").is_dir()
    with pytest.raises(FileNotFoundError):   # the flow answers such a part with the cancel
        await writing.complete()
    assert b"".join([c async for c in store.read([other])]) == b"other"


async def test_spool_store_keeps_parts_in_its_own_directory(tmp_path: Path) -> None:
    spool = LocalPartStore(str(tmp_path), uploads=str(tmp_path / "uploads"))
    ref = await write_part(spool, "upload_f", "part_1", b"spooled")
    assert (tmp_path / "uploads" / "upload_f" / "part_1").read_bytes() == b"spooled"
    assert spool.upload_ids() == ["upload_f"] and not (tmp_path / ".uploads").exists()
    assert b"".join([c async for c in spool.read([ref])]) == b"spooled"


async def test_compose_of_a_missing_part_leaves_no_file(store: LocalPartStore, tmp_path: Path) -> None:
    a = await write_part(store, "upload_d", "part_1", b"a" * 100)
    ghost = PartRef("part_2", 10, {"path": "upload_d/part_2"})
    with pytest.raises(GatewayError) as e:
        await store.compose([a, ghost], {"path": "file-d"})
    assert e.value.code == "upload_part_missing"
    assert not (tmp_path / "files" / "file-d").exists() and os.listdir(store.partial_dir) == []
    with pytest.raises(GatewayError):
        _ = [c async for c in store.read([a, ghost])]


async def test_a_part_shorter_than_recorded_is_refused(store: LocalPartStore, tmp_path: Path) -> None:
    a = await write_part(store, "upload_e", "part_1", b"a" * 100)
    short = PartRef(a.part_id, 101, a.location)
    with pytest.raises(GatewayError):
        await store.compose([short], {"path": "file-e"})
    with pytest.raises(GatewayError):
        _ = [c async for c in store.read([short])]
    assert not (tmp_path / "files" / "file-e").exists() and os.listdir(store.partial_dir) == []


async def test_cancelled_compose_leaves_no_file(store: LocalPartStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [await write_part(store, "upload_f", f"part_{i}", bytes([i]) * MiB) for i in range(3)]
    copying, release = threading.Event(), threading.Event()
    real_copy = parts_local._copy

    def slow_copy(*args: object) -> None:   # the real copy, held at its start until released
        copying.set()
        release.wait(10)
        real_copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(parts_local, "_copy", slow_copy)
    task = asyncio.ensure_future(store.compose(parts, {"path": "file-f"}))
    assert await asyncio.to_thread(copying.wait, 10)
    task.cancel()
    await asyncio.sleep(0)   # the cancellation reaches compose, which sets the stop flag
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "files" / "file-f").exists() and os.listdir(store.partial_dir) == []


@pytest.mark.parametrize("refuse", [("copy_file_range",), ("copy_file_range", "sendfile")],
                         ids=["sendfile", "buffered"])
async def test_fallbacks_copy_the_same_bytes(store: LocalPartStore, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, refuse: tuple[str, ...]) -> None:
    def unsupported(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    for name in refuse:
        monkeypatch.setattr(parts_local.os, name, unsupported)
    blobs = [random.Random(i).randbytes(n) for i, n in enumerate((3 * MiB + 5, 1, 2 * MiB))]
    refs = [await write_part(store, "upload_g", f"part_{i}", b) for i, b in enumerate(blobs)]
    result = await store.compose(refs, {"path": "file-g"})
    assert (tmp_path / "files" / "file-g").read_bytes() == b"".join(blobs) and result.bytes == sum(map(len, blobs))


async def test_compose_of_no_parts_is_an_empty_file(store: LocalPartStore, tmp_path: Path) -> None:
    result = await store.compose([], {"path": "file-h"})
    assert result.bytes == 0 and (tmp_path / "files" / "file-h").read_bytes() == b""


def test_ids_must_be_safe_path_segments(store: LocalPartStore) -> None:
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            store.open_part(bad, "part_1")
        with pytest.raises(ValueError):
            store.open_part("upload_1", bad)
    with pytest.raises(ValueError):
        store.destination("../etc", tenant="t", filename="f", purpose="batch")
