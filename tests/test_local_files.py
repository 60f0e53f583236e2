"""The five Files operations against the embedded local provider, through the real SDK."""
from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client
from tests.support import expire_now, wait_for_exchange, wait_until

BATCH_LINE = b'{"custom_id":"%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}\n'


def batch_file(n: int = 3) -> bytes:
    return b"".join(BATCH_LINE % i for i in range(n))


def local_config(**limits: object) -> dict:
    cfg: dict = {"providers": [{"name": "local", "type": "local", "path": "./files"}], "default_provider": "local"}
    if limits:
        cfg["limits"] = limits
    return cfg


def stored_files(gw) -> list[str]:
    root = gw.workdir / "files"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_no_config_defaults_all_five_operations(start_gateway):
    gw = start_gateway(None)
    c = client(gw)
    content = batch_file(5)
    f = c.files.create(file=("input.jsonl", content), purpose="batch")
    assert isinstance(f, openai.types.FileObject)
    assert f.id.startswith("file-") and len(f.id) > 20
    assert (f.bytes, f.filename, f.purpose, f.status) == (len(content), "input.jsonl", "batch", "processed")
    assert abs(f.created_at - time.time()) < 60
    assert c.files.retrieve(f.id) == f
    assert [x.id for x in c.files.list()] == [f.id]
    assert c.files.content(f.id).content == content
    deleted = c.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(f.id)
    assert e.value.body["code"] == "file_not_found"
    assert list(c.files.list()) == []
    # Defaults: files under ./sluicegate-data/, sqlite store beside them.
    data = gw.workdir / "sluicegate-data"
    assert (data / "sluicegate.db").exists()
    assert [p for p in (data / "files").iterdir() if p.name != ".partial"] == []


def test_expires_after_and_purposes(start_gateway):
    c = client(start_gateway(local_config()))
    f = c.files.create(file=("doc.pdf", b"%PDF-1.4"), purpose="user_data",
                       expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    assert f.filename == "doc.pdf"
    g = c.files.create(file=io.BytesIO(b"raw"), purpose="assistants")
    assert g.filename == "upload" and g.expires_at is None
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("a.txt", b"x"), purpose="nonsense")
    assert e.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("a.txt", b"x"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 5})
    assert "3600" in e.value.body["message"]


def test_list_pagination_order_purpose(start_gateway):
    c = client(start_gateway(local_config()))
    ids = [c.files.create(file=(f"f{i}.txt", b"x" * i), purpose="assistants").id for i in range(5)]
    batch = c.files.create(file=("b.jsonl", batch_file()), purpose="batch").id
    everything = [f.id for f in c.files.list(limit=2)]  # SDK auto-pagination, after=data[-1].id
    assert everything == [batch] + ids[::-1]
    page = c.files.list(limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2] and page.has_more
    assert (page.first_id, page.last_id) == (ids[0], ids[1])
    assert [f.id for f in c.files.list(purpose="batch")] == [batch]
    assert [f.id for f in c.files.list(order="asc", after=ids[2])] == ids[3:] + [batch]
    assert c.files.list(after="file-unknown").data == []
    with pytest.raises(openai.BadRequestError):
        c.files.list(limit=0)
    with pytest.raises(openai.BadRequestError):
        c.files.list(order="sideways")  # type: ignore[arg-type]


def test_batch_validation_errors_store_nothing(start_gateway):
    gw = start_gateway(local_config())
    c = client(gw)
    cases = [
        (("b.txt", batch_file()), "jsonl"),
        (("b.jsonl", batch_file(2) + b'{"custom_id":"x","method":"GET","url":"/v1/chat/completions","body":{}}\n'), "line 3"),
        (("b.jsonl", batch_file(2) + BATCH_LINE % 0), "line 3"),
        (("b.jsonl", b"not json\n"), "line 1"),
        (("b.jsonl", b""), None),
    ]
    for file, expected in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.files.create(file=file, purpose="batch")
        assert e.value.response.headers["x-should-retry"] == "false"
        if expected:
            assert expected in e.value.body["message"], e.value.body
    assert stored_files(gw) == []
    assert list(c.files.list()) == []


