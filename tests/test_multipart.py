"""Tests for proxy.multipart, the sans-IO multipart/form-data parser.

Most bodies are produced by the real OpenAI SDK (``files.create`` through an in-memory
``httpx2.MockTransport``), then every valid body is fed split at every byte, byte at a time
and in random 3-5 way splits: the logical events must not depend on the split.
"""
from __future__ import annotations

import io
import os
import random

import httpx2
import openai
import pytest

from proxy.multipart import (
    Done,
    Field,
    FileData,
    FileEnd,
    FileStart,
    MultipartError,
    MultipartParser,
    boundary_from_content_type,
)

# --- helpers --------------------------------------------------------------------------------


def sdk_upload(file, *, boundary: str | None = None, **kwargs) -> tuple[str, bytes]:
    """Run the OpenAI SDK's files.create and return the (Content-Type, body) it sent."""
    captured = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        captured["content_type"] = request.headers["content-type"]
        captured["body"] = request.read()
        return httpx2.Response(
            200,
            json={"id": "file-1", "object": "file", "bytes": 0, "created_at": 1,
                  "filename": "x", "purpose": "batch", "status": "processed"},
        )

    client = openai.OpenAI(
        base_url="http://gateway.test/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    extra = {"extra_headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}} if boundary else {}
    with client:
        client.files.create(file=file, purpose=kwargs.pop("purpose", "batch"), **kwargs, **extra)
    return captured["content_type"], captured["body"]


def normalise(events) -> list[tuple]:
    """Events as comparable tuples, consecutive FileData merged into one ("data", bytes)."""
    out: list[tuple] = []
    for ev in events:
        if isinstance(ev, FileData):
            assert len(ev.data) > 0, "empty FileData emitted"
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + bytes(ev.data))
            else:
                out.append(("data", bytes(ev.data)))
        elif isinstance(ev, Field):
            out.append(("field", ev.name, ev.value))
        elif isinstance(ev, FileStart):
            out.append(("file", ev.name, ev.filename, ev.content_type, tuple(ev.headers)))
        elif isinstance(ev, FileEnd):
            out.append(("end", ev.name))
        else:
            assert isinstance(ev, Done)
            out.append(("done",))
    return out


def parse(boundary: bytes, pieces, **limits) -> list[tuple]:
    parser = MultipartParser(boundary, **limits)
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    parser.close()
    assert parser.done
    assert parser.bytes_fed == sum(len(p) for p in pieces)
    return normalise(events)


def split_at(body: bytes, cuts) -> list[bytes]:
    cuts = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in zip(cuts, cuts[1:])]


def file_events(name, filename, content, content_type="application/octet-stream", extra_headers=()):
    disp = f'form-data; name="{name}"; filename="{filename}"'
    headers = (("content-disposition", disp), *extra_headers)
    if content_type is not None:
        headers = (*headers, ("content-type", content_type))
    events = [("file", name, filename, content_type, headers)]
    if content:
        events.append(("data", content))
    return [*events, ("end", name)]


EXPIRES = {"anchor": "created_at", "seconds": 3600}
SDK_FIELDS = [
    ("field", "purpose", "batch"),
    ("field", "expires_after[anchor]", "created_at"),
    ("field", "expires_after[seconds]", "3600"),
]
JSONL = b"".join(
    b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n' % i
    for i in range(4)
)
FIXED = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"  # a boundary the SDK is told to use
# Content built to tempt a parser: CRLFs, dashes, delimiter prefixes, the delimiter minus its
# last byte, the boundary with a wrong last byte, and an ending that runs into the real one.
TRICKY = b"".join([
    b"line1\r\nline2\r\n\r\n--\r\n-\r\n--",
    b"--" + FIXED.encode(),  # boundary without the leading CRLF is content
    b"\r\n--" + FIXED[:10].encode(),
    b"\r\r\n\r\n-\r\n--" + FIXED[:-1].encode() + b"X",
    b"\r\n--" + FIXED[:-1].encode() + b"\r\n\r\n\r",
    b"\r\n--" + FIXED[:-1].encode(),
])


