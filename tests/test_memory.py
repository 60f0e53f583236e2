"""Never buffer a file: a 512 MiB upload and download keep the gateway's peak RSS flat."""
from __future__ import annotations

import hashlib

from tests.conftest import client
from tests.fakes.bigfile import make_big_file

SIZE = 512 << 20
BUDGET = 64 << 20


def test_512mib_local_upload_and_download_flat_memory(start_gateway, tmp_path):
    src = tmp_path / "big.bin"
    digest = make_big_file(src, SIZE)
    gw = start_gateway({"providers": [{"name": "local", "type": "local", "path": "./files"}]})
    c = client(gw, timeout=300)
    c.files.list()  # warm up
    idle = gw.rss()
    gw.reset_peak_rss()
    with open(src, "rb") as fh:
        f = c.files.create(file=fh, purpose="assistants")
    assert f.bytes == SIZE
    up_peak = gw.peak_rss()
    stored = gw.workdir / "files" / f.id
    assert stored.stat().st_size == SIZE
    gw.reset_peak_rss()
    h = hashlib.sha256()
    with c.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest
    down_peak = gw.peak_rss()
    assert up_peak - idle < BUDGET, f"upload raised peak RSS by {(up_peak - idle) >> 20} MiB"
    assert down_peak - idle < BUDGET, f"download raised peak RSS by {(down_peak - idle) >> 20} MiB"


def test_512mib_openai_passthrough_upload_and_download_flat_memory(start_gateway, fake_openai, tmp_path):
    from tests.conftest import passthrough_config

    src = tmp_path / "big.jsonl"
    digest = make_big_file(src, SIZE)
    cfg = passthrough_config(fake_openai)
    cfg["providers"][1]["timeouts"] = {"read": "120s"}
    gw = start_gateway(cfg)
    c = client(gw, timeout=300)
    headers = {"x-tfy-provider-name": "my-openai"}
    c.files.list(extra_headers=headers)  # warm up the upstream pool
    idle = gw.rss()
    gw.reset_peak_rss()
    with open(src, "rb") as fh:
        f = c.files.create(file=fh, purpose="user_data", extra_headers=headers)
    up_peak = gw.peak_rss()
    assert f.bytes == SIZE
    assert fake_openai.files[f.id].sha256 == digest  # the tee forwarded every byte unchanged
    gw.reset_peak_rss()
    h = hashlib.sha256()
    with c.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    down_peak = gw.peak_rss()
    assert h.hexdigest() == digest
    assert up_peak - idle < BUDGET, f"upload raised peak RSS by {(up_peak - idle) >> 20} MiB"
    assert down_peak - idle < BUDGET, f"download raised peak RSS by {(down_peak - idle) >> 20} MiB"


def test_256mib_upload_with_purpose_after_the_file_is_held_on_disk_not_in_memory(start_gateway, fake_openai):
    """curl's order through the tee: the whole file is held until its purpose arrives (the raw
    body and the file's bytes, proxy/field_order.py), on disk: memory stays flat."""
    import httpx2 as httpx

    from tests.conftest import passthrough_config
    from tests.fakes.bigfile import big_content_sha256, iter_big_content

    size = 256 << 20
    cfg = passthrough_config(fake_openai)
    cfg["providers"][1]["timeouts"] = {"read": "120s"}
    gw = start_gateway(cfg)
    headers = {"x-tfy-provider-name": "my-openai"}
    client(gw).files.list(extra_headers=headers)  # warm up the upstream pool
    head = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    tail = b'\r\n--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n--bb--\r\n'

    def body():
        yield head
        yield from iter_big_content(size)
        yield tail

    idle = gw.rss()
    gw.reset_peak_rss()
    r = httpx.post(gw.base_url + "/files", content=body(), timeout=300, headers={
        **headers, "Content-Type": "multipart/form-data; boundary=bb",
        "Content-Length": str(len(head) + size + len(tail))})
    up_peak = gw.peak_rss()
    assert r.status_code == 200 and r.json()["bytes"] == size, r.text
    assert fake_openai.files[r.json()["id"]].sha256 == big_content_sha256(size)
    assert up_peak - idle < BUDGET, f"upload raised peak RSS by {(up_peak - idle) >> 20} MiB"


def test_1gib_upload_in_64mib_parts_to_local_flat_memory(start_gateway, tmp_path):
    """The Uploads API never holds a part or the file: parts stream to disk, complete composes
    them in the kernel; 1 GiB in 64 MiB parts (issue 11) keeps RSS growth under the budget."""
    size = 1 << 30
    src = tmp_path / "big.bin"
    digest = make_big_file(src, size)
    gw = start_gateway({"providers": [{"name": "local", "type": "local", "path": "./files"}],
                        "limits": {"max_upload_size": 2 << 30}})  # above max_file_size, as operators raise it
    c = client(gw, timeout=300)
    c.files.list()  # warm up
    idle = gw.rss()
    gw.reset_peak_rss()
    up = c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="assistants",
                                       part_size=64 << 20)
    peak = gw.peak_rss()
    assert up.status == "completed" and up.file.bytes == size
    h = hashlib.sha256()
    with open(gw.workdir / "files" / up.file.id, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest
    assert peak - idle < BUDGET, f"the upload raised peak RSS by {(peak - idle) >> 20} MiB"
