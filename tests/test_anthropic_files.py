"""Files on Anthropic (faithful fake), through the real OpenAI SDK and a running gateway."""
from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import orjson
import pytest
from openai.types import FileDeleted, FileObject

from tests.conftest import client
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.gateway_proc import GatewayProcess
from tests.support import exchanges, wait_for_exchange, wait_until

CLAUDE = {"x-tfy-provider-name": "claude"}
DEFAULT_MODEL = "claude-default-test"


@pytest.fixture
def fake_anthropic(tmp_path: Path):
    with FakeAnthropic(data_dir=tmp_path / "fake-anthropic") as fake:
        yield fake


def anthropic_config(fake: FakeAnthropic, *, auth: dict | None = None, **provider: object) -> dict:
    p = {"name": "claude", "type": "anthropic", "api_base": fake.url, "api_key": fake.api_key,
         "path": "./anthropic-batches", "model": DEFAULT_MODEL, "max_retries": 2,
         "timeouts": {"connect": "2s", "read": "2s"}}
    p.update(provider)
    cfg: dict = {"providers": [{"name": "local", "type": "local", "path": "./files"}, p], "default_provider": "local"}
    if auth:
        cfg["auth"] = auth
    return cfg


def chat_line(custom_id: str, model: str | None = "claude-sonnet-4-5", system: str | None = None) -> bytes:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "2+2?"}]
    body: dict = {"messages": messages, "max_tokens": 64}
    if model:
        body["model"] = model
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}) + b"\n"


def multipart(fields_first: bool, purpose: str, filename: str, content: bytes, boundary: str = "b0undary") -> bytes:
    purpose_part = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'.encode()
    file_part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    parts = purpose_part + file_part if fields_first else file_part + purpose_part
    return parts + f"--{boundary}--\r\n".encode()


# --------------------------------------------------------------------------- the five operations


def test_upload_is_reencoded_and_all_operations_speak_openai(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic))
    c = client(gw, api_key="sk-client-key-should-not-leak")
    content = os.urandom(3 * 1024 * 1024 + 17)            # several chunks through the queue
    f = c.files.create(file=("report.pdf", content), purpose="user_data", extra_headers=CLAUDE)
    assert isinstance(f, FileObject)
    assert f.id.startswith("file-") and f.bytes == len(content) and f.purpose == "user_data"
    assert f.status == "processed" and f.filename == "report.pdf"

    # What Anthropic received: exactly the client's bytes, in its own multipart, with its headers.
    (stored,) = fake_anthropic.files.values()
    assert stored.sha256 == hashlib.sha256(content).hexdigest() and stored.size_bytes == len(content)
    assert stored.filename == "report.pdf" and stored.part_content_type == "application/pdf"
    rec = fake_anthropic.requests.filter("POST", "/v1/files")[-1]
    assert rec.status == 200 and list(rec.form) == ["file"]
    assert rec.headers["x-api-key"] == fake_anthropic.api_key
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert rec.headers["anthropic-beta"] == "files-api-2025-04-14"
    assert rec.headers.get("Transfer-Encoding") == "chunked" and rec.content_length is None
    for r in fake_anthropic.requests:
        leaked = [h for h in r.headers if h.lower().startswith(("x-tfy-", "x-stainless", "openai-"))
                  or h.lower() in ("authorization", "custom-llm-provider")]
        assert leaked == [], (r.path, leaked)
        assert "sk-client-key-should-not-leak" not in str(dict(r.headers))

    # retrieve: routed by the gateway id alone, FileMetadata translated.
    g = c.files.retrieve(f.id)
    assert isinstance(g, FileObject)
    assert (g.id, g.bytes, g.filename, g.purpose, g.status) == (f.id, len(content), "report.pdf", "user_data", "processed")
    assert isinstance(g.created_at, int) and abs(g.created_at - time.time()) < 60
    assert fake_anthropic.requests[-1].path == f"/v1/files/{stored.id}"

    # list: from the gateway store, with and without naming the provider.
    t = c.files.create(file=("notes.txt", b"hello"), purpose="assistants", extra_headers={"custom-llm-provider": "anthropic"})
    page = c.files.list(extra_headers=CLAUDE)
    assert [x.id for x in page.data] == [t.id, f.id] and all(isinstance(x, FileObject) for x in page.data)
    assert [x.id for x in c.files.list(purpose="user_data", extra_headers=CLAUDE)] == [f.id]
    first = c.files.list(limit=1, extra_headers=CLAUDE)
    assert first.has_more and [x.id for x in first.data] == [t.id]
    assert [x.id for x in c.files.list(extra_headers=CLAUDE, limit=1)] == [t.id, f.id]  # SDK auto-pagination
    assert {s.part_content_type for s in fake_anthropic.files.values()} == {"application/pdf", "text/plain"}

    # content: Anthropic does not let uploads be downloaded -> a clear 400.
    with pytest.raises(openai.BadRequestError) as e:
        c.files.content(f.id)
    assert e.value.body["message"].startswith("Anthropic does not allow downloading files uploaded through its Files API")
    assert e.value.body["code"] == "file_not_downloadable"
    # ... unless Anthropic says the file is downloadable: then it streams through.
    fake_anthropic.set_downloadable(stored.id)
    assert c.files.content(f.id).content == content

    # delete
    d = c.files.delete(f.id)
    assert isinstance(d, FileDeleted) and d.deleted and d.id == f.id
    assert stored.id not in fake_anthropic.files
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    assert [x.id for x in c.files.list(extra_headers=CLAUDE)] == [t.id]

    # Deleted at Anthropic behind the gateway's back: retrieve is a 404, delete still succeeds.
    (other,) = fake_anthropic.files
    fake_anthropic.remove_file(other)
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(t.id)
    assert e.value.body["code"] == "file_not_found" and t.id in e.value.body["message"]
    assert c.files.delete(t.id).deleted
    assert c.files.list().data == []


