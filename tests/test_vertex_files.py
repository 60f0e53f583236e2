"""The vertex provider: files in Google Cloud Storage, through the real openai SDK against the
gateway as a process, whose vertex providers point at the real fake-gcs-server.

Most tests share one gateway (auth on, two tenants) and run with 256 KiB GCS chunks, so even
small uploads take several resumable-upload rounds. Tests that must see an empty bucket
afterwards send their upload to a fresh bucket with ``x-tfy-vertex-storage-bucket-name``.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import uuid
from urllib.parse import quote
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest

from proxy.errors import GatewayError
from proxy.providers.gcs_storage import GCSNotFound, GCSStorageError
from proxy.providers.vertex import BUCKET_HEADER, MODEL_HEADER, REGION_HEADER, VertexProvider, bucket_name_problem
from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.fakes.bigfile import make_big_file
from tests.gateway_proc import GatewayProcess
from tests.support import (db_rows, exchanges, expire_now, location, raw_upload, store_rows, wait_for_exchange,
                           wait_until)

KEY_A, KEY_B = "sk-team-a", "sk-team-b"
PREFIX = "sluice/"
CHAT = {"model": "gemini-2.5-flash", "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "2+2?"}],
        "max_tokens": 16, "temperature": 0.2}


# -- fake-gcs-server helpers (plain JSON API calls, not the code under test) -------------------


def new_bucket(gcs: FakeGCS) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    r = httpx.post(f"{gcs.api_root}/storage/v1/b", params={"project": "test"}, json={"name": name})
    assert r.status_code == 200, r.text
    return name


def objects(gcs: FakeGCS, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    r = httpx.get(f"{gcs.api_root}/storage/v1/b/{bucket}/o", params={"prefix": prefix})
    assert r.status_code == 200, r.text
    return r.json().get("items", [])


def object_bytes(gcs: FakeGCS, bucket: str, name: str) -> bytes:
    r = httpx.get(f"{gcs.api_root}/storage/v1/b/{bucket}/o/{_q(name)}", params={"alt": "media"})
    assert r.status_code == 200
    return r.content


def _q(name: str) -> str:
    return quote(name, safe="")


def batch_line(custom_id: str, body: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": body or CHAT}) + b"\n"


# -- the shared gateway --------------------------------------------------------------------------


class Env:
    def __init__(self, gw: GatewayProcess, gcs: FakeGCS, bucket: str) -> None:
        self.gw, self.gcs, self.bucket = gw, gcs, bucket
        self.a = client(gw, KEY_A)
        self.b = client(gw, KEY_B)


def vertex_provider(name: str, bucket: str, gcs: FakeGCS, **extra: Any) -> dict[str, Any]:
    extra.setdefault("upload_chunk_size", "256KiB")  # several chunks even for small test files
    return {"name": name, "type": "vertex", "bucket": bucket, "project_id": "test-project",
            "endpoint_url": gcs.api_root, **extra}


@pytest.fixture(scope="module")
def env(fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket = new_bucket(fake_gcs)
    cfg = {
        "auth": {"keys": [{"key": KEY_A, "tenant": "team-a"}, {"key": KEY_B, "tenant": "team-b"}]},
        "server": {"expiry_sweep_interval": "200ms"},
        "providers": [
            vertex_provider("vertex", bucket, fake_gcs, prefix=PREFIX, model="gemini-2.5-flash"),
            vertex_provider("vertex-small", bucket, fake_gcs, max_file_size="1MiB"),
            vertex_provider("vertex-nowhere", bucket, FakeGCS("http://127.0.0.1:9")),  # nothing listens
        ],
        "default_provider": "vertex",
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("vertex-gw"), cfg)
    with gw:
        yield Env(gw, fake_gcs, bucket)


# -- the five operations ---------------------------------------------------------------------


def test_five_operations_store_in_gcs_with_metadata(env: Env) -> None:
    c = env.a
    content = os.urandom(1_500_000)  # six 256 KiB chunks
    f = c.files.create(file=("my report (v2).bin", content), purpose="user_data")
    assert isinstance(f, openai.types.FileObject)
    assert f.id.startswith("file-")
    assert (f.bytes, f.filename, f.purpose, f.status) == (len(content), "my report (v2).bin", "user_data", "processed")
    assert abs(f.created_at - time.time()) < 60

    [obj] = objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")
    assert obj["name"] == f"{PREFIX}team-a/{f.id}/my_report_v2_.bin"
    assert int(obj["size"]) == len(content)
    assert obj["metadata"] == {"file_id": f.id, "purpose": "user_data", "filename": "my report (v2).bin",
                               "tenant": "team-a"}
    loc = location(env.gw, f.id)
    assert loc == {"bucket": env.bucket, "name": obj["name"], "generation": obj["generation"],
                   "region": "us-central1", "model": "gemini-2.5-flash"}

    assert c.files.retrieve(f.id) == f
    assert f.id in [x.id for x in c.files.list()]
    assert [x.id for x in c.files.list(purpose="user_data")][:1] == [f.id]
    got = c.files.content(f.id)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(content).hexdigest()
    assert got.response.headers["content-length"] == str(len(content))

    deleted = c.files.delete(f.id)
    assert isinstance(deleted, openai.types.FileDeleted) and deleted.deleted and deleted.id == f.id
    assert objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    for call in (c.files.retrieve, c.files.content, c.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in c.files.list()]


def test_object_removed_behind_the_gateway(env: Env) -> None:
    c = env.a
    f = c.files.create(file=("gone.txt", b"soon gone"), purpose="assistants")
    [obj] = objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")
    assert httpx.delete(f"{env.gcs.api_root}/storage/v1/b/{env.bucket}/o/{_q(obj['name'])}").status_code in (200, 204)
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(f.id)
    assert e.value.body["code"] == "file_not_found"
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    assert c.files.delete(f.id).deleted  # already gone upstream: the row goes too
    assert location(env.gw, f.id) is None


def test_empty_file_and_raw_bytes_name(env: Env) -> None:
    import io

    f = env.a.files.create(file=io.BytesIO(b""), purpose="assistants")
    assert f.bytes == 0 and f.filename == "upload"
    assert env.a.files.content(f.id).content == b""
    assert [o["name"] for o in objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")] == [
        f"{PREFIX}team-a/{f.id}/upload"]


# -- batch files -----------------------------------------------------------------------------


def test_batch_file_is_stored_as_gemini_rows(env: Env) -> None:
    c = env.a
    lines = [batch_line("Row-1"), batch_line("row-2"),
             batch_line("row-3", {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"},
                                                            {"role": "user", "content": "bye"}]})]
    raw = b"".join(lines)
    f = c.files.create(file=("requests.jsonl", raw), purpose="batch",
                       extra_headers={MODEL_HEADER: "gemini-2.5-pro", REGION_HEADER: "europe-west4"})
    assert f.purpose == "batch" and f.filename == "requests.jsonl"
    [obj] = objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")
    assert f.bytes == int(obj["size"]) != len(raw)  # bytes = what is stored: the translated rows
    assert obj["contentType"] == "application/jsonl"
    assert obj["metadata"]["purpose"] == "batch"

    stored = c.files.content(f.id).content
    assert stored == object_bytes(env.gcs, env.bucket, obj["name"])
    rows = [orjson.loads(x) for x in stored.splitlines()]
    assert rows[0] == {"request": {
        "contents": [{"role": "user", "parts": [{"text": "2+2?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 16, "temperature": 0.2},
        "labels": {"custom_id": "l1"},  # "Row-1" is not a valid label value
    }}
    assert rows[1]["request"]["labels"] == {"custom_id": "row-2"}
    assert [t["role"] for t in rows[2]["request"]["contents"]] == ["user", "model", "user"]
    loc = location(env.gw, f.id)
    assert loc is not None
    assert loc["ids"] == {"l1": "Row-1"}  # only rewritten ids are kept
    assert (loc["model"], loc["region"]) == ("gemini-2.5-pro", "europe-west4")
    assert c.files.retrieve(f.id).bytes == f.bytes
    c.files.delete(f.id)


def test_untranslatable_batch_line_is_400_and_stores_nothing(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    mark = exchanges(env.gw)
    # Enough good lines that the upload session has started and taken chunks before line 3001.
    good = b"".join(batch_line(f"r-{i}") for i in range(3000))
    bad = batch_line("r-bad", {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]})
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", good + bad + batch_line("r-last")), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket})
    err = e.value.body
    assert err["code"] == "invalid_batch_file" and err["param"] == "file"
    assert "line 3001" in err["message"] and "body.tools" in err["message"], err
    assert e.value.response.headers["x-should-retry"] == "false"
    # The last line, unterminated, is translated at the end: still checked.
    n2 = batch_line("r-x", {**CHAT, "n": 2}).rstrip(b"\n")
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", batch_line("r-y") + n2), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket})
    assert "line 2" in e.value.body["message"] and "body.n" in e.value.body["message"]
    # An endpoint Gemini rows cannot express.
    emb = orjson.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": "m", "input": "x"}}) + b"\n"
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", emb), purpose="batch", extra_headers={BUCKET_HEADER: bucket})
    assert "line 1" in e.value.body["message"] and "url" in e.value.body["message"]
    wait_for_exchange(env.gw, 3, since=mark, op="files.create", status=400)
    assert objects(env.gcs, bucket) == []
    assert [f for f in env.a.files.list() if f.purpose == "batch"] == []


def _raw_upload(gw: GatewayProcess, parts: list[tuple[str, str | None, bytes]],
                headers: dict[str, str] | None = None) -> httpx.Response:
    return raw_upload(gw, parts, headers, api_key=KEY_A)


def test_late_purpose_batch_is_translated_like_purpose_first(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    to_bucket = {BUCKET_HEADER: bucket, MODEL_HEADER: "gemini-2.5-pro"}
    raw = batch_line("Row-1") + batch_line("row-2")
    first = env.a.files.create(file=("b.jsonl", raw), purpose="batch", extra_headers=to_bucket)
    # curl's order: the file is held until its purpose arrives, then streamed in as a batch file.
    r = _raw_upload(env.gw, [("file", "b.jsonl", raw), ("purpose", None, b"batch")], to_bucket)
    assert r.status_code == 200, r.text
    late = r.json()
    assert (late["purpose"], late["bytes"]) == ("batch", first.bytes)
    assert env.a.files.content(late["id"]).content == env.a.files.content(first.id).content
    loc_first, loc_late = location(env.gw, first.id), location(env.gw, late["id"])
    assert loc_first is not None and loc_late is not None
    assert {k: loc_late[k] for k in ("model", "region", "ids")} == {k: loc_first[k] for k in ("model", "region", "ids")}
    [obj] = [o for o in objects(env.gcs, bucket) if o["name"] == loc_late["name"]]
    assert obj["metadata"]["purpose"] == "batch" and obj["contentType"] == "application/jsonl"


def test_late_purpose_batch_with_a_bad_line_leaves_nothing(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    rows = store_rows(env.gw)
    # ~12 MiB of good lines, so GCS has a chunk before the bad line (a duplicate custom_id) arrives.
    long_chat = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}
    good = b"".join(batch_line(f"r{i}", long_chat) for i in range(3000))
    r = _raw_upload(env.gw, [("file", "b.jsonl", good + batch_line("r0")), ("purpose", None, b"batch")],
                    {BUCKET_HEADER: bucket})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_batch_file", r.text
    assert "line 3001" in r.json()["error"]["message"]
    assert objects(env.gcs, bucket) == [] and store_rows(env.gw) == rows


def test_late_purpose_other_than_batch_is_stored_as_sent(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    r = _raw_upload(env.gw, [("file", "n.txt", b"notes"), ("purpose", None, b"user_data")], {BUCKET_HEADER: bucket})
    assert r.status_code == 200, r.text
    [obj] = objects(env.gcs, bucket)
    assert obj["metadata"] == {"file_id": r.json()["id"], "purpose": "user_data", "filename": "n.txt",
                               "tenant": "team-a"}
    assert env.a.files.content(r.json()["id"]).content == b"notes"


# -- per-request overrides -------------------------------------------------------------------


def test_bucket_header_puts_the_object_into_another_bucket(env: Env) -> None:
    other = new_bucket(env.gcs)
    f = env.a.files.create(file=("o.txt", b"elsewhere"), purpose="user_data", extra_headers={BUCKET_HEADER: other})
    [obj] = objects(env.gcs, other)
    assert obj["name"] == f"{PREFIX}team-a/{f.id}/o.txt"
    assert objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    assert location(env.gw, f.id)["bucket"] == other  # type: ignore[index]
    # The id finds its bucket by itself.
    assert env.a.files.retrieve(f.id).id == f.id
    assert env.a.files.content(f.id).content == b"elsewhere"
    assert env.a.files.delete(f.id).deleted
    assert objects(env.gcs, other) == []


@pytest.mark.parametrize("header,value,code", [
    (BUCKET_HEADER, "Bad_Bucket", "invalid_bucket_name"),
    (BUCKET_HEADER, "ab", "invalid_bucket_name"),
    (BUCKET_HEADER, "my-google-bucket", "invalid_bucket_name"),
    (REGION_HEADER, "us central", "invalid_region"),
    (MODEL_HEADER, "gemini pro", "invalid_model"),
])
def test_invalid_override_headers_are_400(env: Env, header: str, value: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers={header: value})
    assert (e.value.body["code"], e.value.body["param"]) == (code, header)


def test_missing_bucket_from_header_is_404(env: Env) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data",
                           extra_headers={BUCKET_HEADER: f"no-such-{uuid.uuid4().hex[:8]}"})
    assert e.value.body["code"] == "bucket_not_found"


def test_unreachable_gcs_is_502_without_details(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data",
                           extra_headers={"x-tfy-provider-name": "vertex-nowhere"})
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"
    assert e.value.response.headers["x-should-retry"] == "true"
    assert "127.0.0.1" not in e.value.body["message"]


# -- aborted uploads leave nothing -----------------------------------------------------------


def test_client_disconnect_mid_upload_leaves_nothing(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    rows = store_rows(env.gw)
    mark = exchanges(env.gw)
    head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n{BUCKET_HEADER}: {bucket}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 10000000\r\n\r\n"
            '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            '--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n').encode()
    with socket.create_connection(("127.0.0.1", env.gw.port)) as s:
        s.sendall(head + b"\2" * (2 << 20))  # eight 256 KiB chunks: the session is open
        # The upload is under way: the quota filter holds a reservation for it.
        assert wait_until(lambda: db_rows(env.gw, "SELECT COUNT(*) FROM reservations")[0][0] == 1)
    wait_for_exchange(env.gw, since=mark, op="files.create", error="client_disconnected")
    assert db_rows(env.gw, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert objects(env.gcs, bucket) == []
    assert store_rows(env.gw) == rows
    assert "p.bin" not in [f.filename for f in env.a.files.list()]


def test_size_limit_mid_stream_leaves_nothing(env: Env) -> None:
    bucket = new_bucket(env.gcs)
    mark = exchanges(env.gw)
    headers = {"x-tfy-provider-name": "vertex-small", BUCKET_HEADER: bucket,
               "Content-Type": "multipart/form-data; boundary=xx", "Authorization": f"Bearer {KEY_A}"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the running count can stop it
        yield b'--xx\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
        for _ in range(32):
            yield b"\1" * (64 << 10)
        yield b"\r\n--xx--\r\n"

    r = httpx.post(env.gw.base_url + "/files", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    # Content-Length too large: refused before the body is read.
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("big.bin", b"\0" * (3 << 20)), purpose="assistants",
                           extra_headers={"x-tfy-provider-name": "vertex-small", BUCKET_HEADER: bucket})
    assert e.value.status_code == 413
    wait_for_exchange(env.gw, 2, since=mark, op="files.create", status=413)
    assert objects(env.gcs, bucket) == []
    assert "s.bin" not in [f.filename for f in env.a.files.list()]


# -- tenancy and expiry ----------------------------------------------------------------------


def test_another_tenants_id_is_404(env: Env) -> None:
    f = env.a.files.create(file=("mine.txt", b"team a only"), purpose="user_data")
    for call in (env.b.files.retrieve, env.b.files.content, env.b.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in env.b.files.list()]
    assert len(objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/")) == 1  # untouched
    assert env.a.files.content(f.id).content == b"team a only"
    g = env.b.files.create(file=("theirs.txt", b"b"), purpose="user_data")
    assert len(objects(env.gcs, env.bucket, f"{PREFIX}team-b/{g.id}/")) == 1


def test_expired_file_is_removed_from_the_bucket(env: Env) -> None:
    f = env.a.files.create(file=("e.txt", b"expiring"), purpose="user_data",
                           expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    expire_now(env.gw, f.id)
    assert wait_until(lambda: objects(env.gcs, env.bucket, f"{PREFIX}team-a/{f.id}/") == [])
    assert wait_until(lambda: location(env.gw, f.id) is None)


# -- units: naming rules and error mapping ---------------------------------------------------


@pytest.mark.parametrize("name,ok", [
    ("my-bucket", True), ("a1_b2", True), ("bucket.example.com", True), ("abc", True),
    ("ab", False), ("a" * 64, False), ("Upper", False), ("-start", False), ("end-", False),
    ("a..b", False), ("192.168.5.4", False), ("goog-x", False), ("xgooglex", False), ("a b", False),
    (".".join(["a" * 63] * 3), True), ("a" * 64 + ".com", False),
])
def test_bucket_name_rules(name: str, ok: bool) -> None:
    assert (bucket_name_problem(name) is None) == ok


def _provider() -> VertexProvider:
    from proxy.providers.configs import VertexConfig

    return VertexProvider(VertexConfig(name="v", bucket="b", project_id="p",
                                       endpoint_url="http://127.0.0.1:9"))


def _with_cause(exc: GCSStorageError, cause: BaseException) -> GCSStorageError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("exc,status,code,retry", [
    (GCSNotFound("GCS metadata request failed with HTTP 404", 404), 404, "file_not_found", False),
    (GCSStorageError("GCS chunk upload failed with HTTP 403 (forbidden)", 403, code="forbidden"), 502,
     "upstream_auth_failed", False),
    (GCSStorageError("GCS upload start failed with HTTP 401", 401), 502, "upstream_auth_failed", False),
    (GCSStorageError("could not obtain a GCS access token"), 502, "upstream_auth_failed", False),
    (GCSStorageError("GCS delete failed with HTTP 429", 429, retryable=True), 429, "rate_limit_exceeded", True),
    (GCSStorageError("GCS chunk upload failed with HTTP 503", 503, retryable=True), 502, "upstream_error", True),
    (_with_cause(GCSStorageError("GCS download failed: ServerTimeoutError", retryable=True), TimeoutError()),
     504, "upstream_timeout", True),
    (GCSStorageError("GCS download failed: ClientConnectorError", retryable=True), 502, "upstream_unreachable", True),
    (GCSStorageError("GCS stored 3 bytes of an upload of 4"), 502, "upstream_error", False),
])
def test_gcs_errors_become_openai_errors(exc: GCSStorageError, status: int, code: str, retry: bool) -> None:
    err = _provider().gcs_error(exc, "op", file_id="file-x")
    assert isinstance(err, GatewayError)
    assert (err.status, err.code, err.retryable) == (status, code, retry)
    assert "Bearer" not in err.message and "upload_id" not in err.message


def test_upload_404s() -> None:
    from proxy.providers.object_store import Target

    p = _provider()
    start = GCSNotFound("GCS upload start failed with HTTP 404 (notFound)", 404, code="notFound")
    from_header = p.gcs_error(start, "upload", target=Target("hdr-bucket", True, None, None))
    assert (from_header.status, from_header.code, from_header.param) == (404, "bucket_not_found", BUCKET_HEADER)
    configured = p.gcs_error(start, "upload", target=Target("b", False, None, None))
    assert (configured.status, configured.code) == (502, "upstream_bucket_not_found")
    session = p.gcs_error(GCSNotFound("GCS chunk upload failed with HTTP 404", 404), "upload",
                          target=Target("b", False, None, None))
    assert (session.status, session.code, session.retryable) == (502, "upstream_error", True)


# -- memory ------------------------------------------------------------------------------------

SIZE = 512 << 20
BUDGET = 64 << 20


def test_512mib_upload_to_gcs_keeps_gateway_memory_flat(fake_gcs: FakeGCS, start_gateway, tmp_path) -> None:  # noqa: F811
    src = tmp_path / "big.bin"
    digest = make_big_file(src, SIZE)
    bucket = new_bucket(fake_gcs)
    # 16 MiB chunks: 32 rounds. fake-gcs-server copies the whole object on every chunk, so
    # 8 MiB chunks (the default) take it ~45 s for 512 MiB, 16 MiB ~25 s.
    gw = start_gateway({"providers": [vertex_provider("vertex", bucket, fake_gcs, upload_chunk_size="16MiB")],
                        "default_provider": "vertex"})
    c = client(gw, timeout=300)
    c.files.list()  # warm up
    idle = gw.rss()
    gw.reset_peak_rss()
    started = time.monotonic()
    with open(src, "rb") as fh:
        f = c.files.create(file=fh, purpose="assistants")
    upload_s = time.monotonic() - started
    up_peak = gw.peak_rss()
    assert f.bytes == SIZE
    [obj] = objects(fake_gcs, bucket)
    assert int(obj["size"]) == SIZE
    gw.reset_peak_rss()
    h = hashlib.sha256()
    with c.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    down_peak = gw.peak_rss()
    assert h.hexdigest() == digest
    print(f"512 MiB upload {upload_s:.1f}s, peak +{(up_peak - idle) >> 20} MiB; download peak +{(down_peak - idle) >> 20} MiB")
    assert up_peak - idle < BUDGET, f"upload raised peak RSS by {(up_peak - idle) >> 20} MiB"
    assert down_peak - idle < BUDGET, f"download raised peak RSS by {(down_peak - idle) >> 20} MiB"


# -- units: object names and the id map bound ------------------------------------------------


def test_object_names_are_safe_segments() -> None:
    p = _provider()
    assert p.object_name("team a", "file-1", "résumé (final).pdf") == "team_a/file-1/r_sum_final_.pdf"
    assert p.object_name("t", "file-1", "..") == "t/file-1/upload"
    assert p.object_name("", "file-1", "a/../../b.jsonl") == "tenant/file-1/a_.._.._b.jsonl"
    long = p.object_name("t", "file-1", "x" * 500 + ".jsonl")
    assert long.endswith(".jsonl") and len(long.split("/")[-1]) == 200


class _CollectingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False

    async def write(self, chunk: bytes | memoryview) -> None:
        self.data += chunk

    async def abort(self) -> None:
        self.aborted = True


async def test_id_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from proxy.providers import vertex
    from proxy.providers.object_store import Target
    from proxy.transforms.batch_vertex import vertex_batch_translator

    monkeypatch.setattr(vertex, "_MAX_IDS_BYTES", 1000)
    inner = _CollectingSink()
    sink = vertex.VertexSink(_provider(), SimpleNamespace(purpose="batch"), inner,  # type: ignore[arg-type]
                             vertex_batch_translator(), Target("b", False, None, None), "o")
    await sink.write(b"".join(batch_line(f"row-{i}") for i in range(100)))  # label-safe: no map entries
    assert sink.translator.ids == {}  # type: ignore[union-attr]
    with pytest.raises(GatewayError) as e:
        for i in range(100):
            await sink.write(batch_line(f"Upper-Case-Id-{i:04d}-" + "x" * 20))
    assert e.value.status == 400 and e.value.code == "invalid_batch_file"
    assert re.search(r"line 1[0-9]{2}: too many \"custom_id\"", e.value.message), e.value.message
    assert len(sink.translator.ids) < 30  # type: ignore[union-attr]


# -- real-GCS mode: a bearer token from the credentials, errors mapped without leaking it -------

SECRET_TOKEN = "ya29.secret-access-token"


@pytest.fixture
async def scripted_gcs(tmp_path):  # type: ignore[no-untyped-def]
    """A stand-in for oauth2.googleapis.com and GCS: hands out a token, answers as told."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    seen: list[tuple[str, str, str | None]] = []
    statuses: dict[str, int] = {}

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-me"
        return web.json_response({"access_token": SECRET_TOKEN, "expires_in": 3600, "token_type": "Bearer"})

    async def gcs(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers.get("Authorization")))
        status = statuses.get(request.method, 200)
        if status != 200:
            return web.json_response({"error": {"code": status, "message": f"{SECRET_TOKEN} is not allowed",
                                                "errors": [{"reason": "forbidden" if status == 403 else "x"}]}},
                                     status=status)
        if request.method == "GET":
            return web.json_response({"name": "n", "size": "1"})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_route("*", "/{tail:.*}", gcs)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    creds = tmp_path / "adc.json"
    creds.write_text(orjson.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                                   "refresh_token": "refresh-me",
                                   "token_uri": str(server.make_url("/token"))}).decode())
    yield SimpleNamespace(root=str(server.make_url("")).rstrip("/"), creds=str(creds), seen=seen, statuses=statuses)
    await server.close()


