"""Files pass-through to OpenAI and Azure OpenAI (faithful fakes), through the real SDK."""
from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client, passthrough_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_proc import GatewayProcess
from tests.support import wait_for_exchange

OPENAI = {"x-tfy-provider-name": "my-openai"}
AZURE = {"x-tfy-provider-name": "my-azure"}
LINE = b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[]}}\n'


def test_openai_tee_forwards_exact_bytes_and_maps_headers(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    boundary = "0123456789abcdef0123456789abcdef"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + LINE % 1 + LINE % 2 + f"\r\n--{boundary}--\r\n".encode()
    r = httpx.post(gw.base_url + "/files", content=body, headers={
        **OPENAI, "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": "Bearer client-key",
        "X-Stainless-Lang": "python", "OpenAI-Beta": "assistants=v2"})
    assert r.status_code == 200, r.text
    rec = fake_openai.requests.filter("POST", "/v1/files")[-1]
    assert rec.body_sha256 == hashlib.sha256(body).hexdigest()
    assert rec.content_length == str(len(body))
    assert rec.headers["Authorization"] == "Bearer sk-upstream-test"      # provider key injected
    assert "x-tfy-provider-name" not in rec.headers                       # gateway headers stripped
    assert rec.headers["X-Stainless-Lang"] == "python"                    # end-to-end headers kept
    assert rec.headers["OpenAI-Beta"] == "assistants=v2"
    assert rec.headers["Content-Type"] == f"multipart/form-data; boundary={boundary}"
    assert "gzip" not in rec.headers.get("Accept-Encoding", "")  # bodies are forwarded undecoded
    fid = r.json()["id"]
    assert fake_openai.files[fid].bytes == len(LINE % 1 + LINE % 2)


def test_openai_five_operations_routed_by_header_then_by_id(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    content = LINE % 1 + LINE % 2
    f = c.files.create(file=("in.jsonl", content), purpose="batch", extra_headers=OPENAI)
    assert f.id in fake_openai.files and f.purpose == "batch" and f.bytes == len(content)
    # custom-llm-provider names a type that exactly one provider has
    g = c.files.create(file=("x.txt", b"hello"), purpose="user_data", extra_headers={"custom-llm-provider": "openai"})
    assert g.id in fake_openai.files
    # Ids the gateway recorded route by themselves: no header.
    assert c.files.retrieve(f.id).id == f.id
    assert c.files.content(f.id).content == content
    # Listing the provider (auth off: everything the provider has)
    assert {x.id for x in c.files.list(extra_headers=OPENAI)} == {f.id, g.id}
    assert [x.id for x in c.files.list(extra_headers=OPENAI, purpose="batch")] == [f.id]
    # Without a header the list is what the gateway recorded (default provider is local).
    assert {x.id for x in c.files.list()} == {f.id, g.id}
    assert c.files.delete(f.id).deleted
    assert f.id not in fake_openai.files
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id, extra_headers=OPENAI)
    assert [x.id for x in c.files.list()] == [g.id]


def test_azure_url_scheme_auth_and_shapes(start_gateway, fake_azure):
    gw = start_gateway(passthrough_config(fake_azure=fake_azure))
    c = client(gw)
    content = LINE % 1
    f = c.files.create(file=("in.jsonl", content), purpose="batch", extra_headers=AZURE)
    assert isinstance(f, openai.types.FileObject)
    assert f.status in ("uploaded", "processed") and f.bytes == len(content)
    rec = fake_azure.requests.filter("POST", "/openai/files")[-1]
    assert rec.query["api-version"] == "2024-10-21"
    assert rec.headers["api-key"] == "azure-upstream-key"
    assert "Authorization" not in rec.headers
    ids = [c.files.create(file=(f"{i}.jsonl", LINE % i), purpose="batch", extra_headers=AZURE).id for i in range(3)]
    # Azure classic lists everything at once; the gateway paginates like OpenAI.
    page = c.files.list(limit=2, extra_headers=AZURE)
    assert len(page.data) == 2 and page.has_more and page.last_id == page.data[-1].id
    assert {x.id for x in c.files.list(limit=2, extra_headers=AZURE)} == {f.id, *ids}
    assert c.files.retrieve(f.id).status == "processed"
    assert c.files.content(f.id).content == content
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("v.png", b"png"), purpose="vision", extra_headers=AZURE)
    assert e.value.body["type"] == "invalid_request_error"  # Azure's "error" type normalised
    assert c.files.delete(f.id).deleted