def test_purpose_after_file_is_spooled_then_sent(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic))
    content = b"plain text " * 1000
    body = multipart(False, "assistants", "late.txt", content)
    r = httpx.post(gw.base_url + "/files", content=body,
                   headers={**CLAUDE, "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == len(content) and r.json()["purpose"] == "assistants"
    (stored,) = fake_anthropic.files.values()
    assert stored.sha256 == hashlib.sha256(content).hexdigest() and stored.part_content_type == "text/plain"
    assert os.listdir(gw.workdir / "anthropic-batches" / ".partial") == []   # nothing left behind


def test_late_purpose_validates_the_spooled_file_and_a_second_purpose_is_refused(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic))
    headers = {**CLAUDE, "Content-Type": "multipart/form-data; boundary=b0undary"}
    late_batch = multipart(False, "batch", "late.jsonl", b"this is not json\n")
    r = httpx.post(gw.base_url + "/files", content=late_batch, headers=headers)
    assert r.status_code == 400 and "line 1" in r.json()["error"]["message"], r.text
    twice = (b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
             + late_batch)
    r = httpx.post(gw.base_url + "/files", content=twice, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "duplicate_field", r.text
    assert os.listdir(gw.workdir / "anthropic-batches" / ".partial") == []
    assert fake_anthropic.files == {} and client(gw).files.list().data == []


# --------------------------------------------------------------------------- batch files


def test_batch_file_is_translated_and_kept_on_the_gateway(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic))
    c = client(gw)
    src = (chat_line("row-1", system="Be brief.") + chat_line("has space/and:colon") +
           chat_line("row-3", model=None))
    f = c.files.create(file=("in.jsonl", src), purpose="batch", extra_headers=CLAUDE)
    assert isinstance(f, FileObject) and f.purpose == "batch"
    assert len(fake_anthropic.requests) == 0          # nothing went to Anthropic

    out = c.files.content(f.id).content
    assert f.bytes == len(out) and c.files.retrieve(f.id).bytes == len(out)
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["custom_id"] for r in rows] == ["row-1", "L2", "row-3"]   # an id Anthropic cannot carry is rewritten
    assert set(rows[0]) == {"custom_id", "params"}
    p0 = rows[0]["params"]
    assert p0["model"] == "claude-sonnet-4-5" and p0["max_tokens"] == 64 and p0["system"] == "Be brief."
    assert p0["messages"] == [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]
    assert rows[2]["params"]["model"] == DEFAULT_MODEL            # the provider's default model
    batch_dir = gw.workdir / "anthropic-batches"
    assert (batch_dir / f.id).read_bytes() == out
    assert orjson.loads((batch_dir / f"{f.id}.ids.json").read_bytes()) == {"L2": "has space/and:colon"}

    # purpose after the file (curl's order): held by the core, then translated.
    body = multipart(False, "batch", "late.jsonl", chat_line("x-1"))
    r = httpx.post(gw.base_url + "/files", content=body,
                   headers={**CLAUDE, "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 200, r.text
    late = r.json()["id"]
    assert orjson.loads(c.files.content(late).content)["custom_id"] == "x-1"

    # A line that cannot be translated for Anthropic is a 400 naming the line; nothing is kept.
    bad = chat_line("ok-1") + orjson.dumps({"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions",
                                            "body": {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                     "n": 3}}) + b"\n"
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("bad.jsonl", bad), purpose="batch", extra_headers=CLAUDE)
    assert "line 2" in e.value.body["message"] and e.value.body["code"] == "invalid_batch_file"
    assert sorted(x.id for x in c.files.list(extra_headers=CLAUDE)) == sorted([f.id, late])

    assert c.files.delete(f.id).deleted and c.files.delete(late).deleted
    assert sorted(os.listdir(batch_dir)) == [".partial"] and os.listdir(batch_dir / ".partial") == []
    assert len(fake_anthropic.requests) == 0


# --------------------------------------------------------------------------- errors


# -- upstream failures: one gateway and one fake for these tests, a fresh file per test ----------


@pytest.fixture(scope="module")
def shared_claude(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeAnthropic]]:
    with FakeAnthropic(data_dir=tmp_path_factory.mktemp("fake-anthropic")) as fake:
        with GatewayProcess(tmp_path_factory.mktemp("gw"), anthropic_config(fake)) as gw:
            yield gw, fake


