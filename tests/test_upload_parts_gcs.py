"""The ``gcs``/``vertex`` part store (proxy/providers/parts_gcs.py) against the real fake-gcs-server."""
from __future__ import annotations

import hashlib
import random
from typing import AsyncIterator

import pytest

from proxy.errors import GatewayError
from proxy.providers import parts_gcs
from proxy.providers.configs import GcsConfig, VertexConfig
from proxy.providers.gcs import GCSProvider
from proxy.providers.parts_gcs import GCSPartStore
from proxy.providers.vertex import VertexProvider
from proxy.upload_parts import PartRef
from tests.emulator_gcs import FakeGCS, fake_gcs, gcs_bucket  # noqa: F401  (fixtures)
from tests.unit.fakes import exchange

KiB, MiB = 1 << 10, 1 << 20
PREFIX = "pfx/"


@pytest.fixture
async def provider(fake_gcs: FakeGCS, gcs_bucket: str) -> AsyncIterator[GCSProvider]:  # noqa: F811
    p = GCSProvider(GcsConfig(name="g", bucket=gcs_bucket, prefix=PREFIX, endpoint_url=fake_gcs.api_root,
                              upload_chunk_size=MiB))
    await p.start()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def store(provider: GCSProvider) -> GCSPartStore:
    s = provider.part_store(exchange())
    assert isinstance(s, GCSPartStore) and s.bucket == provider.bucket
    return s


async def write_part(store: GCSPartStore, upload_id: str, part_id: str, data: bytes,
                     chunk: int = (64 << 10) + 3) -> PartRef:
    sink = store.open_part(upload_id, part_id)
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        await sink.write(view[start:start + chunk])
    result = await sink.complete()
    return PartRef(part_id, result.bytes, result.location)


async def names(provider: GCSProvider, prefix: str = "") -> list[str]:
    assert provider.storage is not None
    listing = await provider.storage.list_objects(provider.bucket, params={"prefix": prefix} if prefix else None)
    return sorted(item["name"] for item in listing.get("items", []))


async def sha256_of(provider: GCSProvider, name: str) -> str:
    digest = hashlib.sha256()
    assert provider.storage is not None
    stream = await provider.storage.download_stream(provider.bucket, name)
    async with stream:
        while piece := await stream.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


async def test_parts_compose_and_read_back_in_the_given_order(provider: GCSProvider, store: GCSPartStore) -> None:
    sizes = [0, 1, 300 * KiB, 5 * MiB, 2 * MiB + 3, 5 * MiB - 1]
    blobs = [random.Random(n).randbytes(n) for n in sizes]
    refs = [await write_part(store, "upload_mix", f"part_{i}", b) for i, b in enumerate(blobs)]
    assert refs[3].location["name"] == f"{PREFIX}uploads/upload_mix/part_3" and refs[3].location["generation"]
    order = [refs[i] for i in (4, 0, 3, 1, 5, 2)]
    expected = b"".join(blobs[i] for i in (4, 0, 3, 1, 5, 2))

    dest = store.destination("file-mix", tenant="team-a", filename="data.jsonl", purpose="batch")
    assert dest["name"] == f"{PREFIX}team-a/file-mix/data.jsonl"
    result = await store.compose(order, dest)
    assert result.bytes == len(expected)
    assert result.location["bucket"] == provider.bucket and result.location["name"] == dest["name"]
    assert await sha256_of(provider, dest["name"]) == hashlib.sha256(expected).hexdigest()
    assert provider.storage is not None
    meta = await provider.storage.download_metadata(provider.bucket, dest["name"])
    assert meta["contentType"] == "application/jsonl"
    assert meta["metadata"] == {"file_id": "file-mix", "purpose": "batch", "filename": "data.jsonl",
                                "tenant": "team-a"}

    read = [c async for c in store.read(order, chunk_size=MiB)]
    assert max(map(len, read)) <= MiB and hashlib.sha256(b"".join(read)).hexdigest() == hashlib.sha256(expected).hexdigest()

    await store.delete(refs)
    assert await names(provider) == [dest["name"]]
    await store.delete(refs)  # idempotent


@pytest.mark.parametrize("count,group", [(33, 32), (70, 32), (23, 4)],
                         ids=["33-parts", "70-parts", "23-parts-in-groups-of-4"])