# -- upstream failures: one gateway and one fake for the module, a fresh file per test ---------


@pytest.fixture(scope="module")
def shared_openai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeOpenAI]]:
    with FakeOpenAI("openai", data_dir=tmp_path_factory.mktemp("fake-openai")) as fake:
        with GatewayProcess(tmp_path_factory.mktemp("gw"), passthrough_config(fake)) as gw:
            yield gw, fake


@pytest.fixture
def on_openai(shared_openai: tuple[GatewayProcess, FakeOpenAI]) -> Iterator[tuple[openai.OpenAI, FakeOpenAI, str]]:
    """A client of the shared gateway, its fake, and a file the test may break retrieving."""
    gw, fake = shared_openai
    fake.clear_faults()
    c = client(gw)
    f = c.files.create(file=("a.txt", b"a"), purpose="user_data", extra_headers=OPENAI)
    yield c, fake, f.id
    fake.clear_faults()


@pytest.mark.parametrize("fault", ["500", "reset"])
def test_one_transient_failure_of_an_idempotent_call_is_retried(on_openai, fault: str) -> None:
    c, fake, fid = on_openai
    if fault == "500":
        fake.fail_next(500, path="/v1/files/")
    else:
        fake.reset_next(path="/v1/files/")
    assert c.files.retrieve(fid).id == fid
    assert [r.fault for r in fake.requests.filter("GET", f"/v1/files/{fid}")] == [
        "fail" if fault == "500" else "reset", None]


def test_persistent_5xx_is_502_in_openai_shape(on_openai) -> None:
    c, fake, fid = on_openai
    fake.fail_next(503, times=3, path="/v1/files/")
    with pytest.raises(openai.InternalServerError) as e:
        c.files.retrieve(fid)
    assert e.value.status_code == 502 and set(e.value.body) == {"message", "type", "param", "code"}


def test_upstream_4xx_passes_through_with_status_and_message(on_openai) -> None:
    c, fake, fid = on_openai
    fake.fail_next(404, path="/v1/files/", body={"error": {
        "message": "No such File object: gone", "type": "invalid_request_error", "param": "id", "code": None}})
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(fid)
    assert e.value.body == {"message": "No such File object: gone", "type": "invalid_request_error",
                            "param": "id", "code": None}


def test_upstream_timeout_is_504_upstream_timeout(on_openai) -> None:
    c, fake, fid = on_openai
    fake.delay_next(3.5, times=3, path="/v1/files/")   # longer than the provider's 2 s read timeout
    with pytest.raises(openai.APIStatusError) as e:
        c.files.retrieve(fid)
    assert e.value.status_code == 504 and e.value.body["code"] == "upstream_timeout"


def test_failed_upload_is_not_retried_and_records_nothing(on_openai) -> None:
    c, fake, _ = on_openai
    before = {x.id for x in c.files.list()}
    posts = len(fake.requests.filter("POST", "/v1/files"))
    fake.fail_next(500, path="/v1/files")
    with pytest.raises(openai.InternalServerError):
        c.files.create(file=("b.txt", b"b"), purpose="user_data", extra_headers=OPENAI)
    assert len(fake.requests.filter("POST", "/v1/files")) == posts + 1
    assert {x.id for x in c.files.list()} == before


def test_gateway_key_refused_upstream_is_502_without_leaking(start_gateway, fake_openai):
    cfg = passthrough_config(fake_openai)
    cfg["providers"][1]["api_key"] = "sk-wrong-gateway-key-123456"
    gw = start_gateway(cfg)
    with pytest.raises(openai.InternalServerError) as e:
        client(gw).files.list(extra_headers=OPENAI)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_auth_failed"
    assert "sk-wrong" not in e.value.response.text and "123456" not in e.value.response.text
    assert "sk-wrong-gateway-key" not in gw.log()