@pytest.fixture
def on_claude(shared_claude: tuple[GatewayProcess, FakeAnthropic]) -> Iterator[tuple[openai.OpenAI, FakeAnthropic, str, str]]:
    """A client of the shared gateway, its fake, a file's gateway id and the path of its
    Anthropic copy (for faults on retrieving it)."""
    gw, fake = shared_claude
    fake.clear_faults()
    c = client(gw)
    before = set(fake.files)
    f = c.files.create(file=("a.txt", b"a"), purpose="user_data", extra_headers=CLAUDE)
    (aid,) = set(fake.files) - before
    yield c, fake, f.id, f"/v1/files/{aid}"
    fake.clear_faults()


def test_upstream_404_is_file_not_found_in_openai_shape(on_claude) -> None:
    c, fake, fid, one = on_claude
    fake.fail_next(404, path=one)
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(fid)
    assert e.value.body == {"message": f"No such File object: {fid}", "type": "invalid_request_error",
                            "param": "file_id", "code": "file_not_found"}


def test_one_overloaded_answer_is_retried(on_claude) -> None:
    c, fake, fid, one = on_claude
    fake.fail_next(529, path=one)
    assert c.files.retrieve(fid).id == fid


def test_persistent_overload_is_503_the_client_may_retry(on_claude) -> None:
    c, fake, fid, one = on_claude
    fake.fail_next(529, times=3, path=one)
    with pytest.raises(openai.InternalServerError) as e:
        c.files.retrieve(fid)
    assert e.value.status_code == 503 and e.value.body["code"] == "upstream_overloaded"
    assert e.value.body["type"] == "server_error" and e.value.response.headers["x-should-retry"] == "true"


def test_transient_500_then_reset_is_retried(on_claude) -> None:
    c, fake, fid, one = on_claude
    fake.fail_next(500, path=one)
    fake.reset_next(path=one)
    assert c.files.retrieve(fid).id == fid