# Hand-written bodies: (boundary, body, expected normalised events).
def _curl_style():
    b = "------------------------d74496d66958873e"
    body = (
        f"--{b}\r\n"
        'Content-Disposition: form-data; name="file"; filename="batch.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + JSONL + (
        f"\r\n--{b}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        f"batch\r\n--{b}--\r\n"
    ).encode()
    return b, body, [*file_events("file", "batch.jsonl", JSONL), ("field", "purpose", "batch"), ("done",)]


def _preamble_epilogue_padding():
    b = "XyZ'()+_,-./:=?"
    body = (
        "This is the preamble; it may mention --XyZ without a CRLF before it.\r\n"
        f"--{b} \t \r\n"
        'content-disposition: form-data; name="purpose"\r\n\r\n'
        "fine-tune\r\n"
        f"--{b}\t\r\n"
        'CONTENT-DISPOSITION: form-data; name=file; filename=plain.txt\r\n\r\n'
        "hello"
        f"\r\n--{b}--  \r\nepilogue, ignored\r\n--{b}\r\nnot a part\r\n"
    ).encode()
    return b, body, [
        ("field", "purpose", "fine-tune"),
        ("file", "file", "plain.txt", None,
         (("content-disposition", "form-data; name=file; filename=plain.txt"),)),
        ("data", b"hello"),
        ("end", "file"),
        ("done",),
    ]


def _empty_and_multiple_files():
    b = "boundary"
    body = (
        "--boundary\r\n"
        'Content-Disposition: form-data; name="a"; filename=""\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
        "\r\n--boundary\r\n"
        'Content-Disposition: form-data; name="b"; filename="b.bin"\r\n\r\n'
        "BBBB\r\n"
        "\r\n--boundary\r\n"
        'Content-Disposition: form-data; name="empty"\r\n\r\n'
        "\r\n--boundary\r\n"
        'Content-Disposition: form-data; name="c"; filename="c.bin"\r\n\r\n'
        "--boundar\r\n--boundary--"
    ).encode()
    return b, body, [
        *file_events("a", "", b""),
        *file_events("b", "b.bin", b"BBBB\r\n", content_type=None),
        ("field", "empty", ""),
        *file_events("c", "c.bin", b"--boundar", content_type=None),
        ("done",),
    ]


def _filename_encodings():
    b = "fn"
    d1 = r'form-data; name="f1"; filename="say \"hi\" \\ C:\dir.txt"'
    d2 = "form-data; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt; name=\"f2\""
    d3 = "Form-Data; Name=\"f3\"; FILENAME*=iso-8859-1'en'caf%E9.txt"
    body = (
        f"--fn\r\nContent-Disposition: {d1}\r\n\r\n1"
        f"\r\n--fn\r\nContent-Disposition: {d2}\r\nX-Extra:  v  \r\n\r\n2"
        f"\r\n--fn\r\nContent-Disposition: {d3}\r\n\r\n3"
        "\r\n--fn--"
    ).encode()
    return b, body, [
        ("file", "f1", r'say "hi" \ C:\dir.txt', None, (("content-disposition", d1),)),
        ("data", b"1"), ("end", "f1"),
        ("file", "f2", "naïve résumé.txt", None, (("content-disposition", d2), ("x-extra", "v"))),
        ("data", b"2"), ("end", "f2"),
        ("file", "f3", "café.txt", None, (("content-disposition", d3),)),
        ("data", b"3"), ("end", "f3"),
        ("done",),
    ]