def _raw_upload(gw, parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> httpx.Response:
    body = b""
    for name, filename, value in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return httpx.post(gw.base_url + "/files", content=body,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_curl_order_file_before_purpose(start_gateway):
    gw = start_gateway(local_config())
    ok = _raw_upload(gw, [("file", "b.jsonl", batch_file()), ("purpose", None, b"batch")])
    assert ok.status_code == 200, ok.text
    assert ok.json()["purpose"] == "batch"
    bad = _raw_upload(gw, [("file", "b.jsonl", b'{"custom_id":1}\n'), ("purpose", None, b"batch")])
    assert bad.status_code == 400 and "line 1" in bad.json()["error"]["message"]
    # The same bytes are fine when they are not a batch file.
    fine = _raw_upload(gw, [("file", "b.jsonl", b'{"custom_id":1}\n'), ("purpose", None, b"user_data")])
    assert fine.status_code == 200
    missing = _raw_upload(gw, [("purpose", None, b"batch")])
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    nopurpose = _raw_upload(gw, [("file", "a.txt", b"x")])
    assert nopurpose.status_code == 400 and nopurpose.json()["error"]["param"] == "purpose"
    assert len(stored_files(gw)) == 2
    garbage = httpx.post(gw.base_url + "/files", content=b"--b0undary\r\nnonsense",
                         headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_multipart"
    notmultipart = httpx.post(gw.base_url + "/files", json={"purpose": "batch"})
    assert notmultipart.status_code == 400
    assert len(stored_files(gw)) == 2


def test_size_limits_early_and_mid_stream(start_gateway):
    gw = start_gateway(local_config(max_file_size="2MiB", max_batch_file_size="64KiB"))
    c = client(gw)
    # Content-Length proves it too large: 413 before the body is read.
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("big.bin", b"\0" * (4 << 20)), purpose="assistants")
    assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    assert e.value.response.headers["x-should-retry"] == "false"
    # Just over the limit: caught by the running count.
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("big.bin", b"\0" * ((2 << 20) + 1)), purpose="assistants")
    assert e.value.status_code == 413
    # Exactly at the limit is fine.
    assert c.files.create(file=("ok.bin", b"\0" * (2 << 20)), purpose="assistants").bytes == 2 << 20
    # Batch limit applies once the purpose is known.
    big_batch = batch_file(1000)
    assert len(big_batch) > 64 << 10
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("b.jsonl", big_batch), purpose="batch")
    assert e.value.status_code == 413 and "64 KiB" in e.value.body["message"]

    # Chunked body (no Content-Length): aborted the moment the count passes the limit.
    def chunks():
        yield b'--xx\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
        for _ in range(64):
            yield b"\1" * (64 << 10)
        yield b"\r\n--xx--\r\n"

    r = httpx.post(gw.base_url + "/files", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 413
    assert len(stored_files(gw)) == 1
    assert len(list(c.files.list())) == 1


def test_client_disconnect_mid_upload_leaves_nothing(start_gateway):
    gw = start_gateway(local_config())
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 10000000\r\n\r\n"
            b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n')
    partial = gw.workdir / "files" / ".partial"
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head + b"\2" * (1 << 20))
        # The upload is in progress, on disk, not in memory.
        assert wait_until(lambda: len(list(partial.iterdir())) == 1)
    wait_for_exchange(gw, op="files.create", error="client_disconnected")
    assert list(partial.iterdir()) == []
    assert stored_files(gw) == []
    assert list(client(gw).files.list()) == []


def test_unknown_paths_and_methods(start_gateway):
    gw = start_gateway(local_config())
    r = httpx.get(gw.url + "/v1/nothing")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.put(gw.url + "/v1/files")
    assert r.status_code == 405
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    metrics = httpx.get(gw.url + "/metrics")
    assert metrics.status_code == 200 and "sluicegate_inflight_requests" in metrics.text


def test_base_path(start_gateway):
    cfg = local_config()
    cfg["server"] = {"base_path": "/api/llm"}
    gw = start_gateway(cfg)
    c = openai.OpenAI(base_url=gw.url + "/api/llm", api_key="x", max_retries=0)
    f = c.files.create(file=("a.txt", b"hello"), purpose="assistants")
    assert c.files.content(f.id).content == b"hello"
    assert client(gw).files.retrieve(f.id).id == f.id  # /v1 keeps working


def test_multiple_workers_share_port_and_store(start_gateway):
    gw = start_gateway(local_config(), workers=2)
    c = client(gw)
    ids = {c.files.create(file=(f"{i}.txt", b"w"), purpose="assistants").id for i in range(6)}
    for _ in range(3):
        assert {f.id for f in client(gw).files.list()} == ids


def test_expired_files_disappear_and_are_swept(start_gateway):
    cfg = local_config(tenant_storage_quota="1KB")
    cfg["server"] = {"expiry_sweep_interval": "200ms"}
    gw = start_gateway(cfg)
    c = client(gw)
    f = c.files.create(file=("e.txt", b"e" * 900), purpose="user_data",
                       expires_after={"anchor": "created_at", "seconds": 3600})
    keep = c.files.create(file=("k.txt", b"k"), purpose="user_data")
    expire_now(gw, f.id)
    assert wait_until(lambda: not (gw.workdir / "files" / f.id).exists())
    assert [x.id for x in c.files.list()] == [keep.id]
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    # Its bytes no longer count against the quota.
    assert c.files.create(file=("n.txt", b"n" * 900), purpose="user_data").bytes == 900
