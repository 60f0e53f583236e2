"""Files on Groq (faithful fake), through the real OpenAI SDK and a running gateway."""
from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.conftest import client
from tests.fakes.groq_upstream import FakeGroq
from tests.gateway_proc import GatewayProcess
from tests.support import exchanges, wait_for_exchange

GROQ = {"x-tfy-provider-name": "my-groq"}
LINE = b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"hi"}]}}\n'


@pytest.fixture
def fake_groq(tmp_path: Path):
    with FakeGroq(data_dir=tmp_path / "fake-groq") as fake:
        yield fake


def groq_config(fake: FakeGroq, *, auth: dict | None = None, **provider: object) -> dict:
    p = {"name": "my-groq", "type": "groq", "api_base": fake.base_url, "api_key": fake.api_key, "max_retries": 2,
         "timeouts": {"connect": "2s", "read": "2s"}}
    p.update(provider)
    cfg: dict = {"providers": [{"name": "local", "type": "local", "path": "./files"}, p], "default_provider": "local"}
    if auth:
        cfg["auth"] = auth
    return cfg


def test_five_operations_with_openai_semantics(start_gateway, fake_groq):
    gw = start_gateway(groq_config(fake_groq))
    c = client(gw, api_key="sk-client-key-not-for-groq")
    content = LINE % 1 + LINE % 2
    f = c.files.create(file=("in.jsonl", content), purpose="batch", extra_headers=GROQ)
    assert isinstance(f, FileObject)
    assert f.id.startswith("file_") and f.bytes == len(content) and f.purpose == "batch"
    assert f.status == "processed" and f.expires_at is None and f.object == "file"
    stored = fake_groq.files[f.id]
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    rec = fake_groq.requests.filter("POST", "/openai/v1/files")[-1]
    assert rec.headers["Authorization"] == f"Bearer {fake_groq.api_key}"      # the gateway's key, not the client's
    assert "x-tfy-provider-name" not in rec.headers and "sk-client-key" not in str(dict(rec.headers))

    # custom-llm-provider names the type; ids route by themselves afterwards.
    ids = [f.id] + [c.files.create(file=(f"{i}.jsonl", LINE % i), purpose="batch",
                                   extra_headers={"custom-llm-provider": "groq"}).id for i in range(3)]
    out = fake_groq.add_file(b'{"id":"batch_req_1"}\n')            # a batch output Groq produced

    g = c.files.retrieve(f.id)
    assert isinstance(g, FileObject) and g.status == "processed" and g.expires_at is None and g.bytes == len(content)
    assert c.files.content(f.id).content == content

    # Groq returns everything unpaginated; the gateway pages like OpenAI (newest first).
    page = c.files.list(limit=2, extra_headers=GROQ)
    assert len(page.data) == 2 and page.has_more and all(isinstance(x, FileObject) for x in page.data)
    assert all(x.status == "processed" for x in page.data)
    assert [x.id for x in page.data] == [out.id, ids[3]]
    walked = [x.id for x in c.files.list(limit=2, extra_headers=GROQ)]   # SDK auto-pagination (after=…)
    assert walked == [out.id, *reversed(ids)]
    assert [x.id for x in c.files.list(order="asc", extra_headers=GROQ)] == [*ids, out.id]
    assert [x.id for x in c.files.list(purpose="batch_output", extra_headers=GROQ)] == [out.id]
    assert all(not r.query for r in fake_groq.requests.filter("GET", "/openai/v1/files"))
    last = c.files.list(limit=2, after=ids[1], extra_headers=GROQ)
    assert [x.id for x in last.data] == [ids[0]] and not last.has_more and last.first_id == last.last_id == ids[0]
    # A tenant's list without naming the provider is what the gateway recorded.
    assert sorted(x.id for x in c.files.list()) == sorted(ids)

    d = c.files.delete(f.id)
    assert isinstance(d, FileDeleted) and d.deleted and d.id == f.id
    assert f.id not in fake_groq.files
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id, extra_headers=GROQ)


def test_non_batch_purpose_is_refused_before_anything_goes_upstream(shared_groq) -> None:
    gw, fake = shared_groq
    mark, sent = exchanges(gw), len(fake.requests)
    with pytest.raises(openai.BadRequestError) as e:
        client(gw).files.create(file=("notes.txt", b"x" * 300_000), purpose="user_data", extra_headers=GROQ)
    assert e.value.body["param"] == "purpose" and "'user_data'" in e.value.body["message"]
    assert "only purpose 'batch'" in e.value.body["message"]
    wait_for_exchange(gw, since=mark, op="files.create", status=400)
    assert len(fake.requests) == sent


def test_purpose_trickling_in_over_several_reads_is_checked_before_anything_goes_upstream(shared_groq) -> None:
    gw, fake = shared_groq
    mark, sent = exchanges(gw), len(fake.requests)
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: my-groq\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 400\r\n\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_')
    rest = b'data\r\n--zz\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n' + LINE % 1
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head)
        time.sleep(0.3)  # the stimulus: the rest of the purpose field arrives in a later read
        s.sendall(rest)
        reply = s.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 400") and "'user_data'" in reply
    wait_for_exchange(gw, since=mark, op="files.create", status=400)
    assert len(fake.requests) == sent


