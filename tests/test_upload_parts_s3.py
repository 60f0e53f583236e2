"""The ``s3``/``bedrock`` part store (proxy/providers/parts_s3.py): the plan on its own, and
parts, compose, read and delete against a real moto_server."""
from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any, AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import GatewayError
from proxy.providers.bedrock import BedrockProvider
from proxy.providers.configs import BedrockConfig, S3Config
from proxy.providers.parts_s3 import OutPart, S3PartStore, plan
from proxy.providers.s3 import S3Provider
from proxy.providers.s3_storage import MAX_PART_SIZE, MIN_PART_SIZE, MultipartAssembly, iter_object
from proxy.upload_parts import PartRef
from tests.emulator_s3 import MotoS3, fresh_bucket, moto_s3  # noqa: F401
from tests.unit.fakes import exchange

MiB = 1 << 20
PREFIX = "pfx/"
# Exactly 5 MiB, small parts (< 5 MiB), a large part after a small one, a zero-byte part.
MIX = [MIN_PART_SIZE, MiB, 12 * MiB, 100 << 10, 3 * MiB, MIN_PART_SIZE + 1, 0, 2]


# -- the plan ------------------------------------------------------------------------------


def check_plan(sizes: list[int], layout: list[OutPart], *, buffer: int, min_part: int, max_part: int) -> None:
    """The S3 rules and the memory bound hold, and the pieces are the parts' bytes in order."""
    covered = [piece for out in layout for piece in out.pieces]
    expected = [(i, 0) for i, size in enumerate(sizes) if size]
    walk: list[tuple[int, int]] = []
    for piece in covered:
        assert piece.size > 0
        if walk and walk[-1][0] == piece.index:
            assert piece.start == walk[-1][1], "pieces of one part are contiguous"
            walk[-1] = (piece.index, piece.end)
        else:
            assert piece.start == 0
            walk.append((piece.index, piece.end))
    assert [i for i, _ in walk] == [i for i, _ in expected]
    assert [end for _, end in walk] == [sizes[i] for i, _ in walk]
    for n, out in enumerate(layout):
        if n < len(layout) - 1:
            assert out.size >= min_part, (n, out)
        if out.copy:
            assert len(out.pieces) == 1 and min_part <= out.size <= max_part
        else:
            assert out.size <= buffer
    assert len(layout) <= -(-sum(sizes) // min_part)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 130), max_size=30), st.integers(10, 40))
def test_plan_keeps_s3_rules_and_the_buffer_bound(sizes: list[int], buffer: int) -> None:
    layout = plan(sizes, buffer=buffer, min_part=10, max_part=45)
    check_plan(sizes, layout, buffer=buffer, min_part=10, max_part=45)


def test_plan_with_s3_sizes() -> None:
    five = MIN_PART_SIZE
    layout = plan(MIX, buffer=five)
    check_plan(MIX, layout, buffer=five, min_part=five, max_part=MAX_PART_SIZE)
    assert layout[0].copy and layout[0].size == five              # exactly 5 MiB: copied whole
    # 1 MiB + the first 4 MiB of the 12 MiB part are buffered, its other 8 MiB copied as a range.
    assert [out.copy for out in layout] == [True, False, True, False, False]
    assert layout[2].pieces[0].start == 4 * MiB and layout[1].size == five
    # 7 MiB after 1 MiB: topping the buffer up leaves 3 MiB, too short to copy: all buffered.
    assert [out.copy for out in plan([MiB, 7 * MiB], buffer=five)] == [False, False]
    big = plan([12 * (1 << 30)], buffer=five)                     # 12 GiB: three copied ranges ≤ 5 GiB
    assert [out.copy for out in big] == [True] * 3 and all(out.size <= MAX_PART_SIZE for out in big)
    assert plan([], buffer=five) == [] and plan([0, 0], buffer=five) == []
    with pytest.raises(ValueError):
        plan([1], buffer=MiB)
    with pytest.raises(ValueError):
        plan([1], buffer=five, max_part=five + 1)


# -- against moto ------------------------------------------------------------------------------


@pytest.fixture
async def provider(moto_s3: MotoS3) -> AsyncIterator[S3Provider]:  # noqa: F811
    p = S3Provider(S3Config(name="s3", bucket="placeholder", prefix=PREFIX, endpoint_url=moto_s3.endpoint_url,
                            aws_access_key_id=moto_s3.access_key, aws_secret_access_key=moto_s3.secret_key))
    await p.start()
    async with p.lease(p.region) as client:
        p.bucket = await fresh_bucket(client)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def store(provider: S3Provider) -> S3PartStore:
    s = provider.part_store(exchange())
    assert isinstance(s, S3PartStore) and s.bucket == provider.bucket
    return s


async def write_part(store: S3PartStore, upload_id: str, part_id: str, data: bytes,
                     chunk: int = (256 << 10) + 5) -> PartRef:
    sink = store.open_part(upload_id, part_id)
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        await sink.write(view[start:start + chunk])
    result = await sink.complete()
    return PartRef(part_id, result.bytes, result.location)


async def sha256_of(provider: S3Provider, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    async with provider.lease(provider.region) as client:
        async for chunk in iter_object(client, bucket, key):
            digest.update(chunk)
    return digest.hexdigest()


async def leftovers(provider: S3Provider) -> tuple[list[str], list[str]]:
    """The part objects still there, and every multipart upload still in flight in the bucket."""
    async with provider.lease(provider.region) as client:
        listed = await client.list_objects_v2(Bucket=provider.bucket, Prefix=f"{PREFIX}uploads/")
        uploads = await client.list_multipart_uploads(Bucket=provider.bucket)
    return [o["Key"] for o in listed.get("Contents", [])], [u["Key"] for u in uploads.get("Uploads", [])]


async def test_a_mix_of_part_sizes_composes_byte_for_byte(provider: S3Provider, store: S3PartStore) -> None:
    rnd = random.Random(11)
    blobs = [rnd.randbytes(n) for n in MIX]
    refs = [await write_part(store, "upload_mix", f"part_{i}", b) for i, b in enumerate(blobs)]
    assert refs[0].location["key"] == f"{PREFIX}uploads/upload_mix/part_0"
    order = [refs[i] for i in (2, 0, 1, 3, 4, 5, 6, 7)]
    expected = b"".join(blobs[i] for i in (2, 0, 1, 3, 4, 5, 6, 7))

    dest = store.destination("file-mix", tenant="team-a", filename="data.jsonl", purpose="batch")
    assert dest["key"] == f"{PREFIX}team-a/file-mix/data.jsonl"
    result = await store.compose(order, dest)
    assert result.bytes == len(expected)
    assert result.location["bucket"] == provider.bucket and result.location["key"] == dest["key"]
    assert await sha256_of(provider, provider.bucket, dest["key"]) == hashlib.sha256(expected).hexdigest()
    async with provider.lease(provider.region) as client:
        meta = await client.head_object(Bucket=provider.bucket, Key=dest["key"])
    assert meta["ContentType"] == "application/jsonl"
    assert meta["Metadata"] == {"file-id": "file-mix", "purpose": "batch", "tenant": "team-a"}
    assert (await leftovers(provider))[1] == []

    read = [c async for c in store.read(order, chunk_size=MiB)]
    assert max(map(len, read)) <= MiB and hashlib.sha256(b"".join(read)).digest() == hashlib.sha256(expected).digest()

    await store.delete(refs)
    assert await leftovers(provider) == ([], [])
    await store.delete(refs)  # idempotent
    assert await sha256_of(provider, provider.bucket, dest["key"]) == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("sizes", [[MIN_PART_SIZE], [3 * MiB], [MiB, 2 * MiB, 1], [], [0]],
                         ids=["one-5MiB-part-CopyObject", "one-small-part", "small-parts-PutObject", "none", "empty"])
async def test_short_files(provider: S3Provider, store: S3PartStore, sizes: list[int]) -> None:
    blobs = [random.Random(n).randbytes(n) for n in sizes]
    refs = [await write_part(store, "upload_short", f"part_{i}", b) for i, b in enumerate(blobs)]
    dest = store.destination("file-short", tenant="t", filename="f.bin", purpose="user_data")
    result = await store.compose(refs, dest)
    assert result.bytes == sum(sizes)
    assert await sha256_of(provider, provider.bucket, dest["key"]) == hashlib.sha256(b"".join(blobs)).hexdigest()
    async with provider.lease(provider.region) as client:
        meta = await client.head_object(Bucket=provider.bucket, Key=dest["key"])
    assert meta["Metadata"]["file-id"] == "file-short" and meta["ContentType"] == "application/octet-stream"
    assert (await leftovers(provider))[1] == []


async def test_large_parts_are_copied_in_ranges(provider: S3Provider, store: S3PartStore) -> None:
    """A part over the largest copy is split with CopySourceRange (5 GiB in S3; 10 MiB here)."""
    store.max_part = 10 * MiB
    blobs = [random.Random(1).randbytes(21 * MiB), random.Random(2).randbytes(2 * MiB)]
    refs = [await write_part(store, "upload_big", f"part_{i}", b) for i, b in enumerate(blobs)]
    layout = plan([r.bytes for r in refs], buffer=store.buffer, max_part=store.max_part)
    assert [out.copy for out in layout] == [True, True, True, False]
    dest = store.destination("file-big", tenant="t", filename="f.bin", purpose="user_data")
    await store.compose(refs, dest)
    assert await sha256_of(provider, provider.bucket, dest["key"]) == hashlib.sha256(b"".join(blobs)).hexdigest()


@pytest.mark.parametrize("missing", [1, 2], ids=["a-copied-part", "a-buffered-part"])
async def test_a_failed_compose_leaves_nothing(provider: S3Provider, store: S3PartStore, missing: int) -> None:
    blobs = [random.Random(i).randbytes(n) for i, n in enumerate((6 * MiB, 6 * MiB, MiB, 6 * MiB))]
    refs = [await write_part(store, "upload_fail", f"part_{i}", b) for i, b in enumerate(blobs)]
    async with provider.lease(provider.region) as client:
        await client.delete_object(Bucket=provider.bucket, Key=refs[missing].location["key"])
    dest = store.destination("file-fail", tenant="t", filename="f.bin", purpose="user_data")
    with pytest.raises(GatewayError) as e:
        await store.compose(refs, dest)
    assert e.value.status >= 500
    async with provider.lease(provider.region) as client:
        listed = await client.list_objects_v2(Bucket=provider.bucket, Prefix=f"{PREFIX}t/")
        uploads = await client.list_multipart_uploads(Bucket=provider.bucket)
    assert listed.get("Contents", []) == [] and uploads.get("Uploads", []) == []


async def test_a_part_changed_behind_the_gateway_is_refused(provider: S3Provider, store: S3PartStore) -> None:
    ref = await write_part(store, "upload_size", "part_0", b"x" * (6 * MiB))
    wrong = PartRef(ref.part_id, ref.bytes - 1, ref.location)   # the store says one byte less
    dest = store.destination("file-size", tenant="t", filename="f.bin", purpose="user_data")
    with pytest.raises(GatewayError):
        await store.compose([wrong, PartRef("part_1", 0, ref.location)], dest)
    async with provider.lease(provider.region) as client:
        listed = await client.list_objects_v2(Bucket=provider.bucket, Prefix=f"{PREFIX}t/")
    assert listed.get("Contents", []) == [] and (await leftovers(provider))[1] == []
    with pytest.raises(GatewayError):
        _ = [c async for c in store.read([wrong])]


async def test_abort_of_a_part_leaves_nothing(provider: S3Provider, store: S3PartStore) -> None:
    for size in (100, 12 * MiB):   # before and after its multipart upload started
        sink = store.open_part("upload_abort", f"part_{size}")
        await sink.write(random.Random(size).randbytes(size))
        if size > MIN_PART_SIZE:
            assert sink.partial_location()["upload_id"]
        await sink.abort()
        await sink.abort()
    never_written = store.open_part("upload_abort", "part_none")
    await never_written.abort()
    assert await leftovers(provider) == ([], [])


async def test_bedrock_parts_go_to_the_bucket_its_header_names(moto_s3: MotoS3) -> None:  # noqa: F811
    p = BedrockProvider(BedrockConfig(name="br", bucket="placeholder", region="us-east-1",
                                      endpoint_url=moto_s3.endpoint_url, aws_access_key_id=moto_s3.access_key,
                                      aws_secret_access_key=moto_s3.secret_key))
    await p.start()
    try:
        async with p.lease(p.region) as client:
            other = await fresh_bucket(client)
        store = p.part_store(exchange(headers={"x-tfy-aws-s3-bucket": other}))
        assert isinstance(store, S3PartStore)
        ref = await write_part(store, "upload_br", "part_0", b"hello")
        assert ref.location["bucket"] == other
        dest = store.destination("file-br", tenant="t", filename="in.jsonl", purpose="user_data")
        assert dest["bucket"] == other
        await store.compose([ref], dest)
        await store.delete([ref])
        async with p.lease(p.region) as client:
            keys: Any = [o["Key"] for o in (await client.list_objects_v2(Bucket=other)).get("Contents", [])]
        assert keys == ["t/file-br/in.jsonl"]
    finally:
        await p.close()


async def test_the_janitor_aborts_an_orphaned_part_upload(provider: S3Provider, store: S3PartStore) -> None:
    """A part's multipart upload a crash left behind (no reservation names it) is aborted."""
    sink = store.open_part("upload_crash", "part_0")
    await sink.write(b"x" * (6 * MiB))           # its multipart upload has started; the process "dies"
    owned_elsewhere = store.open_part("upload_crash", "part_1")
    await owned_elsewhere.write(b"y" * (6 * MiB))
    owned = [owned_elsewhere.partial_location()]
    assert await provider.sweep_partials(owned, max_age=-60) == 0   # negative age: every upload is old;
    assert await provider.sweep_partials(owned, max_age=-60) == 1   # unowned on a second sweep too: aborted
    assert (await leftovers(provider))[1] == [f"{PREFIX}uploads/upload_crash/part_1"]
    await owned_elsewhere.abort()
    await sink.abort()


async def test_a_cancelled_compose_aborts_its_multipart_upload(provider: S3Provider, store: S3PartStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A client gone mid-compose: the multipart upload is aborted, nothing is at the destination."""
    refs = [await write_part(store, "upload_cancel", f"part_{i}", bytes([i]) * (6 * MiB)) for i in range(2)]
    copying = asyncio.Event()
    real_copy = MultipartAssembly.copy_part

    async def held_copy(self: MultipartAssembly, *args: Any) -> None:   # the real copy, held until cancelled
        copying.set()
        await asyncio.sleep(60)
        await real_copy(self, *args)

    monkeypatch.setattr(MultipartAssembly, "copy_part", held_copy)
    dest = store.destination("file-cancel", tenant="t", filename="f.bin", purpose="user_data")
    task = asyncio.ensure_future(store.compose(refs, dest))
    await asyncio.wait_for(copying.wait(), 30)
    assert [u for u in (await leftovers(provider))[1]] == [dest["key"]]   # the upload is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with provider.lease(provider.region) as client:
        listed = await client.list_objects_v2(Bucket=provider.bucket, Prefix=f"{PREFIX}t/")
    assert listed.get("Contents", []) == [] and (await leftovers(provider))[1] == []