def test_persistent_500_is_502_upstream_error(on_claude) -> None:
    c, fake, fid, one = on_claude
    fake.fail_next(500, times=3, path=one)
    with pytest.raises(openai.InternalServerError) as e:
        c.files.retrieve(fid)
    assert e.value.status_code == 502 and set(e.value.body) == {"message", "type", "param", "code"}
    assert e.value.body["code"] == "upstream_error"


def test_upload_429_keeps_status_and_retry_after_and_is_not_retried(on_claude) -> None:
    c, fake, _, _ = on_claude
    files, listed = set(fake.files), {x.id for x in c.files.list()}
    posts = len(fake.requests.filter("POST", "/v1/files"))
    fake.fail_next(429, headers={"Retry-After": "17"}, path="/v1/files")
    with pytest.raises(openai.RateLimitError) as e:
        c.files.create(file=("b.txt", b"b"), purpose="user_data", extra_headers=CLAUDE)
    assert e.value.response.headers["Retry-After"] == "17" and e.value.body["code"] == "rate_limit_exceeded"
    assert len(fake.requests.filter("POST", "/v1/files")) == posts + 1
    assert set(fake.files) == files and {x.id for x in c.files.list()} == listed


def test_upload_reset_mid_body_is_502_and_stores_nothing(on_claude) -> None:
    c, fake, _, _ = on_claude
    files, listed = set(fake.files), {x.id for x in c.files.list()}
    fake.reset_next(path="/v1/files", after_bytes=100_000)
    with pytest.raises(openai.InternalServerError) as e:
        c.files.create(file=("c.bin", b"c" * 1_000_000), purpose="user_data", extra_headers=CLAUDE)
    assert e.value.status_code == 502
    assert fake.wait_until(fake.requests.answered)
    assert set(fake.files) == files and {x.id for x in c.files.list()} == listed
    assert not [p for p in os.listdir(fake.data_dir) if p.endswith(".part")]


def test_refused_gateway_key_is_502_without_leaking_it(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic, api_key="sk-ant-wrong-gateway-key-987654"))
    with pytest.raises(openai.InternalServerError) as e:
        client(gw).files.create(file=("a.txt", b"a"), purpose="user_data", extra_headers=CLAUDE)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_auth_failed"
    assert "sk-ant-wrong" not in e.value.response.text and "987654" not in e.value.response.text
    assert "sk-ant-wrong-gateway-key" not in gw.log()
    assert client(gw).files.list().data == []


def test_missing_files_beta_header_is_a_400_naming_it(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic, anthropic_beta="some-other-beta"))
    with pytest.raises(openai.BadRequestError) as e:
        client(gw).files.create(file=("a.txt", b"a"), purpose="user_data", extra_headers=CLAUDE)
    assert "anthropic-beta" in e.value.body["message"] and "files-api-2025-04-14" in e.value.body["message"]
    assert fake_anthropic.files == {}


def test_configured_size_cap_is_enforced_on_the_running_count(start_gateway, fake_anthropic):
    gw = start_gateway(anthropic_config(fake_anthropic, max_file_size="1KB"))
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.create(file=("big.txt", b"x" * 5000), purpose="user_data", extra_headers=CLAUDE)
    assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    wait_for_exchange(gw, op="files.create", status=413)
    assert fake_anthropic.wait_until(fake_anthropic.requests.answered)
    assert all(r.status != 200 for r in fake_anthropic.requests)
    assert fake_anthropic.files == {}


def test_anthropic_500mb_default_cap_is_enforced_from_content_length(shared_claude):
    gw, fake = shared_claude
    mark, before = exchanges(gw), len(fake.requests)
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: claude\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 600000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head)
        reply = s.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "500 MB" in reply
    wait_for_exchange(gw, since=mark, op="files.create", status=413)
    assert len(fake.requests) == before


# --------------------------------------------------------------------------- disconnects, tenancy


def _disconnect_mid_upload(gw, purpose: bytes, payload: bytes, in_progress) -> None:  # type: ignore[no-untyped-def]
    """Send part of an upload, wait until ``in_progress()`` shows the gateway is handling it,
    then close the connection."""
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: claude\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 9000000\r\n\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p.jsonl"\r\n\r\n')
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head + payload)
        assert wait_until(in_progress), "the upload never started"