HANDWRITTEN = {
    "curl_file_first": _curl_style,
    "preamble_epilogue_padding": _preamble_epilogue_padding,
    "empty_and_multiple_files": _empty_and_multiple_files,
    "filename_encodings": _filename_encodings,
}
SDK_CASES = ["sdk_open_jsonl", "sdk_raw_bytes", "sdk_bytesio", "sdk_tuple", "sdk_tricky_content",
             "sdk_quoted_unicode_filename", "sdk_empty_file"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[bytes, bytes, list[tuple]]]:
    """name -> (boundary, body, expected events) for every valid body."""
    out = {}

    def add_sdk(name, file, expected, **kwargs):
        content_type, body = sdk_upload(file, **kwargs)
        out[name] = (boundary_from_content_type(content_type), body, expected)

    path = tmp_path_factory.mktemp("mp") / "mydata.jsonl"
    path.write_bytes(JSONL)
    with open(path, "rb") as f:
        add_sdk("sdk_open_jsonl", f, [*SDK_FIELDS, *file_events("file", "mydata.jsonl", JSONL), ("done",)],
                expires_after=EXPIRES)
    add_sdk("sdk_raw_bytes", JSONL, [*SDK_FIELDS, *file_events("file", "upload", JSONL), ("done",)],
            expires_after=EXPIRES)
    add_sdk("sdk_bytesio", io.BytesIO(b"abc"),
            [("field", "purpose", "user_data"), *file_events("file", "upload", b"abc"), ("done",)],
            purpose="user_data")
    add_sdk("sdk_tuple", ("rows.csv", b"a,b\r\n1,2\r\n", "text/csv"),
            [("field", "purpose", "batch"), *file_events("file", "rows.csv", b"a,b\r\n1,2\r\n", "text/csv"),
             ("done",)])
    add_sdk("sdk_tricky_content", ("t.jsonl", TRICKY, "application/jsonl"),
            [*SDK_FIELDS, *file_events("file", "t.jsonl", TRICKY, "application/jsonl"), ("done",)],
            boundary=FIXED, expires_after=EXPIRES)
    # httpx2 writes the quotes as %22 (WHATWG); the parser gives back the original name.
    content_type, body = sdk_upload(('données "q".jsonl', b"{}\n", None))
    assert b'filename="donn\xc3\xa9es %22q%22.jsonl"' in body
    out["sdk_quoted_unicode_filename"] = (
        boundary_from_content_type(content_type), body,
        [("field", "purpose", "batch"),
         ("file", "file", 'données "q".jsonl', "application/octet-stream",
          (("content-disposition", 'form-data; name="file"; filename="données %22q%22.jsonl"'),
           ("content-type", "application/octet-stream"))),
         ("data", b"{}\n"), ("end", "file"), ("done",)])
    add_sdk("sdk_empty_file", b"", [("field", "purpose", "batch"), *file_events("file", "upload", b""), ("done",)])

    for name, build in HANDWRITTEN.items():
        boundary, body, expected = build()
        out[name] = (boundary.encode(), body, expected)
    return out


ALL_CASES = SDK_CASES + list(HANDWRITTEN)


# --- valid bodies, every split --------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CASES)
def test_single_feed(cases, name):
    boundary, body, expected = cases[name]
    assert parse(boundary, [body]) == expected


@pytest.mark.parametrize("name", ALL_CASES)
def test_every_two_way_split(cases, name):
    boundary, body, expected = cases[name]
    for i in range(len(body) + 1):
        assert parse(boundary, split_at(body, [i])) == expected, f"split at {i}"


@pytest.mark.parametrize("name", ALL_CASES)
def test_byte_at_a_time(cases, name):
    boundary, body, expected = cases[name]
    assert parse(boundary, [body[i : i + 1] for i in range(len(body))]) == expected


@pytest.mark.parametrize("name", ALL_CASES)
def test_random_splits(cases, name):
    boundary, body, expected = cases[name]
    rng = random.Random(name)
    for _ in range(200):
        cuts = [rng.randint(0, len(body)) for _ in range(rng.randint(2, 4))]
        pieces = split_at(body, cuts)
        assert parse(boundary, pieces) == expected, f"cuts {sorted(cuts)}"


def test_sdk_open_jsonl_wire_layout(cases):
    """The SDK sends fields first, then the file, with a 32-hex-digit boundary."""
    boundary, body, _ = cases["sdk_open_jsonl"]
    assert len(boundary) == 32 and body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")


