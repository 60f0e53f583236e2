"""The gcs provider: the Files API over the operator's own GCS bucket, files stored as sent,
through the real openai SDK against the gateway as a process on the real fake-gcs-server.

One gateway (auth on, two tenants, 256 KiB chunks so that small uploads take several
resumable-upload rounds) serves the tests; those that must see an empty bucket afterwards use
a provider of its own bucket (the gcs type has no bucket header). The bucket is inspected
with plain JSON API calls (tests/test_vertex_files.py's helpers).
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from proxy.providers.configs import GcsConfig
from proxy.providers.gcs import GCSProvider
from proxy.providers.gcs_storage import GCSNotFound, GCSStorageError
from proxy.providers.object_store import Target
from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.support import db_rows, expire_now, location, raw_upload, store_rows, wait_until
from tests.test_vertex_files import batch_line, new_bucket, object_bytes, objects

MiB = 1 << 20
KEY_A, KEY_B = "sk-team-a", "sk-team-b"
PREFIX = "shared/"


class Env:
    def __init__(self, gw: GatewayProcess, gcs: FakeGCS, bucket: str, clean: str) -> None:
        self.gw, self.gcs, self.bucket, self.clean = gw, gcs, bucket, clean
        self.a = client(gw, KEY_A)
        self.b = client(gw, KEY_B)


def gcs_provider(name: str, bucket: str, gcs: FakeGCS, **extra: Any) -> dict[str, Any]:
    extra.setdefault("upload_chunk_size", "256KiB")
    return {"name": name, "type": "gcs", "bucket": bucket, "endpoint_url": gcs.api_root, **extra}


def on(provider: str) -> dict[str, str]:
    return {"x-tfy-provider-name": provider}


@pytest.fixture(scope="module")
def env(fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket, clean = new_bucket(fake_gcs), new_bucket(fake_gcs)
    cfg = {
        "auth": {"keys": [{"key": KEY_A, "tenant": "team-a"}, {"key": KEY_B, "tenant": "team-b"}]},
        "server": {"expiry_sweep_interval": "200ms"},
        "providers": [
            gcs_provider("gcs", bucket, fake_gcs, prefix=PREFIX),
            gcs_provider("gcs-clean", clean, fake_gcs),             # tests that check for leftovers
            gcs_provider("gcs-nobucket", "no-such-bucket-here", fake_gcs),
            gcs_provider("gcs-nowhere", bucket, FakeGCS("http://127.0.0.1:9")),  # nothing listens
        ],
        "default_provider": "gcs",
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("gcs-gw"), cfg)
    with gw:
        yield Env(gw, fake_gcs, bucket, clean)


# -- the five operations ---------------------------------------------------------------------


def test_five_operations_store_in_the_bucket(env: Env) -> None:
    c = env.a
    content = os.urandom(1_500_000)  # six 256 KiB chunks
    f = c.files.create(file=("my data (1).bin", content), purpose="user_data")
    assert isinstance(f, openai.types.FileObject) and f.id.startswith("file-")
    assert (f.bytes, f.filename, f.purpose, f.status) == (len(content), "my data (1).bin", "user_data", "processed")

    [obj] = objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")
    assert obj["name"] == f"{PREFIX}team-a/{f.id}/my_data_1_.bin" and int(obj["size"]) == len(content)
    assert obj["metadata"] == {"file_id": f.id, "purpose": "user_data", "filename": "my data (1).bin",
                               "tenant": "team-a"}
    assert location(env.gw, f.id) == {"bucket": env.bucket, "name": obj["name"], "generation": obj["generation"]}

    assert c.files.retrieve(f.id) == f
    assert f.id in [x.id for x in c.files.list()]
    got = c.files.content(f.id)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(content).hexdigest()
    assert got.response.headers["content-length"] == str(len(content))

    assert c.files.delete(f.id).deleted
    assert objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    for call in (c.files.retrieve, c.files.content, c.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"


def test_batch_file_is_stored_byte_identical(env: Env) -> None:
    # No translation: a batch file, and any model header, reach the bucket as sent.
    data = b"".join(batch_line(f"r-{i}") for i in range(2000))  # several chunks
    f = env.a.files.create(file=("reqs.jsonl", data), purpose="batch",
                           extra_headers={"x-tfy-provider-model": "gemini-2.5-flash",
                                          "x-tfy-vertex-storage-bucket-name": env.clean})
    assert (f.bytes, f.purpose) == (len(data), "batch")
    [obj] = objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")
    assert objects(env.gcs, env.clean) == []  # the bucket header is vertex's, not this type's
    assert obj["contentType"] == "application/jsonl" and obj["metadata"]["purpose"] == "batch"
    assert object_bytes(env.gcs, env.bucket, obj["name"]) == data
    assert hashlib.sha256(env.a.files.content(f.id).content).digest() == hashlib.sha256(data).digest()
    assert env.a.files.delete(f.id).deleted


def test_purpose_after_the_file_is_the_objects_purpose_from_the_start(env: Env) -> None:
    data = batch_line("late-1") + batch_line("late-2")
    r = raw_upload(env.gw, [("file", "late.jsonl", data), ("purpose", None, b"batch")], on("gcs-clean"),
                   api_key=KEY_A)
    assert r.status_code == 200, r.text
    f = r.json()
    assert (f["purpose"], f["bytes"]) == ("batch", len(data))
    [obj] = objects(env.gcs, env.clean)
    assert obj["metadata"]["purpose"] == "batch" and obj["contentType"] == "application/jsonl"
    assert object_bytes(env.gcs, env.clean, obj["name"]) == data
    assert env.a.files.delete(f["id"]).deleted
    # A late purpose=batch still gets the batch checks before anything is stored.
    r = raw_upload(env.gw, [("file", "bad.jsonl", b'{"custom_id": "x"}\n'), ("purpose", None, b"batch")],
                   on("gcs-clean"), api_key=KEY_A)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_batch_file", r.text
    assert objects(env.gcs, env.clean) == []


def test_invalid_batch_file_leaves_nothing_in_the_bucket(env: Env) -> None:
    rows = store_rows(env.gw)
    good = b"".join(batch_line(f"r{i}") for i in range(3000))  # ~600 KB: chunks are in the session
    bad = b'{"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'  # duplicate id
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", good + bad), purpose="batch", extra_headers=on("gcs-clean"))
    assert e.value.body["code"] == "invalid_batch_file" and "line 3001" in e.value.body["message"], e.value.body
    assert e.value.response.headers["x-should-retry"] == "false"
    assert objects(env.gcs, env.clean) == []
    assert store_rows(env.gw) == rows


def test_client_disconnect_mid_upload_leaves_nothing(env: Env) -> None:
    rows = store_rows(env.gw)
    head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
            "x-tfy-provider-name: gcs-clean\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 10000000\r\n\r\n"
            '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            '--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n').encode()
    with socket.create_connection(("127.0.0.1", env.gw.port)) as s:
        s.sendall(head + b"\2" * (2 << 20))  # eight 256 KiB chunks: the session is open
        # The upload is under way (a reservation holds its bytes) before the client goes.
        assert wait_until(lambda: _reservations(env.gw) == 1, timeout=10)
    assert wait_until(lambda: _reservations(env.gw) == 0, timeout=10)
    assert objects(env.gcs, env.clean) == []
    assert store_rows(env.gw) == rows


def _reservations(gw: GatewayProcess) -> int:
    return db_rows(gw, "SELECT COUNT(*) FROM reservations")[0][0]


# -- tenancy, expiry, errors -----------------------------------------------------------------


def test_another_tenants_id_is_404(env: Env) -> None:
    f = env.a.files.create(file=("mine.txt", b"team a only"), purpose="user_data")
    for call in (env.b.files.retrieve, env.b.files.content, env.b.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in env.b.files.list()]
    assert len(objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")) == 1  # untouched
    assert env.a.files.delete(f.id).deleted


def test_expired_file_is_removed_from_the_bucket(env: Env) -> None:
    f = env.a.files.create(file=("e.txt", b"expiring"), purpose="user_data",
                           expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    expire_now(env.gw, f.id)
    assert wait_until(lambda: objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/") == [])
    assert wait_until(lambda: location(env.gw, f.id) is None)


def test_missing_configured_bucket_is_502(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers=on("gcs-nobucket"))
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_bucket_not_found", e.value.body
    assert "no-such-bucket-here" not in e.value.body["message"]


def test_unreachable_gcs_is_502_without_details(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers=on("gcs-nowhere"))
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable", e.value.body
    assert e.value.response.headers["x-should-retry"] == "true"
    assert "127.0.0.1" not in e.value.body["message"]


def _provider() -> GCSProvider:
    return GCSProvider(GcsConfig(name="g", bucket="b", endpoint_url="http://127.0.0.1:9"))


@pytest.mark.parametrize("exc,status,code", [
    (GCSNotFound("GCS metadata request failed with HTTP 404", 404), 404, "file_not_found"),
    (GCSStorageError("GCS chunk upload failed with HTTP 403 (forbidden)", 403, code="forbidden"), 502,
     "upstream_auth_failed"),
    (GCSStorageError("could not obtain a GCS access token"), 502, "upstream_auth_failed"),
    (GCSStorageError("GCS delete failed with HTTP 429", 429, retryable=True), 429, "rate_limit_exceeded"),
    (GCSStorageError("GCS download failed: ClientConnectorError", retryable=True), 502, "upstream_unreachable"),
])
def test_gcs_errors_become_openai_errors(exc: GCSStorageError, status: int, code: str) -> None:
    err = _provider().gcs_error(exc, "op", file_id="file-x")
    assert (err.status, err.code) == (status, code)


def test_upload_404_on_the_configured_bucket_is_the_operators() -> None:
    start = GCSNotFound("GCS upload start failed with HTTP 404 (notFound)", 404, code="notFound")
    err = _provider().gcs_error(start, "upload", target=Target("b", False, None, None))
    assert (err.status, err.code, err.param) == (502, "upstream_bucket_not_found", None)


def test_chunk_size_setting() -> None:
    assert GCSProvider(GcsConfig(name="g", bucket="b", upload_chunk_size=1 * MiB)).chunk_size == MiB
    with pytest.raises(ValueError, match="upload_chunk_size"):
        GCSProvider(GcsConfig(name="g", bucket="b", upload_chunk_size=300 << 10))
