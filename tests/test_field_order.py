"""The one form-field order rule (proxy/field_order.py): a file sent before its ``purpose`` is
held on the gateway's disk and replayed once the purpose arrives, so every filter, provider and
pass-through upstream sees the purpose at the file's start.

First the pieces in-process (the spool, the holds, the chain a provider's rules join), then the
rule through a live gateway on both upload paths (local sink, OpenAI pass-through tee).
"""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from filters.base import Filter, FilterChain
from proxy.field_order import READ_SIZE, FileHold, RawHold, Spool, largest_file_limit
from tests.conftest import client, passthrough_config
from tests.test_form_fields import BOUNDARY, CLOSE, NOT_JSON, OPENAI, part, post, snapshot
from tests.support import wait_until
from tests.test_local_files import batch_file


class TooLarge(Exception):
    pass


def spool(directory: Path, limit: int = 1 << 30) -> Spool:
    return Spool(str(directory), limit, TooLarge)


def open_fds_in(pid: int | str, directory: Path) -> list[str]:
    """The files under ``directory`` that process ``pid`` holds open (an anonymous spool shows
    as ``<directory>/#<inode> (deleted)``)."""
    found = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return found


# -- the spool -------------------------------------------------------------------------------


def test_spool_gives_back_what_was_written_in_order(tmp_path):
    s = spool(tmp_path / "spool")
    s.write(b"abc")
    s.write(memoryview(b"defg"))
    s.write(b"x" * (READ_SIZE + 5))
    pieces = list(s.chunks())
    assert b"".join(pieces) == b"abcdefg" + b"x" * (READ_SIZE + 5)
    assert max(len(p) for p in pieces) <= READ_SIZE
    assert b"".join(s.chunks()) == b"".join(pieces)  # may be read again (tee: filters, then upstream)
    s.close()


def test_spool_refuses_bytes_past_its_limit(tmp_path):
    s = spool(tmp_path / "spool", limit=10)
    s.write(b"0123456789")
    with pytest.raises(TooLarge):
        s.write(b"!")
    assert s.size == 10 and b"".join(s.chunks()) == b"0123456789"
    s.close()


def test_spool_has_no_name_and_close_frees_it(tmp_path):
    directory = tmp_path / "spool"
    s = spool(directory)
    assert not directory.exists()  # nothing is created before the first byte
    s.write(b"held")
    assert os.listdir(directory) == []  # anonymous: nothing a crash could leave behind
    assert len(open_fds_in("self", directory)) == 1
    s.close()
    s.close()  # idempotent
    assert open_fds_in("self", directory) == []
    assert list(s.chunks()) == []  # a body generator still running after the close just stops


def test_file_hold_releases_the_whole_file_once(tmp_path):
    hold = FileHold(spool(tmp_path))
    assert not hold.holding
    hold.begin()
    hold.data(b"line 1\n")
    hold.data(b"line 2\n")
    hold.end()
    assert hold.holding
    assert b"".join(hold.release()) == b"line 1\nline 2\n"
    assert not hold.holding
    hold.close()


def test_raw_hold_keeps_the_body_in_order_from_memory_then_disk(tmp_path):
    raw = RawHold(spool(tmp_path / "spool"), memory_limit=8)
    for chunk in (b"aaaa", b"bbbb", b"cccc", b"dd"):  # the third would pass the memory limit
        raw.add(chunk)
    assert raw.in_memory == 8 and raw.spool.size == 6  # "dd" follows "cccc" onto disk, never memory
    assert b"".join(raw.chunks()) == b"aaaabbbbccccdd"
    raw.close()


def test_largest_file_limit_is_the_largest_purpose_lowered_by_the_provider():
    assert largest_file_limit(512, 200, None) == 512
    assert largest_file_limit(100, 200, None) == 200  # a batch limit above the file limit
    assert largest_file_limit(512, 200, 300) == 300


# -- the chain a provider's rules join -------------------------------------------------------


class Recorder(Filter):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_file_start(self, ex) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(self.name)


def test_appending_to_an_upload_chain_leaves_the_configured_chain_alone():
    calls: list[str] = []
    configured = FilterChain([Recorder("size_limit", calls)])
    upload = FilterChain(configured.filters)
    upload.append(Recorder("provider_rules", calls))
    upload.on_file_start(None)  # type: ignore[arg-type]
    assert calls == ["size_limit", "provider_rules"]
    calls.clear()
    configured.on_file_start(None)  # type: ignore[arg-type]
    assert calls == ["size_limit"] and len(configured.filters) == 1