def test_input_types_and_no_aliasing(cases):
    boundary, body, expected = cases["sdk_raw_bytes"]
    assert parse(boundary, [bytearray(body)]) == expected
    assert parse(boundary, [memoryview(body)[:100], memoryview(body)[100:]]) == expected
    # A caller reusing its read buffer must not corrupt data already emitted.
    buf = bytearray(body)
    parser = MultipartParser(boundary)
    events = parser.feed(buf)
    buf[:] = b"\0" * len(buf)
    assert normalise(events) == expected


def test_large_file_streams_with_small_holdback():
    """A big file streams through: after each feed all but a delimiter-sized tail is out."""
    rng = random.Random(7)
    content = rng.randbytes(300_000) + b"\r\n--" + FIXED[:-3].encode() + b"\r\n\r\n"
    content_type, body = sdk_upload(("big.bin", content, None), boundary=FIXED)
    boundary = boundary_from_content_type(content_type)
    start = body.index(b"\r\n\r\n", body.index(b'filename="big.bin"')) + 4
    parser = MultipartParser(boundary)
    emitted = bytearray()
    pos = 0
    while pos < len(body):
        step = rng.choice([1, 7, 4096, 65536, 262144])
        for ev in parser.feed(body[pos : pos + step]):
            if isinstance(ev, FileData):
                emitted += ev.data
        pos += step
        fed_content = min(max(0, pos - start), len(content))
        assert fed_content - len(emitted) < len(boundary) + 4
    parser.close()
    assert emitted == content


def test_whole_chunk_passed_without_copy():
    boundary = b"bnd"
    parser = MultipartParser(boundary)
    parser.feed(b'--bnd\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n')
    chunk = os.urandom(1000).replace(b"\r", b"")
    (event,) = parser.feed(chunk)
    assert event.data is chunk


def test_feed_after_done_is_ignored():
    first = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--'
    epilogue = b"\r\n--b\r\ngarbage"
    parser = MultipartParser(b"b")
    assert normalise(parser.feed(first)) == [("field", "x", "1"), ("done",)]
    assert parser.feed(epilogue) == []
    assert parser.done and parser.bytes_fed == len(first) + len(epilogue)
    parser.close()


def test_only_closing_delimiter():
    assert parse(b"b", [b"--b--\r\n"]) == [("done",)]


# --- limits and errors ----------------------------------------------------------------------


def _field_body(value: bytes, headers: bytes = b'Content-Disposition: form-data; name="v"') -> bytes:
    return b"--b\r\n" + headers + b"\r\n\r\n" + value + b"\r\n--b--\r\n"


def _error(body: bytes, pieces=None, boundary: bytes = b"b", **limits) -> str:
    parser = MultipartParser(boundary, **limits)
    with pytest.raises(MultipartError) as info:
        for piece in pieces if pieces is not None else [body]:
            parser.feed(piece)
        parser.close()
    return str(info.value)


def test_truncated_body_every_prefix(cases):
    boundary, body, _ = cases["sdk_tuple"]
    closed_at = body.index(b"--" + boundary + b"--") + len(boundary) + 4
    for i in range(closed_at):
        assert "truncated" in _error(body, [body[:i]], boundary=boundary)
    parser = MultipartParser(boundary)
    parser.feed(body[:closed_at])
    parser.close()  # the closing delimiter alone completes the body


def test_missing_content_disposition():
    body = _field_body(b"x", b"Content-Type: text/plain")
    assert "Content-Disposition" in _error(body)
    assert "Content-Disposition" in _error(b"--b\r\n\r\nx\r\n--b--")  # no headers at all


@pytest.mark.parametrize("disposition", [b"attachment; name=\"v\"", b"form-data", b"form-data; filename=\"a\""])
def test_bad_content_disposition(disposition):
    assert "form-data with a name" in _error(_field_body(b"x", b"Content-Disposition: " + disposition))


def test_malformed_header_line():
    body = _field_body(b"x", b'Content-Disposition: form-data; name="v"\r\nno colon here')
    assert "header line" in _error(body)