async def test_real_gcs_mode_sends_the_token_and_never_leaks_it(scripted_gcs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from gcloud.aio.storage import Storage

    from proxy.providers.configs import VertexConfig
    from proxy.store.base import FileRecord

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    p = VertexProvider(VertexConfig(name="v", bucket="b", project_id="p",
                                    service_file=scripted_gcs.creds))
    assert not p.api_is_dev and p.api_root == "https://www.googleapis.com"
    await p.start()
    try:
        assert p.token is not None
        # Point the pooled client at the stand-in, as real GCS would be reached, with auth.
        p.storage = Storage(api_root=scripted_gcs.root, api_is_dev=False, token=p.token, session=p.session)
        rec = FileRecord(id="file-1", tenant="t", provider="v", filename="f", purpose="user_data", bytes=1,
                         created_at=0, location={"bucket": "b", "name": "t/file-1/f"})
        assert orjson.loads(await p.retrieve_file(None, rec, "file-1"))["id"] == "file-1"  # type: ignore[arg-type]
        assert scripted_gcs.seen[-1] == ("GET", "/storage/v1/b/b/o/t/file-1/f", f"Bearer {SECRET_TOKEN}")
        for status, expected, code in ((403, 502, "upstream_auth_failed"), (429, 429, "rate_limit_exceeded"),
                                       (503, 502, "upstream_error")):
            scripted_gcs.statuses["DELETE"] = status
            with pytest.raises(GatewayError) as e:
                await p.delete_file(None, rec, "file-1")  # type: ignore[arg-type]
            assert (e.value.status, e.value.code) == (expected, code)
            assert SECRET_TOKEN not in e.value.message and "refresh-me" not in e.value.message
        assert scripted_gcs.seen[-1][2] == f"Bearer {SECRET_TOKEN}"
        scripted_gcs.statuses["DELETE"] = 404
        assert orjson.loads(await p.delete_file(None, rec, "file-1"))["deleted"]  # type: ignore[arg-type]
        scripted_gcs.statuses["GET"] = 404
        with pytest.raises(GatewayError) as e:
            await p.retrieve_file(None, rec, "file-1")  # type: ignore[arg-type]
        assert (e.value.status, e.value.code) == (404, "file_not_found")
        scripted_gcs.statuses["GET"] = 403
        with pytest.raises(GatewayError) as e:
            await p.file_content(None, rec, "file-1")  # type: ignore[arg-type]
        assert (e.value.status, e.value.code) == (502, "upstream_auth_failed")
        # Uploads: the resumable session is started with the token too.
        p.api_root = scripted_gcs.root
        scripted_gcs.statuses["POST"] = 403
        ex = SimpleNamespace(request=SimpleNamespace(headers={}), tenant=SimpleNamespace(name="t"),
                             filename="f.txt", purpose="user_data", extra={})
        sink = await p.open_sink(ex, "file-2")  # type: ignore[arg-type]
        await sink.write(b"data")
        with pytest.raises(GatewayError) as e:
            await sink.complete()
        assert (e.value.status, e.value.code) == (502, "upstream_auth_failed")
        assert SECRET_TOKEN not in e.value.message
        assert scripted_gcs.seen[-1] == ("POST", "/upload/storage/v1/b/b/o", f"Bearer {SECRET_TOKEN}")
        await sink.abort()
    finally:
        await p.close()
