"""The s3 provider: the Files API over the operator's own S3 bucket, files stored as sent,
through the real openai SDK against the gateway as a process on the real moto_server.

One gateway (auth on, two tenants) serves most tests; a test that must see an empty bucket
afterwards uses a provider of its own bucket (the s3 type has no bucket header). The bucket
is inspected with a plain botocore client (tests/test_bedrock_files.py's helpers).
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from proxy.providers.configs import S3Config
from proxy.providers.object_store import Target
from proxy.providers.s3 import S3Provider
from proxy.providers.s3_storage import S3NotFound, S3StorageError
from tests.conftest import client
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.support import expire_now, location, raw_upload, store_rows, wait_until
from tests.test_bedrock_files import (batch_line, keys, new_bucket, object_bytes, pending_uploads, s3_client)

MiB = 1 << 20
KEY_A, KEY_B = "sk-team-a", "sk-team-b"
PREFIX = "shared/"


class Env:
    def __init__(self, gw: GatewayProcess, moto: MotoS3, bucket: str, clean: str) -> None:
        self.gw, self.moto, self.bucket, self.clean = gw, moto, bucket, clean
        self.s3 = s3_client(moto)
        self.a = client(gw, KEY_A)
        self.b = client(gw, KEY_B)


def s3_provider(name: str, bucket: str, moto: MotoS3, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url,
            "aws_access_key_id": moto.access_key, "aws_secret_access_key": moto.secret_key, **extra}


def on(provider: str) -> dict[str, str]:
    return {"x-tfy-provider-name": provider}


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket, clean = new_bucket(s3), new_bucket(s3)
    cfg = {
        "auth": {"keys": [{"key": KEY_A, "tenant": "team-a"}, {"key": KEY_B, "tenant": "team-b"}]},
        "server": {"expiry_sweep_interval": "200ms"},
        "providers": [
            s3_provider("s3", bucket, moto_s3, prefix=PREFIX),  # region: the default us-east-1
            s3_provider("s3-clean", clean, moto_s3),            # tests that check for leftovers
            s3_provider("s3-nobucket", "sg-test-no-such-bucket", moto_s3),
            s3_provider("s3-nowhere", bucket, MotoS3("http://127.0.0.1:9"),
                        timeouts={"connect": "1s", "read": "2s"}, max_retries=0),  # nothing listens
        ],
        "default_provider": "s3",
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("s3-gw"), cfg)
    with gw:
        yield Env(gw, moto_s3, bucket, clean)


# -- the five operations ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1_500_000, 11 * MiB + 3], ids=["single-put", "multipart"])
def test_five_operations_store_in_the_bucket(env: Env, size: int) -> None:
    c = env.a
    content = os.urandom(size)
    f = c.files.create(file=("my data (1).bin", content), purpose="user_data")
    assert isinstance(f, openai.types.FileObject) and f.id.startswith("file-")
    assert (f.bytes, f.filename, f.purpose, f.status) == (size, "my data (1).bin", "user_data", "processed")

    key = f"{PREFIX}team-a/{f.id}/my_data_1_.bin"
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [key]
    head = env.s3.head_object(Bucket=env.bucket, Key=key)
    assert head["ContentLength"] == size and head["ContentType"] == "application/octet-stream"
    assert head["Metadata"] == {"file-id": f.id, "purpose": "user_data", "tenant": "team-a"}
    assert location(env.gw, f.id) == {"bucket": env.bucket, "key": key, "region": "us-east-1",
                                      "etag": head["ETag"]}
    assert pending_uploads(env.s3, env.bucket) == []

    assert c.files.retrieve(f.id) == f
    assert f.id in [x.id for x in c.files.list()]
    got = c.files.content(f.id)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(content).hexdigest()
    assert got.response.headers["content-length"] == str(size)

    assert c.files.delete(f.id).deleted
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    for call in (c.files.retrieve, c.files.content, c.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"


def test_batch_file_is_stored_byte_identical(env: Env) -> None:
    # No translation: a batch file, and any model header, reach the bucket as sent.
    data = batch_line("r1") + batch_line("r-2", {"model": "anything", "messages": []}) + batch_line("r3")
    f = env.a.files.create(file=("reqs.jsonl", data), purpose="batch",
                           extra_headers={"x-tfy-provider-model": "amazon.nova-lite-v1:0",
                                          "x-tfy-aws-s3-bucket": env.clean})
    assert (f.bytes, f.purpose) == (len(data), "batch")
    loc = location(env.gw, f.id)
    assert loc == {"bucket": env.bucket, "key": f"{PREFIX}team-a/{f.id}/reqs.jsonl", "region": "us-east-1",
                   "etag": loc["etag"],  # type: ignore[index]
                   "batch_url": "/v1/chat/completions"}  # the lines' endpoint, which batches.create checks
    assert keys(env.s3, env.clean) == []  # the bucket header is bedrock's, not this type's
    assert object_bytes(env.s3, env.bucket, loc["key"]) == data  # type: ignore[index]
    head = env.s3.head_object(Bucket=env.bucket, Key=loc["key"])  # type: ignore[index]
    assert head["ContentType"] == "application/jsonl" and head["Metadata"]["purpose"] == "batch"
    assert env.a.files.content(f.id).content == data
    assert env.a.files.delete(f.id).deleted


def test_purpose_after_the_file_is_the_objects_purpose_from_the_start(env: Env) -> None:
    data = batch_line("late-1") + batch_line("late-2")
    r = raw_upload(env.gw, [("file", "late.jsonl", data), ("purpose", None, b"batch")], on("s3-clean"),
                   api_key=KEY_A)
    assert r.status_code == 200, r.text
    f = r.json()
    assert (f["purpose"], f["bytes"]) == ("batch", len(data))
    loc = location(env.gw, f["id"])
    assert loc is not None and object_bytes(env.s3, env.clean, loc["key"]) == data
    head = env.s3.head_object(Bucket=env.clean, Key=loc["key"])
    assert head["Metadata"]["purpose"] == "batch" and head["ContentType"] == "application/jsonl"
    assert loc["etag"] == head["ETag"]
    assert env.a.files.delete(f["id"]).deleted
    # A late purpose=batch still gets the batch checks before anything is stored.
    r = raw_upload(env.gw, [("file", "bad.jsonl", b'{"custom_id": "x"}\n'), ("purpose", None, b"batch")],
                   on("s3-clean"), api_key=KEY_A)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_batch_file", r.text
    assert keys(env.s3, env.clean) == [] and pending_uploads(env.s3, env.clean) == []


def test_invalid_batch_file_leaves_nothing_in_the_bucket(env: Env) -> None:
    rows = store_rows(env.gw)
    # ~12 MiB of good lines, so two 5 MiB parts are in S3 before the bad line arrives.
    long_chat = {"model": "m", "messages": [{"role": "user", "content": "x" * 4000}]}
    good = b"".join(batch_line(f"r{i}", long_chat) for i in range(3000))
    bad = b'{"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'  # duplicate id
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", good + bad), purpose="batch", extra_headers=on("s3-clean"))
    assert e.value.body["code"] == "invalid_batch_file" and "line 3001" in e.value.body["message"], e.value.body
    assert e.value.response.headers["x-should-retry"] == "false"
    assert wait_until(lambda: pending_uploads(env.s3, env.clean) == [])  # AbortMultipartUpload
    assert keys(env.s3, env.clean) == []
    assert store_rows(env.gw) == rows


def test_client_disconnect_mid_upload_leaves_nothing(env: Env) -> None:
    rows = store_rows(env.gw)
    head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"x-tfy-provider-name: s3-clean\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {40 * MiB}\r\n\r\n"
            '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            '--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n').encode()
    with socket.create_connection(("127.0.0.1", env.gw.port)) as s:
        s.sendall(head + b"\2" * (12 * MiB))  # two full 5 MiB parts and some
        assert wait_until(lambda: len(pending_uploads(env.s3, env.clean)) == 1)  # under way
    assert wait_until(lambda: pending_uploads(env.s3, env.clean) == [])
    assert keys(env.s3, env.clean) == []
    assert store_rows(env.gw) == rows


# -- tenancy, expiry, errors -----------------------------------------------------------------


def test_another_tenants_id_is_404(env: Env) -> None:
    f = env.a.files.create(file=("mine.txt", b"team a only"), purpose="user_data")
    [key] = keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/")
    for call in (env.b.files.retrieve, env.b.files.content, env.b.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in env.b.files.list()]
    assert object_bytes(env.s3, env.bucket, key) == b"team a only"  # untouched
    assert env.a.files.delete(f.id).deleted


def test_expired_file_is_removed_from_the_bucket(env: Env) -> None:
    f = env.a.files.create(file=("e.txt", b"expiring"), purpose="user_data",
                           expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    expire_now(env.gw, f.id)
    assert wait_until(lambda: keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [])
    assert wait_until(lambda: location(env.gw, f.id) is None)


def test_missing_configured_bucket_is_502(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers=on("s3-nobucket"))
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_bucket_not_found", e.value.body
    assert "sg-test-no-such-bucket" not in e.value.body["message"]


def test_unreachable_s3_is_502_without_details(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers=on("s3-nowhere"))
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable", e.value.body
    assert e.value.response.headers["x-should-retry"] == "true"
    assert "127.0.0.1" not in e.value.body["message"] and "testing" not in e.value.body["message"]
    assert "testing" not in env.gw.log()  # the provider's keys never reach a log line


def _provider(**extra: Any) -> S3Provider:
    return S3Provider(S3Config(name="s3", **{"bucket": "b", **extra}))


@pytest.mark.parametrize("exc,status,code", [
    (S3StorageError("S3 PutObject failed: HTTP 403 AccessDenied", code="AccessDenied", status=403),
     502, "upstream_auth_failed"),
    (S3StorageError("S3 UploadPart failed: HTTP 503 SlowDown", code="SlowDown", status=503), 503, "upstream_throttled"),
    (S3StorageError("S3 UploadPart failed: HTTP 500 InternalError", code="InternalError", status=500),
     502, "upstream_error"),
    (S3StorageError("S3 PutObject failed: HTTP 404 NoSuchBucket", code="NoSuchBucket", status=404),
     502, "upstream_bucket_not_found"),
])
def test_s3_errors_become_openai_errors(exc: S3StorageError, status: int, code: str) -> None:
    err = _provider().s3_error(exc, "upload", target=Target("b", False, "us-east-1", None))
    assert (err.status, err.code) == (status, code), err
    not_found = _provider().s3_error(S3NotFound("S3 GetObject failed: HTTP 404 NoSuchKey", code="NoSuchKey",
                                                status=404), "download", file_id="file-abc")
    assert (not_found.status, not_found.code) == (404, "file_not_found")


def test_region_and_part_size_settings() -> None:
    assert _provider().region == "us-east-1"
    assert _provider(region="auto").region == "auto"  # R2
    with pytest.raises(ValueError, match="upload_chunk_size"):
        _provider(upload_chunk_size=1 * MiB)


# -- the janitor hooks -----------------------------------------------------------------------


async def test_janitor_aborts_unowned_multipart_uploads_and_cleans_a_dead_owners(moto_s3: MotoS3) -> None:  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    p = _provider(bucket=bucket, prefix="pfx/", endpoint_url=moto_s3.endpoint_url,
                  aws_access_key_id=moto_s3.access_key, aws_secret_access_key=moto_s3.secret_key)
    started = {name: s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for name, key in (
        ("orphan", "pfx/t/file-orphan/a.bin"), ("owned", "pfx/t/file-owned/b.bin"),
        ("dead", "pfx/t/file-dead/c.bin"), ("foreign", "pfx/not-ours.bin"))}
    await p.start()
    try:
        await p.cleanup_partial({"file_id": "file-dead", "bucket": bucket, "key": "pfx/t/file-dead/c.bin",
                                 "upload_id": started["dead"], "region": "us-east-1"})
        owned = [{"file_id": "file-owned", "upload_id": started["owned"]}]
        # A negative age: every upload counts as old, without waiting for one to age. The first
        # sweep that finds an upload unowned only notes it (it may have begun after `owned` was read).
        assert await p.sweep_partials(owned, max_age=-60) == 0
        assert len(pending_uploads(s3, bucket)) == 3
        assert await p.sweep_partials(owned, max_age=-60) == 1
    finally:
        await p.close()
    left = {u["UploadId"] for u in pending_uploads(s3, bucket)}
    assert left == {started["owned"], started["foreign"]}


async def test_janitor_aborts_an_upload_only_when_two_sweeps_in_a_row_find_it_unowned(
        moto_s3: MotoS3) -> None:  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    p = _provider(bucket=bucket, prefix="pfx/", endpoint_url=moto_s3.endpoint_url,
                  aws_access_key_id=moto_s3.access_key, aws_secret_access_key=moto_s3.secret_key)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="pfx/t/file-late/a.bin")["UploadId"]
    await p.start()
    try:
        assert await p.sweep_partials([], max_age=-60) == 0     # begun after the owners were read
        assert await p.sweep_partials([{"file_id": "file-late"}], max_age=-60) == 0   # now its owner is
        assert await p.sweep_partials([], max_age=-60) == 0     # unowned again: first sighting again
        assert [u["UploadId"] for u in pending_uploads(s3, bucket)] == [upload]
        assert await p.sweep_partials([], max_age=-60) == 1
        assert pending_uploads(s3, bucket) == []
        assert await p.sweep_partials([], max_age=-60) == 0
    finally:
        await p.close()


# -- memory: the same multipart sink as bedrock (tests/test_bedrock_files.py has the 512 MiB run) --

BUDGET = 48 << 20  # measured ≈ 29 MiB; a buffered file alone would be 64


def test_64mib_upload_keeps_gateway_memory_flat(moto_s3: MotoS3, start_gateway, tmp_path) -> None:  # noqa: F811
    from tests.fakes.bigfile import make_big_file

    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    src = tmp_path / "big.bin"
    digest = make_big_file(src, 64 * MiB)
    gw = start_gateway({"providers": [s3_provider("s3", bucket, moto_s3)]})
    c = client(gw, timeout=120)
    c.files.create(file=("warm.txt", b"warm up the S3 client"), purpose="assistants")
    idle = gw.rss()
    gw.reset_peak_rss()
    with open(src, "rb") as fh:
        f = c.files.create(file=fh, purpose="assistants")
    peak = gw.peak_rss()
    assert f.bytes == 64 * MiB
    h = hashlib.sha256()
    with c.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest
    # A buffered upload would raise it by the file's 64 MiB; the sink holds about three parts.
    assert peak - idle < BUDGET, f"upload raised peak RSS by {(peak - idle) >> 20} MiB"
    c.files.delete(f.id)  # free moto's memory