def test_header_size_limit_is_split_independent():
    headers = b'Content-Disposition: form-data; name="v"\r\nX-Pad: ' + b"p" * 60
    limit = len(headers)
    body = _field_body(b"ok", headers)
    for pieces in ([body], [body[i : i + 1] for i in range(len(body))]):
        assert parse(b"b", pieces, max_header_size=limit) == [("field", "v", "ok"), ("done",)]
        assert "max_header_size=%d" % (limit - 1) in _error(body, pieces, max_header_size=limit - 1)
    # A header block that never ends fails once it is certainly too large.
    parser = MultipartParser(b"b", max_header_size=100)
    parser.feed(b"--b\r\n" + b"x" * 103)
    with pytest.raises(MultipartError, match="max_header_size"):
        parser.feed(b"x")


def test_field_size_limit_is_split_independent():
    body = _field_body(b"0123456789")
    for i in range(len(body) + 1):
        pieces = split_at(body, [i])
        assert parse(b"b", pieces, max_field_size=10) == [("field", "v", "0123456789"), ("done",)]
        assert "max_field_size=9" in _error(body, pieces, max_field_size=9)


def test_file_parts_have_no_field_size_limit():
    body = _field_body(b"x" * 100, b'Content-Disposition: form-data; name="f"; filename="f"')
    assert parse(b"b", [body], max_field_size=10)[1] == ("data", b"x" * 100)


def test_max_parts():
    part = b'--b\r\nContent-Disposition: form-data; name="p"\r\n\r\nv\r\n'
    assert len(parse(b"b", [part * 3 + b"--b--"], max_parts=3)) == 4
    assert "max_parts=2" in _error(part * 3 + b"--b--", max_parts=2)


def test_non_utf8_field_value():
    assert "UTF-8" in _error(_field_body(b"caf\xe9"))


@pytest.mark.parametrize(
    "body",
    [
        b"--bX\r\n",  # a longer boundary: the real one appears in the preamble
        _field_body(b"x").replace(b"x\r\n--b--", b"x\r\n--b-x"),
        _field_body(b"x").replace(b"\r\n--b--", b"\r\n--b  x\r\n"),
        b"--b\nContent-Disposition: form-data; name=\"v\"\r\n\r\nx\r\n--b--",  # bare LF
    ],
)
def test_malformed_boundary_line(body):
    assert "boundary" in _error(body)


def test_error_is_final():
    parser = MultipartParser(b"b")
    with pytest.raises(MultipartError):
        parser.feed(b"--b\r\nbad header\r\n\r\n")
    with pytest.raises(MultipartError):
        parser.feed(b"\r\n--b--")


def test_bad_filename_star():
    header = b"Content-Disposition: form-data; name=\"f\"; filename*=klingon''x"
    assert "filename*" in _error(_field_body(b"x", header))
    header = b"Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%FF"
    assert "filename*" in _error(_field_body(b"x", header))


# --- boundary_from_content_type -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=8532f7f183bb1a69a7e7a47c72803fe0", b"8532f7f183bb1a69a7e7a47c72803fe0"),
        ("multipart/form-data; boundary=------------------------d74496d66958873e",
         b"------------------------d74496d66958873e"),
        ('Multipart/Form-Data; charset=utf-8; BOUNDARY="a b:c"', b"a b:c"),
        ("multipart/form-data;boundary = \"----WebKitFormBoundary7MA4YWxkTrZu0gW\" ",
         b"----WebKitFormBoundary7MA4YWxkTrZu0gW"),
        ("multipart/form-data; boundary=x; boundary=ignored", b"x"),
        ("multipart/form-data; boundary=" + "z" * 70, b"z" * 70),
        ("multipart/form-data; boundary=\"'()+_,-./:=?\"", b"'()+_,-./:=?"),
    ],
)
def test_boundary_from_content_type(content_type, boundary):
    assert boundary_from_content_type(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "multipart/mixed; boundary=x",
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "z" * 71,
        'multipart/form-data; boundary="ends with space "',
        "multipart/form-data; boundary=a@b",
        'multipart/form-data; boundary="unterminated',
        "multipart/form-data; boundary=caf\u00e9",
    ],
)
def test_boundary_from_content_type_rejects(content_type):
    with pytest.raises(MultipartError):
        boundary_from_content_type(content_type)