async def test_more_parts_than_one_compose_takes(provider: GCSProvider, store: GCSPartStore,
                                                 monkeypatch: pytest.MonkeyPatch, count: int, group: int) -> None:
    """More than 32 sources go through rounds of intermediate objects, which are then removed
    (groups of 4: three rounds, 23 → 6 → 2 → the file)."""
    monkeypatch.setattr(parts_gcs, "MAX_COMPOSE_SOURCES", group)
    blobs = [random.Random(i).randbytes(random.Random(i).randrange(1, 3000)) for i in range(count)]
    refs = [await write_part(store, f"upload_{count}", f"part_{i:03}", b) for i, b in enumerate(blobs)]
    dest = store.destination("file-many", tenant="t", filename="f.bin", purpose="user_data")
    result = await store.compose(list(reversed(refs)), dest)
    expected = b"".join(reversed(blobs))
    assert result.bytes == len(expected)
    assert await sha256_of(provider, dest["name"]) == hashlib.sha256(expected).hexdigest()
    assert await names(provider, f"{PREFIX}uploads/") == sorted(r.location["name"] for r in refs)


async def test_an_upload_of_no_bytes(provider: GCSProvider, store: GCSPartStore) -> None:
    empty = await write_part(store, "upload_empty", "part_0", b"")
    for parts in ([], [empty]):
        dest = store.destination("file-empty", tenant="t", filename="f.bin", purpose="user_data")
        result = await store.compose(parts, dest)
        assert result.bytes == 0 and await sha256_of(provider, dest["name"]) == hashlib.sha256(b"").hexdigest()


async def test_a_failed_compose_leaves_nothing(provider: GCSProvider, store: GCSPartStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_gcs, "MAX_COMPOSE_SOURCES", 4)
    refs = [await write_part(store, "upload_fail", f"part_{i:02}", bytes([i]) * 100) for i in range(12)]
    assert provider.storage is not None
    await provider.storage.delete(provider.bucket, refs[9].location["name"])   # one group's compose fails
    dest = store.destination("file-fail", tenant="t", filename="f.bin", purpose="user_data")
    with pytest.raises(GatewayError) as e:
        await store.compose(refs, dest)
    assert e.value.status == 502
    assert await names(provider) == sorted(r.location["name"] for i, r in enumerate(refs) if i != 9)


async def test_a_part_of_another_size_than_recorded_is_refused(provider: GCSProvider, store: GCSPartStore) -> None:
    ref = await write_part(store, "upload_size", "part_0", b"x" * 1000)
    wrong = PartRef(ref.part_id, 999, ref.location)
    dest = store.destination("file-size", tenant="t", filename="f.bin", purpose="user_data")
    with pytest.raises(GatewayError):
        await store.compose([wrong], dest)
    assert await names(provider) == [ref.location["name"]]
    with pytest.raises(GatewayError):
        _ = [c async for c in store.read([wrong])]


async def test_abort_of_a_part_leaves_nothing(provider: GCSProvider, store: GCSPartStore) -> None:
    for size in (100, 3 * MiB):   # before and after its upload session opened
        sink = store.open_part("upload_abort", f"part_{size}")
        await sink.write(random.Random(size).randbytes(size))
        if size > MiB:
            assert sink.partial_location()["session_uri"]
        await sink.abort()
        await sink.abort()
    assert await names(provider) == []


async def test_vertex_records_its_target_and_refuses_parts_of_another_bucket(
        fake_gcs: FakeGCS, gcs_bucket: str) -> None:  # noqa: F811
    p = VertexProvider(VertexConfig(name="vx", bucket=gcs_bucket, project_id="proj", endpoint_url=fake_gcs.api_root,
                                    model="gemini-2.0-flash"))
    await p.start()
    try:
        store = p.part_store(exchange(headers={"x-tfy-vertex-region": "europe-west4"}))
        assert isinstance(store, GCSPartStore)
        ref = await write_part(store, "upload_vx", "part_0", b"hello")
        dest = store.destination("file-vx", tenant="t", filename="in.bin", purpose="user_data")
        result = await store.compose([ref], dest)
        assert result.location == {"bucket": gcs_bucket, "name": dest["name"], "generation": result.location["generation"],
                                   "region": "europe-west4", "model": "gemini-2.0-flash"}
        with pytest.raises(GatewayError) as e:
            await store.compose([ref], {**dest, "bucket": "some-other-bucket", "name": "x"})
        assert (e.value.status, e.value.code) == (400, "upload_bucket_mismatch")
    finally:
        await p.close()
