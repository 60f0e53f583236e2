"""The Uploads API (``/v1/uploads``) through the real openai SDK: files assembled from parts on
``local`` (composed in the kernel) and through files.create's path (batch JSONL), its limits and
errors with nothing left behind, tenancy, quota, concurrency and expiry."""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client, passthrough_config
from tests.support import db_rows, wait_until
from tests.test_local_files import batch_file, local_config
from tests.test_tenancy import KEYS, auth_config

PART = 64 << 10  # small parts keep the suite fast


def payload(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def parts_on_disk(gw) -> list[str]:
    root = gw.workdir / "files" / ".uploads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def reservations(gw) -> list[tuple]:
    return db_rows(gw, "SELECT id, bytes, owner FROM reservations")


def part_rows(gw) -> int:
    return db_rows(gw, "SELECT COUNT(*) FROM upload_parts")[0][0]


def new_upload(c: openai.OpenAI, size: int, purpose: str = "assistants", filename: str = "big.bin", **kw):
    return c.uploads.create(bytes=size, filename=filename, mime_type="application/octet-stream", purpose=purpose,
                            **kw)


def test_upload_file_chunked_to_local_is_a_normal_file(start_gateway, tmp_path):
    gw = start_gateway(local_config())
    c = client(gw)
    data = payload(5 * PART + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    up = c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="assistants",
                                       part_size=PART)
    assert isinstance(up, openai.types.Upload)
    assert up.status == "completed" and up.id.startswith("upload_") and up.object == "upload"
    assert (up.bytes, up.filename, up.purpose) == (len(data), "big.bin", "assistants")
    assert up.expires_at == up.created_at + 3600
    f = up.file
    assert f is not None and f.id.startswith("file-") and f.bytes == len(data)
    assert hashlib.sha256(c.files.content(f.id).content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert c.files.retrieve(f.id) == f
    assert [x.id for x in c.files.list()] == [f.id]
    # Composed in the provider's directory; the parts, their rows and the reservation are gone
    # (its bytes are the file's now).
    assert (gw.workdir / "files" / f.id).stat().st_size == len(data)
    assert parts_on_disk(gw) == [] and part_rows(gw) == 0 and reservations(gw) == []
    assert db_rows(gw, "SELECT status, file_id FROM uploads") == [("completed", f.id)]
    assert c.files.delete(f.id).deleted
    assert not (gw.workdir / "files" / f.id).exists()


def test_raw_calls_shapes_and_expires_after(start_gateway):
    c = client(start_gateway(local_config()))
    up = new_upload(c, 10, expires_after={"anchor": "created_at", "seconds": 7200})
    assert (up.status, up.file, up.bytes) == ("pending", None, 10)
    p1 = c.uploads.parts.create(up.id, data=b"01234")
    assert isinstance(p1, openai.types.uploads.UploadPart)
    assert p1.object == "upload.part" and p1.upload_id == up.id and p1.id.startswith("part_")
    p2 = c.uploads.parts.create(up.id, data=b"56789")
    done = c.uploads.complete(up.id, part_ids=[p2.id, p1.id], md5=hashlib.md5(b"5678901234").hexdigest())
    assert done.status == "completed" and done.file.bytes == 10
    assert done.file.expires_at == done.file.created_at + 7200  # expires_after applies to the File
    assert c.files.content(done.file.id).content == b"5678901234"


def test_batch_upload_validated_across_parts_and_translated_path(start_gateway):
    """purpose=batch goes through files.create's path (batch_jsonl), not compose: a bad line
    in the second part is named by its line number in the whole file."""
    c = client(start_gateway(local_config()))
    good = batch_file(40)
    up = c.uploads.upload_file_chunked(file=good, filename="in.jsonl", bytes=len(good),
                                       mime_type="application/jsonl", purpose="batch", part_size=1000)
    assert up.status == "completed" and c.files.content(up.file.id).content == good

    bad = batch_file(30) + b"not json\n"
    up = new_upload(c, len(bad), purpose="batch", filename="in.jsonl")
    ids = [c.uploads.parts.create(up.id, data=bad[i:i + 1000]).id for i in range(0, len(bad), 1000)]
    assert len(ids) > 1
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(up.id, part_ids=ids)
    assert e.value.body["code"] == "invalid_batch_file" and "line 31" in e.value.body["message"]
    # Nothing stored (only the good file is there); the upload stays pending until cancelled.
    assert len(list(c.files.list())) == 1
    assert c.uploads.cancel(up.id).status == "cancelled"


def test_errors_leave_nothing_behind(start_gateway):
    gw = start_gateway(local_config(max_file_size="1MiB"))
    c = client(gw)
    # Declared too large for a file, or for any upload.
    with pytest.raises(openai.APIStatusError) as e:
        new_upload(c, (1 << 20) + 1)
    assert e.value.status_code == 413 and e.value.body["param"] == "bytes"
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.create(bytes=10, filename="a", mime_type="text/plain", purpose="nonsense")
    assert e.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as e:
        c.post("/uploads", body={"filename": "a", "mime_type": "x", "purpose": "assistants"}, cast_to=object)
    assert e.value.body["code"] == "missing_required_parameter" and e.value.body["param"] == "bytes"
    for bad in ({"purpose": {}}, {"bytes": -1}, {"bytes": True}, {"filename": ""}, {"mime_type": 3},
                {"expires_after": {"anchor": "created_at", "seconds": 5}}):
        body = {"bytes": 1, "filename": "a", "mime_type": "x", "purpose": "assistants", **bad}
        with pytest.raises(openai.BadRequestError) as e:
            c.post("/uploads", body=body, cast_to=object)
        assert e.value.body["param"].split(".")[0] == next(iter(bad)), bad

    up = new_upload(c, 10)
    a = c.uploads.parts.create(up.id, data=b"aaaa")
    # A part that would pass the declared size is refused as it streams.
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.parts.create(up.id, data=b"b" * 7)
    assert e.value.body["code"] == "upload_size_exceeded"
    # Sum of parts != declared bytes.
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(up.id, part_ids=[a.id])
    assert e.value.body["code"] == "upload_size_mismatch"
    b = c.uploads.parts.create(up.id, data=b"bbbbbb")
    # Unknown, repeated and foreign part ids.
    other = new_upload(c, 3)
    foreign = c.uploads.parts.create(other.id, data=b"xyz")
    for ids, param in (([a.id, "part_nope"], "part_ids[1]"), ([a.id, a.id], "part_ids[1]"),
                       ([foreign.id, b.id], "part_ids[0]")):
        with pytest.raises(openai.BadRequestError) as e:
            c.uploads.complete(up.id, part_ids=ids)
        assert e.value.body["param"] == param
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(up.id, part_ids=[a.id, b.id], md5="0" * 32)
    assert e.value.body["code"] == "md5_mismatch"
    assert list(c.files.list()) == [] and os.listdir(gw.workdir / "files" / ".partial") == []
    # Still pending after every failed complete: it completes now.
    assert c.uploads.complete(up.id, part_ids=[a.id, b.id]).file.bytes == 10
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.parts.create(up.id, data=b"x")
    assert e.value.body["code"] == "upload_completed"
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(up.id, part_ids=[a.id, b.id])
    assert e.value.body["code"] == "upload_completed"
    # Cancel removes the parts at once and releases the quota; nothing more is accepted.
    cancelled = c.uploads.cancel(other.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    for call in (lambda: c.uploads.parts.create(other.id, data=b"x"),
                 lambda: c.uploads.complete(other.id, part_ids=[foreign.id]), lambda: c.uploads.cancel(other.id)):
        with pytest.raises(openai.BadRequestError) as e:
            call()
        assert e.value.body["code"] == "upload_cancelled"
    assert parts_on_disk(gw) == [] and part_rows(gw) == 0 and reservations(gw) == []
    # Not multipart, or without its data part.
    r = httpx.post(gw.base_url + f"/uploads/{new_upload(c, 1).id}/parts", content=b"x",
                   headers={"Content-Type": "multipart/form-data; boundary=q"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
    assert r.headers["x-should-retry"] == "false"


def test_part_larger_than_64mib_refused_from_content_length(start_gateway):
    import socket

    gw = start_gateway(local_config())
    c = client(gw)
    up = new_upload(c, 100 << 20)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(f"POST /v1/uploads/{up.id}/parts HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  f"boundary=b\r\nContent-Length: {(64 << 20) + (2 << 20)}\r\n\r\n".encode())
        head = s.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413") and "part_too_large" in head
    assert parts_on_disk(gw) == [] and part_rows(gw) == 0


def test_tenancy_and_quota(start_gateway):
    gw = start_gateway(auth_config(tenant_storage_quota="100KB"), env=KEYS)
    a, b = client(gw, "sk-team-a"), client(gw, "sk-team-b")
    up = new_upload(a, 60_000)
    pa = a.uploads.parts.create(up.id, data=b"x" * 60_000)
    for call in (lambda: b.uploads.parts.create(up.id, data=b"x"), lambda: b.uploads.complete(up.id, part_ids=[pa.id]),
                 lambda: b.uploads.cancel(up.id)):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["code"] == "upload_not_found" and e.value.body["param"] == "upload_id"
    # The declared bytes are reserved at create: a second upload that would pass the quota
    # together with the first is refused at once, even with no part sent yet.
    with pytest.raises(openai.RateLimitError) as e:
        new_upload(a, 50_000)
    assert e.value.body["code"] == "storage_quota_exceeded" and e.value.response.headers["x-should-retry"] == "false"
    assert new_upload(b, 50_000).status == "pending"  # another tenant's quota
    f = a.uploads.complete(up.id, part_ids=[pa.id]).file
    assert [x.id for x in a.files.list()] == [f.id] and list(b.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        b.files.content(f.id)
    # Completed: the reservation became the file (still counted); deleting frees it.
    with pytest.raises(openai.RateLimitError):
        new_upload(a, 50_000)
    a.files.delete(f.id)
    assert new_upload(a, 50_000).status == "pending"


def test_racing_creates_never_reserve_past_the_quota(start_gateway):
    """Eight uploads declared at once by one tenant, where only three fit its quota: exactly
    three are reserved (the reservation is atomic in the store), the rest are refused."""
    gw = start_gateway(auth_config(tenant_storage_quota="100KB"), env=KEYS, workers=2)
    a = client(gw, "sk-team-a", default_headers={"Connection": "close"})  # spread over both workers

    def create(_: int) -> str:
        try:
            return new_upload(a, 30_000).status
        except openai.RateLimitError as exc:
            return exc.body["code"]  # type: ignore[index]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(create, range(8)))
    assert outcomes == ["pending"] * 3 + ["storage_quota_exceeded"] * 5


def test_four_concurrent_parts(start_gateway):
    c = client(start_gateway(local_config()))
    chunks = [payload(PART, seed=i) for i in range(8)]
    up = new_upload(c, sum(map(len, chunks)))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda d: c.uploads.parts.create(up.id, data=d), chunks))
    f = c.uploads.complete(up.id, part_ids=[p.id for p in parts]).file
    assert c.files.content(f.id).content == b"".join(chunks)


def test_pending_upload_expires_with_its_parts(start_gateway):
    cfg = local_config()
    cfg["server"] = {"expiry_sweep_interval": "1s"}
    gw = start_gateway(cfg)
    c = client(gw)
    up = new_upload(c, 10)
    c.uploads.parts.create(up.id, data=b"01234")
    assert parts_on_disk(gw) and part_rows(gw) == 1 and len(reservations(gw)) == 1
    db_rows(gw, "UPDATE uploads SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, up.id))
    assert wait_until(lambda: db_rows(gw, "SELECT status FROM uploads") == [("expired",)], timeout=30)
    assert parts_on_disk(gw) == [] and part_rows(gw) == 0 and reservations(gw) == []
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.parts.create(up.id, data=b"x")
    assert e.value.body["code"] == "upload_expired"


def test_restart_leaks_no_part(start_gateway):
    """A part left by a process that died (its row never written, or the upload settled while
    it was written) is removed by the next start's sweep."""
    gw = start_gateway(local_config())
    c = client(gw)
    up = new_upload(c, 10)
    c.uploads.parts.create(up.id, data=b"0123456789")
    c.uploads.cancel(up.id)
    stray = gw.workdir / "files" / ".uploads" / up.id / "part_stray.partial"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a crash")
    live = new_upload(c, 4)
    c.uploads.parts.create(live.id, data=b"live")
    gw.stop()
    gw.start()
    assert wait_until(lambda: not stray.parent.exists(), timeout=30)
    assert [p.split("/")[0] for p in parts_on_disk(gw)] == [live.id, live.id]  # its dir and its part
    assert client(gw).uploads.complete(live.id, part_ids=[p.split("/")[1] for p in parts_on_disk(gw)
                                                          if "/" in p]).file.bytes == 4


def test_unknown_upload_id_and_methods(start_gateway):
    gw = start_gateway(local_config())
    c = client(gw)
    with pytest.raises(openai.NotFoundError) as e:
        c.uploads.cancel("upload_doesnotexist")
    assert e.value.body["code"] == "upload_not_found"
    r = httpx.get(gw.base_url + "/uploads/upload_x/cancel")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


# -- pass-through: openai and azure forward the four calls ---------------------------------


@pytest.mark.parametrize("flavor", ["openai", "azure"])
def test_passthrough_forwards_and_records_for_the_tenant(start_gateway, fake_openai, fake_azure, tmp_path, flavor):
    fake = fake_openai if flavor == "openai" else fake_azure
    name = "my-openai" if flavor == "openai" else "my-azure"
    cfg = passthrough_config(fake_openai, fake_azure)
    cfg.update(auth_config())
    cfg["providers"] = passthrough_config(fake_openai, fake_azure)["providers"]
    gw = start_gateway(cfg, env=KEYS)
    headers = {"x-tfy-provider-name": name}
    a = client(gw, "sk-team-a", default_headers=headers)
    b = client(gw, "sk-team-b", default_headers=headers)
    data = payload(3 * PART + 7)
    src = tmp_path / "train.jsonl"
    src.write_bytes(data)
    up = a.uploads.upload_file_chunked(file=src, mime_type="application/jsonl", purpose="fine-tune", part_size=PART)
    assert up.status == "completed" and up.id in fake.uploads and fake.uploads[up.id].status == "completed"
    f = up.file
    assert fake.files[f.id].sha256 == hashlib.sha256(data).hexdigest()
    # The completed File is the tenant's: listed, readable, deletable by it only.
    assert [x.id for x in a.files.list()] == [f.id] and list(b.files.list()) == []
    assert hashlib.sha256(a.files.content(f.id).content).hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(f.id)
    paths = [r.path for r in fake.requests.filter(method="POST") if "/uploads" in r.path]
    prefix = "/v1" if flavor == "openai" else "/openai"
    assert paths[0] == f"{prefix}/uploads" and paths[-1] == f"{prefix}/uploads/{up.id}/complete"
    if flavor == "azure":
        assert all(r.query.get("api-version") == "2024-10-21" for r in fake.requests if "/uploads" in r.path)
    # Another tenant cannot touch the upload; cancel is forwarded and settles the quota.
    other = a.uploads.create(bytes=5, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        b.uploads.cancel(other.id)
    assert a.uploads.cancel(other.id).status == "cancelled" and fake.uploads[other.id].status == "cancelled"
    assert reservations(gw) == []
    # The upstream's own errors come back OpenAI-shaped.
    bad = a.uploads.create(bytes=5, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    p = a.uploads.parts.create(bad.id, data=b"1234")
    with pytest.raises(openai.BadRequestError) as e:
        a.uploads.complete(bad.id, part_ids=[p.id])
    assert e.value.body["param"] == "part_ids"
    assert db_rows(gw, "SELECT status FROM uploads WHERE id = ?", (bad.id,)) == [("pending",)]


# -- anthropic: no part store of its own, parts on the gateway's disk ------------------------


def test_anthropic_upload_streams_the_parts_upstream(start_gateway, tmp_path):
    from tests.fakes.anthropic_upstream import FakeAnthropic
    from tests.test_anthropic_files import anthropic_config, chat_line

    with FakeAnthropic(data_dir=tmp_path / "fake-anthropic") as fake:
        gw = start_gateway(anthropic_config(fake))
        c = client(gw, default_headers={"x-tfy-provider-name": "claude"})
        data = payload(3 * PART + 11)
        up = c.uploads.upload_file_chunked(file=data, filename="doc.bin", bytes=len(data),
                                           mime_type="application/octet-stream", purpose="user_data", part_size=PART)
        assert up.status == "completed" and up.file.bytes == len(data)
        [stored] = fake.files.values()
        assert stored.sha256 == hashlib.sha256(data).hexdigest()  # one streamed upload of the whole file
        spool = gw.workdir / "sluicegate-data" / "uploads"
        assert not spool.exists() or list(spool.iterdir()) == []
        # A batch file is translated for Message Batches, as a single upload is.
        lines = b"".join(chat_line(f"r{i}") for i in range(30))
        single = c.files.create(file=("b.jsonl", lines), purpose="batch")
        up = c.uploads.upload_file_chunked(file=lines, filename="b.jsonl", bytes=len(lines),
                                           mime_type="application/jsonl", purpose="batch", part_size=500)
        assert c.files.content(up.file.id).content == c.files.content(single.id).content


def test_client_gone_mid_part_leaves_no_part(start_gateway):
    import socket

    gw = start_gateway(local_config())
    c = client(gw)
    up = new_upload(c, 10 << 20)
    head = (b'--b\r\nContent-Disposition: form-data; name="data"; filename="upload"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(f"POST /v1/uploads/{up.id}/parts HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  f"boundary=b\r\nContent-Length: {len(head) + (5 << 20) + 8}\r\n\r\n".encode() + head + b"x" * (1 << 20))
        assert wait_until(lambda: any(p.endswith(".partial") for p in parts_on_disk(gw)), timeout=30)
    # The part being written is removed with the connection; the upload is untouched.
    assert wait_until(lambda: not any(p.endswith(".partial") for p in parts_on_disk(gw)), timeout=30)
    assert part_rows(gw) == 0 and db_rows(gw, "SELECT status FROM uploads") == [("pending",)]
    assert len(reservations(gw)) == 1  # the upload's own, until complete/cancel/expiry


def test_cancel_while_a_part_streams_answers_the_part_with_the_cancel(start_gateway):
    import socket

    gw = start_gateway(local_config())
    c = client(gw)
    up = new_upload(c, 10 << 20)
    head = (b'--b\r\nContent-Disposition: form-data; name="data"; filename="upload"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")
    tail = b"\r\n--b--\r\n"
    size = 2 << 20
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(f"POST /v1/uploads/{up.id}/parts HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  f"boundary=b\r\nContent-Length: {len(head) + size + len(tail)}\r\n\r\n".encode()
                  + head + b"x" * (size // 2))
        assert wait_until(lambda: any(p.endswith(".partial") for p in parts_on_disk(gw)), timeout=30)
        assert c.uploads.cancel(up.id).status == "cancelled"
        s.sendall(b"x" * (size // 2) + tail)
        answer = s.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 400") and "upload_cancelled" in answer, answer
    assert parts_on_disk(gw) == [] and part_rows(gw) == 0 and reservations(gw) == []


# -- groq: an OpenAI-compatible upstream without an Uploads API -----------------------------


def test_groq_upload_is_assembled_and_sent_as_one_streamed_file(start_gateway, tmp_path):
    from tests.fakes.groq_upstream import FakeGroq
    from tests.test_groq_files import groq_config

    with FakeGroq(data_dir=tmp_path / "fake-groq") as fake:
        gw = start_gateway(groq_config(fake))
        c = client(gw, default_headers={"x-tfy-provider-name": "my-groq"})
        lines = batch_file(300)
        up = c.uploads.upload_file_chunked(file=lines, filename='in "x".jsonl', bytes=len(lines),
                                           mime_type="application/jsonl", purpose="batch", part_size=4000)
        assert up.status == "completed" and up.file.id in fake.files
        assert fake.files[up.file.id].sha256 == hashlib.sha256(lines).hexdigest()
        assert not any("/uploads" in r.path for r in fake.requests)  # Groq has none: never forwarded
        assert c.files.content(up.file.id).content == lines
        assert [f.id for f in c.files.list()] == [up.file.id]
        # Groq's rule (purpose batch) and the batch rules run before anything is stored upstream.
        bad = batch_file(20) + b"{}\n"
        u = new_upload(c, len(bad), purpose="batch", filename="b.jsonl")
        p = c.uploads.parts.create(u.id, data=bad)
        with pytest.raises(openai.BadRequestError) as e:
            c.uploads.complete(u.id, part_ids=[p.id])
        assert "line 21" in e.value.body["message"] and len(fake.files) == 1
        u = new_upload(c, 3, filename="a.txt")
        p = c.uploads.parts.create(u.id, data=b"abc")
        with pytest.raises(openai.BadRequestError) as e:
            c.uploads.complete(u.id, part_ids=[p.id])
        assert e.value.body["param"] == "purpose" and len(fake.files) == 1