def test_client_disconnect_mid_upload_leaves_nothing(shared_claude):
    gw, fake = shared_claude
    mark, files, posts = exchanges(gw), set(fake.files), len(fake.requests.filter("POST", "/v1/files"))
    _disconnect_mid_upload(gw, b"user_data", b"\3" * (1 << 20),
                           lambda: len(fake.requests.filter("POST", "/v1/files")) == posts + 1)
    wait_for_exchange(gw, since=mark, op="files.create", error="client_disconnected")
    assert fake.wait_until(fake.requests.answered)
    assert set(fake.files) == files
    assert not [p for p in os.listdir(fake.data_dir) if p.endswith(".part")]


def test_client_disconnect_mid_batch_upload_leaves_nothing(shared_claude):
    gw, fake = shared_claude
    mark, sent, listed = exchanges(gw), len(fake.requests), {x.id for x in client(gw).files.list()}
    batch_dir = gw.workdir / "anthropic-batches"
    _disconnect_mid_upload(gw, b"batch", b"".join(chat_line(f"r{i}") for i in range(2000)),
                           lambda: (batch_dir / ".partial").is_dir() and os.listdir(batch_dir / ".partial"))
    wait_for_exchange(gw, since=mark, op="files.create", error="client_disconnected")
    assert os.listdir(batch_dir / ".partial") == []
    assert {x.id for x in client(gw).files.list()} == listed
    assert len(fake.requests) == sent  # batch files never go to Anthropic


def test_client_gone_before_the_answer_deletes_the_file_anthropic_made(shared_claude):
    # The whole body reached Anthropic, then the client left before the answer: the file
    # Anthropic creates is deleted again and nothing is recorded.
    gw, fake = shared_claude
    files, listed = set(fake.files), {x.id for x in client(gw).files.list()}
    deletes = len(fake.requests.filter("DELETE", "/v1/files/*"))
    fake.delay_next(0.8, path="/v1/files")
    with pytest.raises(openai.APITimeoutError):
        client(gw, timeout=0.3).files.create(file=("late.txt", b"abc"), purpose="user_data", extra_headers=CLAUDE)
    assert fake.wait_until(lambda: len(fake.requests.filter("DELETE", "/v1/files/*")) == deletes + 1, 10)
    assert set(fake.files) == files and {x.id for x in client(gw).files.list()} == listed


def test_tenancy(start_gateway, fake_anthropic):
    keys = {"A_KEY": "sk-a", "B_KEY": "sk-b", "OPS_KEY": "sk-ops"}
    auth = {"keys": [{"key": "os.environ/A_KEY", "tenant": "a"}, {"key": "os.environ/B_KEY", "tenant": "b"},
                     {"key": "os.environ/OPS_KEY", "tenant": "ops", "admin": True}]}
    gw = start_gateway(anthropic_config(fake_anthropic, auth=auth), env=keys)
    a, b = client(gw, "sk-a"), client(gw, "sk-b")
    f = a.files.create(file=("a.txt", b"secret of a"), purpose="user_data", extra_headers=CLAUDE)
    before = len(fake_anthropic.requests)
    for call in (lambda: b.files.retrieve(f.id), lambda: b.files.content(f.id), lambda: b.files.delete(f.id),
                 lambda: b.files.retrieve(f.id, extra_headers=CLAUDE)):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["message"] == f"No such File object: {f.id}"
    assert b.files.list(extra_headers=CLAUDE).data == []
    # Anthropic's own ids are never reachable through the gateway, not even for admins.
    (aid,) = fake_anthropic.files
    with pytest.raises(openai.NotFoundError):
        client(gw, "sk-ops").files.retrieve(aid, extra_headers=CLAUDE)
    assert len(fake_anthropic.requests) == before
    assert [x.id for x in a.files.list(extra_headers=CLAUDE)] == [f.id]
    assert a.files.delete(f.id).deleted and fake_anthropic.files == {}
