"""The upload form's field rules, on both upload paths (local sink, OpenAI pass-through tee).

Each field may come once: a repeated field is a 400 naming it, raised the moment it is parsed,
so a tee never forwards it and nothing is stored anywhere. ``purpose`` may still come after
the file (curl's order), and then every rule that depends on it runs. Unknown fields are
ignored, but bounded in number and size.
"""
from __future__ import annotations

import time
from typing import Iterator

import httpx2 as httpx
import pytest

from tests.conftest import client, passthrough_config
from tests.test_local_files import batch_file

OPENAI = {"x-tfy-provider-name": "my-openai"}
BOUNDARY = "f0rmb0undary"
NOT_JSON = b"this is not json\n"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"


CLOSE = f"--{BOUNDARY}--\r\n".encode()


def post(gw, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None,
         length: int | None = None) -> httpx.Response:
    h = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    if length is not None:
        h["Content-Length"] = str(length)
    return httpx.post(gw.base_url + "/files", content=body, headers=h, timeout=30)


def snapshot(gw, fake=None) -> tuple:
    """Everything an upload could leave: partial and stored files on the gateway's disk, the
    store's records, and (with a fake upstream) the upstream's files and its listing."""
    root = gw.workdir / "files"
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    records = sorted(f.id for f in client(gw).files.list().data)
    upstream = (sorted(fake.files), sorted(f.id for f in client(gw).files.list(extra_headers=OPENAI).data)) if fake else ()
    return on_disk, records, upstream


# -- a late second purpose (issue 7.4) --------------------------------------------------------

LATE_BATCH = part("purpose", b"user_data") + part("file", NOT_JSON, "x.jsonl") + part("purpose", b"batch") + CLOSE


def test_late_second_purpose_is_refused_on_local(start_gateway):
    gw = start_gateway(passthrough_config())
    before = snapshot(gw)
    r = post(gw, LATE_BATCH)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("purpose", "duplicate_field")
    assert r.headers["x-should-retry"] == "false"
    assert snapshot(gw) == before == ([], [], ())


def test_late_second_purpose_is_refused_on_openai_tee(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    assert before == ([], [], ([], []))
    # In one piece: refused before the upstream is even called.
    r = post(gw, LATE_BATCH, OPENAI)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose", r.text
    assert fake_openai.requests.filter("POST", "/v1/files") == []

    # Streamed, the second purpose held back until the tee is already sending upstream:
    # the chunk carrying it is never forwarded, the upstream sees a cut-off body.
    head = part("purpose", b"user_data") + part("file", NOT_JSON * 1000, "x.jsonl")
    tail = part("purpose", b"batch") + CLOSE

    def body() -> Iterator[bytes]:
        yield head
        assert fake_openai.wait_until(lambda: len(fake_openai.requests.filter("POST", "/v1/files")) == 1, 15)
        yield tail

    r = post(gw, body(), OPENAI, length=len(head) + len(tail))
    assert r.status_code == 400 and r.json()["error"]["code"] == "duplicate_field", r.text
    [upstream] = fake_openai.requests.filter("POST", "/v1/files")
    fake_openai.wait_until(lambda: upstream.status is not None, 5)  # the upstream sees its body cut off
    assert upstream.status != 200
    assert (upstream.body_size or 0) <= len(head)
    assert snapshot(gw, fake_openai) == before


# -- every field at most once -----------------------------------------------------------------

DUPLICATES = {
    "purpose": (part("purpose", b"assistants") + part("purpose", b"assistants"), "purpose"),
    "expires_after[anchor]": (part("purpose", b"assistants") + part("expires_after[anchor]", b"created_at")
                              + part("expires_after[anchor]", b"created_at"), "expires_after.anchor"),
    "expires_after[seconds]": (part("purpose", b"assistants") + part("expires_after[anchor]", b"created_at")
                               + part("expires_after[seconds]", b"3600") + part("expires_after[seconds]", b"7200"),
                               "expires_after.seconds"),
    "note": (part("purpose", b"assistants") + part("note", b"a") + part("note", b"b"), "note"),
}


@pytest.mark.parametrize("where", ["before", "after"])
def test_each_duplicate_field_is_a_400_naming_it(start_gateway, fake_openai, where):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    upload = part("file", b"hello", "a.txt")
    for headers in ({}, OPENAI):
        for name, (fields, param) in DUPLICATES.items():
            body = fields + upload + CLOSE if where == "before" else upload + fields + CLOSE
            r = post(gw, body, headers)
            assert r.status_code == 400, (name, r.text)
            err = r.json()["error"]
            assert (err["param"], err["code"]) == (param, "duplicate_field"), (name, err)
            assert f"'{name}'" in err["message"], err
        two_files = part("purpose", b"assistants") + upload + upload + CLOSE
        r = post(gw, two_files, headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    assert snapshot(gw, fake_openai) == before


def test_unknown_fields_are_ignored_but_bounded(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    ok = part("purpose", b"assistants") + part("note", b"kept upstream") + part("file", b"hi", "a.txt") + CLOSE
    for headers in ({}, OPENAI):
        r = post(gw, ok, headers)
        assert r.status_code == 200, r.text
    assert fake_openai.requests.filter("POST", "/v1/files")[-1].form["note"] == "kept upstream"
    many = part("purpose", b"assistants") + b"".join(part(f"x{i}", b"1") for i in range(20)) + part("file", b"h", "b.txt")
    big = part("purpose", b"assistants") + part("huge", b"z" * (100 << 10)) + part("file", b"h", "c.txt")
    for body, code in ((many, "too_many_fields"), (big, "invalid_multipart")):
        r = post(gw, body + CLOSE, OPENAI)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    assert len(fake_openai.files) == 1 and len(client(gw).files.list().data) == 2  # one local, one upstream


# -- purpose after the file (curl's order) still re-runs the rules that depend on it ---------


def test_purpose_after_file_validates_batch_on_both_paths(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai, limits={"max_batch_file_size": "1KiB"}))
    before = snapshot(gw, fake_openai)
    for headers in ({}, OPENAI):
        for content, name, expected in ((NOT_JSON, "x.jsonl", "line 1"), (batch_file(), "x.txt", ".jsonl"),
                                        (batch_file(30), "x.jsonl", "1 KiB")):
            r = post(gw, part("file", content, name) + part("purpose", b"batch") + CLOSE, headers)
            assert r.status_code in (400, 413), r.text
            assert expected in r.json()["error"]["message"], r.text
    assert snapshot(gw, fake_openai) == before
    for headers in ({}, OPENAI):
        r = post(gw, part("file", batch_file(), "b.jsonl") + part("purpose", b"batch") + CLOSE, headers)
        assert r.status_code == 200 and r.json()["purpose"] == "batch", r.text
        r = post(gw, part("file", NOT_JSON, "n.jsonl") + part("purpose", b"user_data") + CLOSE, headers)
        assert r.status_code == 200 and r.json()["purpose"] == "user_data", r.text
    assert len(fake_openai.files) == 2 and len(client(gw).files.list().data) == 4
