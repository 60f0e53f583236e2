"""S3 storage against a real moto_server through a real aiobotocore client."""
from __future__ import annotations

import asyncio
import hashlib
import random
from contextlib import aclosing
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web

from proxy.providers import s3_storage
from proxy.providers.configs import TimeoutConfig
from proxy.providers.s3_storage import (
    MIN_PART_SIZE,
    S3MultipartSink,
    S3NotFound,
    S3StorageError,
    delete,
    head,
    iter_object,
    make_client_kwargs,
)
from tests.emulator_s3 import MotoS3, fresh_bucket, moto_s3  # noqa: F401
from tests.support import eventually

MiB = 1 << 20
ODD_CHUNK = (64 << 10) + 7
MISSING_BUCKET = "sg-no-such-bucket"


class RecordingClient:
    """A real client whose multipart calls are observed, optionally slowed or broken.

    ``fail_part`` sends that part to a bucket that does not exist, so moto itself answers
    ``NoSuchBucket``. Before completing, the parts S3 holds are read back with ``ListParts``.
    """

    def __init__(self, client: Any, *, delay: float = 0.0, fail_part: int | None = None) -> None:
        self._client = client
        self._delay = delay
        self._fail_part = fail_part
        self.active = 0
        self.peak = 0
        self.parts_finished = 0
        self.listed_parts: list[tuple[int, int]] | None = None
        self.completed_parts: list[dict[str, Any]] | None = None
        self.bodies: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self._delay)
            if kwargs["PartNumber"] == self._fail_part:
                kwargs = {**kwargs, "Bucket": MISSING_BUCKET}
            return await self._client.upload_part(**kwargs)
        finally:
            self.active -= 1
            self.parts_finished += 1

    async def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        listed = await self._client.list_parts(
            Bucket=kwargs["Bucket"], Key=kwargs["Key"], UploadId=kwargs["UploadId"]
        )
        self.listed_parts = [(p["PartNumber"], p["Size"]) for p in listed["Parts"]]
        self.completed_parts = kwargs["MultipartUpload"]["Parts"]
        return await self._client.complete_multipart_upload(**kwargs)

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        resp = await self._client.get_object(**kwargs)
        self.bodies.append(resp["Body"])
        return resp


@pytest.fixture
async def s3(moto_s3: MotoS3):  # noqa: F811
    kwargs = make_client_kwargs(
        moto_s3.region, moto_s3.endpoint_url, moto_s3.access_key, moto_s3.secret_key
    )
    async with get_session().create_client("s3", **kwargs) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    return await fresh_bucket(s3)


async def feed(sink: S3MultipartSink, data: bytes, chunk: int = ODD_CHUNK) -> None:
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        await sink.write(view[start:start + chunk])