# -- the rule through a live gateway ---------------------------------------------------------

# Larger than one read of the body: the file spans several chunks, as real uploads do.
BIG = 1 << 20
LATE_BAD_BATCH = part("file", NOT_JSON * (BIG // len(NOT_JSON)), "x.jsonl") + part("purpose", b"batch") + CLOSE


def upstream_uploads(fake) -> list:
    return fake.requests.filter("POST", "/v1/files")


def test_an_invalid_late_batch_file_never_reaches_the_pass_through_upstream(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    r = post(gw, LATE_BAD_BATCH, OPENAI)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_batch_file", r.text
    # Not even a truncated request: the file was held until its purpose said "batch".
    assert upstream_uploads(fake_openai) == []
    assert snapshot(gw, fake_openai) == before


@pytest.mark.parametrize("headers", [{}, OPENAI], ids=["local", "openai-tee"])
def test_a_body_without_purpose_is_400_and_sends_nothing_upstream(start_gateway, fake_openai, headers):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    r = post(gw, part("file", b"x" * BIG, "a.txt") + part("note", b"no purpose here") + CLOSE, headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("purpose", "missing_required_parameter")
    assert upstream_uploads(fake_openai) == []
    assert snapshot(gw, fake_openai) == before


def test_the_tee_forwards_the_clients_exact_bytes_when_purpose_comes_after_the_file(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    data = bytes(range(256)) * (12 << 12)  # 3 MiB: past the in-memory hold, so spooled to disk
    body = part("note", b"before") + part("file", data, "blob.bin") + part("purpose", b"user_data") + CLOSE
    r = post(gw, body, OPENAI, length=len(body))
    assert r.status_code == 200 and r.json()["purpose"] == "user_data", r.text
    [rec] = upstream_uploads(fake_openai)
    assert rec.content_length == str(len(body))
    assert (rec.body_size, rec.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert client(gw).files.content(r.json()["id"], extra_headers=OPENAI).content == data


# -- the spool of a live upload: on disk while held, gone on every path ----------------------


class StreamedUpload:
    """An upload sent over a raw socket in two pieces: the file part (the purpose not yet
    sent), then the rest of the body."""

    def __init__(self, gw, first: bytes, rest: bytes, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.rest = rest
        head = (f"POST /v1/files HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {len(first) + len(rest)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        self.sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        self.sock.sendall(head + first)

    def finish(self) -> tuple[int, bytes]:
        self.sock.sendall(self.rest)
        reply = b""
        while chunk := self.sock.recv(65536):
            reply += chunk
        self.sock.close()
        status = int(reply.split(b" ", 2)[1])
        return status, reply.partition(b"\r\n\r\n")[2]

    def disconnect(self) -> None:
        self.sock.close()


def spool_dir(gw) -> Path:  # type: ignore[no-untyped-def]
    return gw.workdir / "sluicegate-data" / "spool"


def held_upload(gw, headers: dict[str, str], purpose: bytes, content: bytes) -> StreamedUpload:  # type: ignore[no-untyped-def]
    file_part = part("file", content, "late.jsonl")
    up = StreamedUpload(gw, file_part, part("purpose", purpose) + CLOSE, headers)
    # Held on disk: the gateway has the spool open (the tee: the raw body's too).
    assert wait_until(lambda: open_fds_in(gw.proc.pid, spool_dir(gw)), timeout=20), "the file was not spooled"
    return up


@pytest.mark.parametrize("headers", [{}, OPENAI], ids=["local", "openai-tee"])
def test_the_spool_is_removed_after_a_successful_upload(start_gateway, fake_openai, headers):
    gw = start_gateway(passthrough_config(fake_openai))
    content = batch_file(2000)
    up = held_upload(gw, headers, b"batch", content)
    assert upstream_uploads(fake_openai) == []  # nothing past the file's start while the purpose is unknown
    status, body = up.finish()
    assert status == 200, body
    assert wait_until(lambda: open_fds_in(gw.proc.pid, spool_dir(gw)) == [], timeout=20)
    assert os.listdir(spool_dir(gw)) == []
    [f] = [f for f in client(gw).files.list(extra_headers=headers).data if f.filename == "late.jsonl"]
    assert f.purpose == "batch" and client(gw).files.content(f.id, extra_headers=headers).content == content


@pytest.mark.parametrize("headers", [{}, OPENAI], ids=["local", "openai-tee"])
def test_the_spool_is_removed_after_a_refused_upload(start_gateway, fake_openai, headers):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    up = held_upload(gw, headers, b"batch", batch_file(2000) + NOT_JSON)
    status, body = up.finish()
    assert status == 400 and b"invalid_batch_file" in body, body
    assert wait_until(lambda: open_fds_in(gw.proc.pid, spool_dir(gw)) == [], timeout=20)
    assert upstream_uploads(fake_openai) == [] and snapshot(gw, fake_openai) == before


@pytest.mark.parametrize("headers", [{}, OPENAI], ids=["local", "openai-tee"])
def test_the_spool_is_removed_when_the_client_disconnects(start_gateway, fake_openai, headers):
    gw = start_gateway(passthrough_config(fake_openai))
    before = snapshot(gw, fake_openai)
    up = held_upload(gw, headers, b"batch", batch_file(2000))
    up.disconnect()
    assert wait_until(lambda: open_fds_in(gw.proc.pid, spool_dir(gw)) == [], timeout=20), "spool left open"
    assert upstream_uploads(fake_openai) == [] and snapshot(gw, fake_openai) == before


# -- the upload driver in-process: what the filters see, whatever the field order -----------


class FakeExchange:
    def __init__(self) -> None:
        self.purpose = self.filename = self.expires_after = None
        self.file_bytes = self.body_bytes = 0
        self.file_started = False
        self.reservation = None


class Observer(Filter):
    """Records each hook with what the exchange says at that moment."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.data = b""

    def on_field(self, ex, name, value) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(("field", name))

    def on_file_start(self, ex) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(("file_start", ex.purpose, ex.filename))

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        self.data += bytes(chunk)
        assert ex.file_bytes == len(self.data)  # a running count, also when replayed

    def on_file_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(("file_end", len(self.data)))


def drive(body: bytes, split: int, tmp_path: Path) -> tuple[Observer, FileHold]:
    import asyncio

    from proxy.multipart import MultipartParser
    from proxy.uploads import MAX_FIELD_SIZE, UploadDriver

    observer = Observer()
    hold = FileHold(spool(tmp_path / "spool"))
    driver = UploadDriver(FakeExchange(), MultipartParser(BOUNDARY.encode(), max_field_size=MAX_FIELD_SIZE),  # type: ignore[arg-type]
                          False, FilterChain([observer]), hold)

    async def run() -> None:
        for i in range(0, len(body), split):
            await driver.feed(body[i:i + split])
        driver.finish()

    asyncio.run(run())
    return observer, hold


@pytest.mark.parametrize("split", [1, 7, 100, 1 << 20])
def test_filters_see_the_purpose_at_the_file_start_in_either_order(tmp_path, split):
    data = batch_file(40)
    first = part("purpose", b"batch") + part("file", data, "b.jsonl") + part("note", b"n") + CLOSE
    late = part("file", data, "b.jsonl") + part("note", b"n") + part("purpose", b"batch") + CLOSE
    seen_first, _ = drive(first, split, tmp_path / "first")
    seen_late, hold = drive(late, split, tmp_path / "late")
    assert seen_first.data == seen_late.data == data
    assert seen_first.seen == [("field", "purpose"), ("file_start", "batch", "b.jsonl"),
                               ("file_end", len(data)), ("field", "note")]
    # Late: the fields before the purpose, then the purpose, then the file replayed whole.
    assert seen_late.seen == [("field", "note"), ("field", "purpose"), ("file_start", "batch", "b.jsonl"),
                              ("file_end", len(data))]
    assert not hold.holding and open_fds_in("self", tmp_path / "late" / "spool") == []  # freed after the replay


@pytest.mark.parametrize("headers", [{}, OPENAI], ids=["local", "openai-tee"])
def test_a_held_file_is_bounded_by_the_largest_limit_any_purpose_has(start_gateway, fake_openai, headers):
    gw = start_gateway(passthrough_config(fake_openai, limits={"max_file_size": "64KiB", "max_batch_file_size": "32KiB"}))
    before = snapshot(gw, fake_openai)
    r = post(gw, part("file", b"x" * (200 << 10), "big.txt") + part("purpose", b"user_data") + CLOSE, headers)
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "file_too_large" and "64 KiB" in err["message"], err
    assert upstream_uploads(fake_openai) == [] and snapshot(gw, fake_openai) == before
    assert open_fds_in(gw.proc.pid, spool_dir(gw)) == []
