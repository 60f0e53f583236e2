"""DiskPartStore (proxy/upload_parts.py's contract on the gateway's disk): parts written through
their sinks, read back in any order, composed in the kernel (copy_file_range, else sendfile),
deleted idempotently with their upload's directory."""
from __future__ import annotations

import errno
import os

import pytest

from proxy.providers.local import DiskPartStore
from proxy.upload_parts import PartRef


async def _parts(store: DiskPartStore, upload_id: str, pieces: list[bytes]) -> list[PartRef]:
    refs = []
    for i, data in enumerate(pieces):
        sink = store.open_part(upload_id, f"part_{i}")
        await sink.write(data[: len(data) // 2])
        await sink.write(data[len(data) // 2:])
        result = await sink.complete()
        refs.append(PartRef(part_id=f"part_{i}", bytes=result.bytes, location=result.location))
    return refs


@pytest.mark.parametrize("kernel_copy", ["copy_file_range", "sendfile"])
async def test_parts_read_composed_and_deleted(tmp_path, monkeypatch, kernel_copy):
    if kernel_copy == "sendfile":  # a kernel or filesystem without copy_file_range across these files
        def refuse(*_a: object, **_k: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    dest = tmp_path / "files"
    (dest / ".partial").mkdir(parents=True)
    store = DiskPartStore(str(tmp_path / "parts"), str(dest))
    pieces = [os.urandom(300_000), b"", os.urandom(5)]
    refs = await _parts(store, "upload_a", pieces)
    assert [r.bytes for r in refs] == [300_000, 0, 5] and refs[0].location == {"path": "upload_a/part_0"}
    order = [refs[2], refs[0], refs[1]]
    assert b"".join([c async for c in store.read(order, chunk_size=4096)]) == pieces[2] + pieces[0]
    result = await store.compose(order, {"file_id": "file-x"})
    assert result.bytes == 300_005 and result.location == {"path": "file-x"}
    assert (dest / "file-x").read_bytes() == pieces[2] + pieces[0]
    assert os.listdir(dest / ".partial") == []
    assert store.upload_ids() == ["upload_a"]
    await store.delete(refs)
    await store.delete(refs)  # idempotent
    assert store.upload_ids() == [] and (dest / "file-x").exists()  # the composed file stays


async def test_an_aborted_part_leaves_nothing_and_remove_upload_takes_the_rest(tmp_path):
    store = DiskPartStore(str(tmp_path / "parts"))
    sink = store.open_part("upload_b", "part_1")
    await sink.write(b"half")
    await sink.abort()
    assert os.listdir(tmp_path / "parts" / "upload_b") == []
    await _parts(store, "upload_b", [b"kept"])
    store.open_part("upload_b", "part_2")  # being written when its upload ends
    store.remove_upload("upload_b")
    store.remove_upload("../parts")  # never outside the store
    assert store.upload_ids() == [] and (tmp_path / "parts").is_dir()