def test_non_batch_purpose_after_the_file_is_refused_and_groq_stores_nothing(shared_groq) -> None:
    # curl's order (file first): the file is held until the purpose arrives, then refused;
    # nothing at all went to Groq.
    gw, fake = shared_groq
    mark, sent, files, listed = exchanges(gw), len(fake.requests), set(fake.files), {x.id for x in client(gw).files.list()}
    boundary = "zz"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n').encode() \
        + b"hello" * 200_000 + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n--{boundary}--\r\n'.encode()
    r = httpx.post(gw.base_url + "/files", content=body,
                   headers={**GROQ, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    wait_for_exchange(gw, since=mark, op="files.create", status=400)
    assert len(fake.requests) == sent
    assert set(fake.files) == files and {x.id for x in client(gw).files.list()} == listed


def test_groq_size_limit(start_gateway, fake_groq):
    # Groq's 100 MB is the provider's default cap, enforced from Content-Length.
    gw = start_gateway(groq_config(fake_groq))
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: my-groq\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 150000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head)
        reply = s.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "100 MB" in reply
    # A lower configured cap wins, and is enforced on the running byte count.
    gw2 = start_gateway(groq_config(fake_groq, max_file_size="1KB"))
    with pytest.raises(openai.APIStatusError) as e:
        client(gw2).files.create(file=("big.jsonl", LINE % 1 * 40), purpose="batch", extra_headers=GROQ)
    assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    wait_for_exchange(gw2, op="files.create", status=413)
    assert fake_groq.wait_until(fake_groq.requests.answered)
    assert fake_groq.files == {}


# -- upstream failures: one gateway and one fake for these tests, a fresh file per test ----------


@pytest.fixture(scope="module")
def shared_groq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeGroq]]:
    with FakeGroq(data_dir=tmp_path_factory.mktemp("fake-groq")) as fake:
        with GatewayProcess(tmp_path_factory.mktemp("gw"), groq_config(fake)) as gw:
            yield gw, fake


@pytest.fixture
def on_groq(shared_groq: tuple[GatewayProcess, FakeGroq]) -> Iterator[tuple[openai.OpenAI, FakeGroq, str, str]]:
    """A client of the shared gateway, its fake, a file id and its upstream path (for faults)."""
    gw, fake = shared_groq
    fake.clear_faults()
    c = client(gw)
    f = c.files.create(file=("in.jsonl", LINE % 1), purpose="batch", extra_headers=GROQ)
    yield c, fake, f.id, f"/openai/v1/files/{f.id}"
    fake.clear_faults()


def test_upstream_404_passes_through_in_openai_shape(on_groq) -> None:
    c, fake, fid, one = on_groq
    fake.fail_next(404, path=one)
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(fid)
    assert e.value.body["message"] == "Not found." and set(e.value.body) == {"message", "type", "param", "code"}


def test_persistent_429_keeps_retry_after(on_groq) -> None:
    c, fake, fid, one = on_groq
    fake.fail_next(429, headers={"Retry-After": "0"}, times=3, path=one)
    with pytest.raises(openai.RateLimitError) as e:
        c.files.retrieve(fid)
    assert e.value.response.headers["Retry-After"] == "0"


def test_transient_500_then_reset_is_retried(on_groq) -> None:
    c, fake, fid, one = on_groq
    fake.fail_next(500, path=one)
    fake.reset_next(path=one)
    assert c.files.retrieve(fid).id == fid


def test_persistent_503_is_502(on_groq) -> None:
    c, fake, fid, one = on_groq
    fake.fail_next(503, times=3, path=one)
    with pytest.raises(openai.InternalServerError) as e:
        c.files.retrieve(fid)
    assert e.value.status_code == 502


def test_failed_upload_is_not_retried_and_records_nothing(on_groq) -> None:
    c, fake, _, _ = on_groq
    listed = {x.id for x in c.files.list()}
    posts = len(fake.requests.filter("POST", "/openai/v1/files"))
    fake.fail_next(500, path="/openai/v1/files")
    with pytest.raises(openai.InternalServerError):
        c.files.create(file=("b.jsonl", LINE % 2), purpose="batch", extra_headers=GROQ)
    assert len(fake.requests.filter("POST", "/openai/v1/files")) == posts + 1
    assert {x.id for x in c.files.list()} == listed


def test_another_tenants_ids_are_404_and_nothing_goes_upstream(start_gateway, fake_groq):
    keys = {"A_KEY": "sk-a", "B_KEY": "sk-b"}
    auth = {"keys": [{"key": "os.environ/A_KEY", "tenant": "a"}, {"key": "os.environ/B_KEY", "tenant": "b"}]}
    gw = start_gateway(groq_config(fake_groq, auth=auth), env=keys)
    a, b = client(gw, "sk-a"), client(gw, "sk-b")
    f = a.files.create(file=("in.jsonl", LINE % 1), purpose="batch", extra_headers=GROQ)
    before = len(fake_groq.requests)
    for call in (lambda: b.files.retrieve(f.id), lambda: b.files.content(f.id), lambda: b.files.delete(f.id),
                 lambda: b.files.retrieve(f.id, extra_headers=GROQ)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list(extra_headers=GROQ).data == []
    assert len(fake_groq.requests) == before                 # nothing went upstream


def test_client_gone_mid_upload_leaves_nothing_at_groq_or_the_gateway(shared_groq):
    gw, fake = shared_groq
    mark, files, listed = exchanges(gw), set(fake.files), {x.id for x in client(gw).files.list()}
    posts = len(fake.requests.filter("POST", "/openai/v1/files"))
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: my-groq\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 9000000\r\n\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p.jsonl"\r\n\r\n')
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head + b"".join(LINE % i for i in range(5000)))
        assert fake.wait_until(lambda: len(fake.requests.filter("POST", "/openai/v1/files")) == posts + 1)
    wait_for_exchange(gw, since=mark, op="files.create", error="client_disconnected")
    assert fake.wait_until(fake.requests.answered)
    assert set(fake.files) == files
    assert {x.id for x in client(gw).files.list()} == listed