async def stored_sha256(client: Any, bucket: str, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async for chunk in iter_object(client, bucket, key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def pending_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return (await client.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])


@pytest.mark.parametrize(
    "size",
    [0, 1, MIN_PART_SIZE - 1, MIN_PART_SIZE, MIN_PART_SIZE + 1, 17 * MiB],
    ids=["0", "1", "5MiB-1", "5MiB", "5MiB+1", "17MiB"],
)
async def test_round_trip(s3: Any, bucket: str, size: int) -> None:
    data = random.Random(size).randbytes(size)
    rec = RecordingClient(s3)
    sink = S3MultipartSink(rec, bucket, "in/f.jsonl", content_type="application/jsonl",
                           metadata={"purpose": "batch"}, part_size=MIN_PART_SIZE)
    await feed(sink, data)
    result = await sink.complete()

    assert result.bytes == size
    meta = await head(s3, bucket, "in/f.jsonl")
    assert result.location == {"bucket": bucket, "key": "in/f.jsonl", "etag": meta["ETag"]}
    assert meta["ContentLength"] == size
    assert meta["ContentType"] == "application/jsonl"
    assert meta["Metadata"] == {"purpose": "batch"}
    assert await stored_sha256(s3, bucket, "in/f.jsonl") == (hashlib.sha256(data).hexdigest(), size)
    assert await pending_uploads(s3, bucket) == []

    if size < MIN_PART_SIZE:                       # a single PutObject, no multipart upload
        assert rec.listed_parts is None
        return
    full, last = divmod(size, MIN_PART_SIZE)
    expected = [MIN_PART_SIZE] * full + ([last] if last else [])
    assert rec.listed_parts == list(enumerate(expected, start=1))
    assert all(part_size >= MIN_PART_SIZE for _, part_size in rec.listed_parts[:-1])
    assert [p["PartNumber"] for p in rec.completed_parts] == list(range(1, len(expected) + 1))
    assert all(p["ChecksumCRC32"] for p in rec.completed_parts)


async def test_one_write_spanning_several_parts(s3: Any, bucket: str) -> None:
    data = random.Random(11).randbytes(11 * MiB)
    rec = RecordingClient(s3)
    sink = S3MultipartSink(rec, bucket, "big", part_size=MIN_PART_SIZE)
    await sink.write(data)
    await sink.complete()
    assert rec.listed_parts == [(1, MIN_PART_SIZE), (2, MIN_PART_SIZE), (3, 1 * MiB)]
    assert await stored_sha256(s3, bucket, "big") == (hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize("max_in_flight", [1, 3])
async def test_max_in_flight_bounds_concurrent_parts(
    s3: Any, bucket: str, max_in_flight: int
) -> None:
    rec = RecordingClient(s3, delay=0.05)
    sink = S3MultipartSink(rec, bucket, "k", part_size=MIN_PART_SIZE, max_in_flight=max_in_flight)
    await feed(sink, bytes(4 * MIN_PART_SIZE + 1), chunk=256 << 10)
    await sink.complete()
    assert rec.peak == max_in_flight


async def test_abort_mid_upload_leaves_nothing(s3: Any, bucket: str) -> None:
    rec = RecordingClient(s3, delay=0.2)
    sink = S3MultipartSink(rec, bucket, "k", part_size=MIN_PART_SIZE, max_in_flight=2)
    await feed(sink, bytes(12 * MiB))
    assert await eventually(lambda: rec.active == 2)  # both part uploads started (each takes 0.2 s)
    assert len(await pending_uploads(s3, bucket)) == 1

    await sink.abort()
    assert rec.active == 0
    assert await pending_uploads(s3, bucket) == []
    assert await head(s3, bucket, "k") is None
    await sink.abort()                             # idempotent
    with pytest.raises(RuntimeError):
        await sink.write(b"x")


async def test_abort_before_first_part_and_after_complete(s3: Any, bucket: str) -> None:
    small = S3MultipartSink(s3, bucket, "small", part_size=MIN_PART_SIZE)
    await small.write(b"x" * 1000)
    await small.abort()
    await small.abort()
    assert await head(s3, bucket, "small") is None

    done = S3MultipartSink(s3, bucket, "done", part_size=MIN_PART_SIZE)
    await done.write(b"y" * (MIN_PART_SIZE + 1))
    await done.complete()
    await done.abort()                             # the completed object is the caller's
    assert (await head(s3, bucket, "done"))["ContentLength"] == MIN_PART_SIZE + 1


async def test_part_failure_surfaces_on_complete_and_abort_cleans_up(s3: Any, bucket: str) -> None:
    sink = S3MultipartSink(RecordingClient(s3, fail_part=1), bucket, "k", part_size=MIN_PART_SIZE)
    await feed(sink, bytes(6 * MiB))
    with pytest.raises(S3StorageError) as info:
        await sink.complete()
    assert info.value.code == "NoSuchBucket" and info.value.status == 404
    assert MISSING_BUCKET not in str(info.value) and bucket not in str(info.value)

    await sink.abort()
    assert await pending_uploads(s3, bucket) == []
    assert await head(s3, bucket, "k") is None


async def test_background_part_failure_surfaces_on_next_write(s3: Any, bucket: str) -> None:
    rec = RecordingClient(s3, fail_part=1)
    sink = S3MultipartSink(rec, bucket, "k", part_size=MIN_PART_SIZE, max_in_flight=2)
    await sink.write(bytes(MIN_PART_SIZE))
    assert await eventually(lambda: rec.parts_finished == 1)
    for _ in range(2):                             # the failure is sticky
        with pytest.raises(S3StorageError, match="UploadPart"):
            await sink.write(b"x")
    await sink.abort()
    assert await pending_uploads(s3, bucket) == []


async def test_part_failure_surfaces_through_back_pressure(s3: Any, bucket: str) -> None:
    sink = S3MultipartSink(RecordingClient(s3, fail_part=1), bucket, "k",
                           part_size=MIN_PART_SIZE, max_in_flight=1)
    with pytest.raises(S3StorageError):
        await sink.write(bytes(2 * MIN_PART_SIZE))
    await sink.abort()
    assert await pending_uploads(s3, bucket) == []


async def test_part_count_limit(s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_storage, "MAX_PARTS", 1)
    sink = S3MultipartSink(s3, bucket, "k", part_size=MIN_PART_SIZE)
    with pytest.raises(S3StorageError, match="parts"):
        await sink.write(bytes(2 * MIN_PART_SIZE))
    await sink.abort()
    assert await pending_uploads(s3, bucket) == []


async def test_missing_key(s3: Any, bucket: str) -> None:
    assert await head(s3, bucket, "nope") is None
    await delete(s3, bucket, "nope")
    with pytest.raises(S3NotFound) as info:
        async for _ in iter_object(s3, bucket, "nope"):
            pass
    assert info.value.code == "NoSuchKey"


async def test_missing_bucket_is_not_a_missing_key(s3: Any) -> None:
    with pytest.raises(S3StorageError) as info:
        async for _ in iter_object(s3, MISSING_BUCKET, "k"):
            pass
    assert type(info.value) is S3StorageError and info.value.code == "NoSuchBucket"


async def test_delete_removes_object(s3: Any, bucket: str) -> None:
    await s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    await delete(s3, bucket, "k")
    assert await head(s3, bucket, "k") is None


async def test_iter_object_early_exit_closes_body(s3: Any, bucket: str) -> None:
    await s3.put_object(Bucket=bucket, Key="k", Body=bytes(MiB))
    rec = RecordingClient(s3)
    async with aclosing(iter_object(rec, bucket, "k", chunk_size=64 << 10)) as chunks:
        async for chunk in chunks:
            assert len(chunk) <= 64 << 10
            break
    assert rec.bodies[0].raw_stream.closed


async def test_truncated_download_raises_storage_error(aiohttp_server: Any) -> None:
    """moto cannot cut a body short: a stand-in server promises 1 MiB and sends 1000 bytes."""
    async def short_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(MiB)})
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/{path:.*}", short_body)
    server = await aiohttp_server(app)
    endpoint_url = f"http://{server.host}:{server.port}"
    kwargs = make_client_kwargs("us-east-1", endpoint_url, "testing", "testing")
    async with get_session().create_client("s3", **kwargs) as client:
        with pytest.raises(S3StorageError, match="GetObject"):
            async for _ in iter_object(client, "bucket", "key"):
                pass


def test_constructor_validates_limits() -> None:
    with pytest.raises(ValueError):
        S3MultipartSink(object(), "b", "k", part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ValueError):
        S3MultipartSink(object(), "b", "k", max_in_flight=0)


def test_make_client_kwargs() -> None:
    kwargs = make_client_kwargs("eu-west-1")
    assert kwargs["region_name"] == "eu-west-1"
    assert "endpoint_url" not in kwargs and "aws_access_key_id" not in kwargs
    # the provider key's default, 2 retries: 3 attempts in all (tests/test_s3_retries.py counts them)
    assert kwargs["config"].retries == {"total_max_attempts": 3, "mode": "standard"}
    assert kwargs["config"].connect_timeout == 60 and kwargs["config"].read_timeout == 60  # botocore's own
    timeouts = TimeoutConfig(connect=2.0, read=7.0)
    config = make_client_kwargs("eu-west-1", max_retries=0, timeouts=timeouts)["config"]
    assert (config.retries, config.connect_timeout, config.read_timeout) == (
        {"total_max_attempts": 1, "mode": "standard"}, 2.0, 7.0)
    with pytest.raises(ValueError):
        make_client_kwargs("eu-west-1", access_key="AKIA")