def test_unseen_ids_are_404_for_a_tenant_and_served_to_an_admin(start_gateway, fake_openai):
    output = fake_openai.add_file(b'{"id":"batch_req_1"}\n', filename="out.jsonl", purpose="batch_output")
    keys = {"A_KEY": "sk-a", "OPS_KEY": "sk-ops"}
    auth = {"keys": [{"key": "os.environ/A_KEY", "tenant": "a"}, {"key": "os.environ/OPS_KEY", "tenant": "ops", "admin": True}]}
    gw = start_gateway(passthrough_config(fake_openai, auth=auth), env=keys)
    before = len(fake_openai.requests)
    with pytest.raises(openai.NotFoundError):
        client(gw, "sk-a").files.content(output.id, extra_headers=OPENAI)
    with pytest.raises(openai.NotFoundError):
        client(gw, "sk-a").files.retrieve(output.id, extra_headers=OPENAI)
    assert len(fake_openai.requests) == before  # nothing went upstream
    # A tenant's list is what it created, even when it names the provider.
    assert client(gw, "sk-a").files.list(extra_headers=OPENAI).data == []
    assert len(fake_openai.requests) == before
    assert client(gw, "sk-ops").files.content(output.id, extra_headers=OPENAI).content == b'{"id":"batch_req_1"}\n'


def test_a_shared_provider_serves_unseen_ids_to_every_tenant(start_gateway, fake_openai):
    output = fake_openai.add_file(b'{"id":"batch_req_1"}\n', filename="out.jsonl", purpose="batch_output")
    cfg = passthrough_config(fake_openai, auth={"keys": [{"key": "os.environ/A_KEY", "tenant": "a"}]})
    cfg["providers"][1]["shared"] = True
    gw = start_gateway(cfg, env={"A_KEY": "sk-a"})
    assert client(gw, "sk-a").files.retrieve(output.id, extra_headers=OPENAI).id == output.id


def test_disconnect_mid_passthrough_upload_stores_nothing(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-tfy-provider-name: my-openai\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 5000000\r\n\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n')
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head + b"\3" * (1 << 20))
        # The tee opened the upstream request while the client was still sending.
        assert fake_openai.wait_until(lambda: len(fake_openai.requests.filter("POST", "/v1/files")) == 1, 15)
    wait_for_exchange(gw, op="files.create", error="client_disconnected")
    assert fake_openai.wait_until(fake_openai.requests.answered)
    # The upstream saw a cut-off body: it answered nothing successful and stored nothing.
    assert fake_openai.requests.filter("POST", "/v1/files")[0].status != 200
    assert fake_openai.files == {}
    assert client(gw).files.list().data == []


def test_invalid_batch_never_completes_upstream(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    bad = LINE % 1 + b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("in.jsonl", bad), purpose="batch", extra_headers=OPENAI)
    assert "line 2" in e.value.body["message"] and "r1" in e.value.body["message"]
    wait_for_exchange(gw, op="files.create", status=400)
    assert fake_openai.wait_until(fake_openai.requests.answered)
    assert fake_openai.files == {}
    assert c.files.list().data == []


def test_refused_fields_never_reach_upstream(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    before = len(fake_openai.requests)
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("a.txt", b"x" * 100_000), purpose="nonsense", extra_headers=OPENAI)  # type: ignore[arg-type]
    assert e.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("b.txt", b"x"), purpose="batch", extra_headers=OPENAI)  # not .jsonl
    assert len(fake_openai.requests) == before


def test_upstream_cookies_are_not_replayed(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    f = c.files.create(file=("a.txt", b"a"), purpose="user_data", extra_headers=OPENAI)
    fake_openai.fail_next(404, path="/v1/files/", headers={"Set-Cookie": "session=tenant-a-secret; Path=/"})
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    c.files.retrieve(f.id)
    last = fake_openai.requests.filter("GET", f"/v1/files/{f.id}")[-1]
    assert "Cookie" not in last.headers
