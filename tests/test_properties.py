"""Property tests (hypothesis) of the sans-IO parsers and the config loader.

Each parser is fed arbitrary bytes at arbitrary splits: it must answer with its own error type
or with events, never with another exception, and what it makes of valid input must not depend
on how the input was split. Examples are bounded (``max_examples``) so the whole file costs a
few seconds; hypothesis' database is off, so every CI run is independent of the last.
"""
from __future__ import annotations

import os
import tempfile

import orjson
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy.config import FILTER_NAMES, ConfigError, load_config, parse_config
from proxy.multipart import MultipartError, MultipartParser
from proxy.providers.h1 import UNBOUNDED, H1ProtocolError, ResponseParser
from proxy.transforms.jsonl import BATCH_ENDPOINTS, BatchLineError, BatchValidator, LineSplitter
from proxy.transforms.sse import EventTooLarge, SSEParser
from tests.test_multipart import normalise

# deadline=None: a loaded CI machine must not turn a slow example into a failure.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=60)


@st.composite
def split(draw, data: bytes) -> list[bytes]:
    """``data`` cut at a few arbitrary points (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def pieces_of(fragments: list[bytes]):
    """Bytes that are mostly made of ``fragments`` (so the parser's states are reached), with
    arbitrary bytes in between, or arbitrary bytes outright."""
    made = st.lists(st.sampled_from(fragments) | st.binary(max_size=12), max_size=40).map(b"".join)
    return made | st.binary(max_size=200)


# ------------------------------------------------------------------------------- multipart

BOUNDARY = b"b0UND"
MULTIPART_FRAGMENTS = [
    b"--b0UND", b"\r\n--b0UND", b"\r\n--b0UND--", b"--", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b" \t",
    b"Content-Disposition: form-data; name=\"f\"", b"; filename=\"x.jsonl\"", b"; filename*=UTF-8''na%C3%AFve",
    b"; filename*=bogus", b"Content-Type: text/plain", b"content-disposition: attachment", b": ", b"\xff\xfe",
    b"name=\"a%22b\\\"c\"", b";;", b"=", b'"',
]


def _run_multipart(pieces: list[bytes], **limits) -> list:
    parser = MultipartParser(BOUNDARY, **limits)
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    parser.close()
    return events


def _logical(events: list) -> list[tuple]:
    """test_multipart's comparable tuples, a file part's start without its raw headers."""
    return [t[:4] if t[0] == "file" else t for t in normalise(events)]


@FAST
@given(st.data(), pieces_of(MULTIPART_FRAGMENTS),
       st.sampled_from([{}, {"max_field_size": 4, "max_header_size": 40, "max_parts": 2}]))
def test_multipart_any_bytes_any_split_gives_events_or_multipart_error(data, body, limits):
    try:
        whole = _logical(_run_multipart([body], **limits))
    except MultipartError:
        whole = None
    try:
        pieces = _logical(_run_multipart(data.draw(split(body)), **limits))
    except MultipartError:
        pieces = None
    # Only the split changed, so the outcome did not (limits count bytes, not feeds).
    assert pieces == whole


# Names and filenames as httpx (the OpenAI SDK) writes them: ", CR and LF percent-escaped. A
# literal "%22" or a backslash would be decoded by the parser, as browsers' parsers do.
_names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="%\\"), max_size=12)


def _quote(name: str) -> bytes:
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A").encode()


@st.composite
def form(draw) -> list[tuple]:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(_names)
        if draw(st.booleans()):
            ctype = draw(st.none() | st.sampled_from(["application/jsonl", "application/octet-stream"]))
            parts.append(("file", name, draw(_names), ctype, draw(st.binary(max_size=300))))
        else:
            parts.append(("field", name, draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=40))))
    return parts


def _encode_form(parts: list[tuple], boundary: bytes, preamble: bytes, padding: bytes) -> bytes:
    out = [preamble]
    for part in parts:
        out.append(b"--" + boundary + padding + b"\r\n")
        disposition = b'Content-Disposition: form-data; name="' + _quote(part[1]) + b'"'
        if part[0] == "file":
            _, _, filename, ctype, content = part
            out.append(disposition + b'; filename="' + _quote(filename) + b'"\r\n')
            if ctype:
                out.append(b"Content-Type: " + ctype.encode() + b"\r\n")
            out.append(b"\r\n" + content + b"\r\n")
        else:
            out.append(disposition + b"\r\n\r\n" + part[2].encode() + b"\r\n")
    out.append(b"--" + boundary + b"--\r\nepilogue --" + boundary + b"\r\n")
    return b"".join(out)


@FAST
@given(st.data(), form(), st.sampled_from([b"", b"preamble\r\n"]), st.sampled_from([b"", b" \t "]),
       st.text("abcXYZ0129'()+_,-./:=?", min_size=1, max_size=30))
def test_multipart_round_trip_at_any_split(data, parts, preamble, padding, boundary):
    boundary = ("x" + boundary).encode()
    body = _encode_form(parts, boundary, preamble, padding)
    delimiter = b"\r\n--" + boundary
    assume(not any(delimiter in (p[4] if p[0] == "file" else p[2].encode()) + b"\r\n" for p in parts))
    parser = MultipartParser(boundary)
    events = []
    for piece in data.draw(split(body)):
        events += parser.feed(piece)
    parser.close()
    expected: list[tuple] = []
    for part in parts:
        if part[0] == "file":
            _, name, filename, ctype, content = part
            expected.append(("file", name, filename, ctype))
            if content:
                expected.append(("data", content))
            expected.append(("end", name))
        else:
            expected.append(part)
    assert _logical(events) == expected + [("done",)]


# ------------------------------------------------------------------------------- JSONL

def _reference_lines(data: bytes) -> list[tuple[int, bytes]]:
    pieces = data.split(b"\n")
    lines = [(i + 1, p[:-1] if p.endswith(b"\r") else p) for i, p in enumerate(pieces[:-1])]
    if pieces[-1]:
        lines.append((len(pieces), pieces[-1]))
    return lines


@FAST
@given(st.data(), pieces_of([b"\n", b"\r\n", b"\r", b"abc"]))
def test_line_splitter_matches_a_plain_split_at_any_split(data, body):
    splitter = LineSplitter()
    lines = []
    for piece in data.draw(split(body)):
        lines += splitter.feed(piece)
    assert lines + splitter.close() == _reference_lines(body)


@FAST
@given(st.data(), pieces_of([b"\n", b"\r\n", b"\r", b"a" * 7]), st.integers(1, 8))
def test_line_splitter_limit_is_the_same_at_any_split(data, body, limit):
    def run(pieces):
        splitter = LineSplitter(limit)
        try:
            out = [line for piece in pieces for line in splitter.feed(piece)] + splitter.close()
        except Exception as exc:  # noqa: BLE001 - the property is about which exception
            assert type(exc).__name__ == "LineTooLong", exc
            return ("too long", exc.line)
        return out
    result = run([body])
    assert run(data.draw(split(body))) == result
    if result and result[0] == "too long":
        assert any(len(line) > limit for _, line in _reference_lines(body))
    else:
        assert result == _reference_lines(body)


JSONL_FRAGMENTS = [
    b'{"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {}}\n',
    b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {"x": 1}}\r\n',
    b'{"custom_id": 1}', b"[]", b"null", b"\xef\xbb\xbf", b"\n", b"\r\n", b" ", b'"', b"{", b"}", b"\xff",
    b'"custom_id"', b'"method":"GET"', b'"url":', b'"body":[]', b",", b":",
]


def _validate(pieces: list[bytes], **kw) -> tuple:
    seen: list[tuple[int, dict]] = []
    v = BatchValidator(on_request=lambda n, r: seen.append((n, r)), **kw)
    try:
        for piece in pieces:
            v.feed(piece)
        v.close()
    except BatchLineError as exc:
        return ("error", exc.line, exc.message)
    return ("ok", v.lines, seen)


@FAST
@given(st.data(), pieces_of(JSONL_FRAGMENTS), st.sampled_from([{}, {"max_lines": 1, "max_line_length": 40}]))
def test_batch_validator_any_bytes_any_split_gives_a_line_error_or_requests(data, body, limits):
    whole = _validate([body], **limits)
    assert _validate(data.draw(split(body)), **limits) == whole


_json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@FAST
@given(st.data(), st.sampled_from(BATCH_ENDPOINTS),
       st.lists(st.tuples(st.text(min_size=1, max_size=20), st.dictionaries(st.text(max_size=5), _json_values,
                                                                             max_size=3)),
                min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_batch_validator_accepts_every_valid_file_at_any_split(data, url, rows, eol, final_eol):
    requests = [{"custom_id": cid, "method": "POST", "url": url, "body": body} for cid, body in rows]
    body = eol.join(orjson.dumps(r) for r in requests) + (eol if final_eol else b"")
    assert _validate(data.draw(split(body))) == ("ok", len(requests), list(enumerate(requests, 1)))


# ------------------------------------------------------------------------------- SSE

SSE_FRAGMENTS = [b"data: x", b"data:", b"event: e", b"id: 1", b": comment", b"\n", b"\r\n", b"\r", b"\n\n",
                 b"\r\r", b"retry: 3", b"\xff", b"data: {\"a\": 1}"]


def _sse(pieces: list[bytes], limit: int = 16 << 20) -> list[tuple]:
    parser = SSEParser(limit)
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.close()
    return [(e.event, e.data, e.id) for e in events]


@FAST
@given(st.data(), pieces_of(SSE_FRAGMENTS))
def test_sse_any_bytes_any_split_gives_the_same_events(data, body):
    assert _sse(data.draw(split(body))) == _sse([body])


@FAST
@given(st.data(), pieces_of(SSE_FRAGMENTS), st.integers(1, 20))
def test_sse_small_limit_raises_only_event_too_large(data, body, limit):
    try:
        _sse(data.draw(split(body)), limit)
    except EventTooLarge:
        pass


_field_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=12)


@FAST
@given(st.data(), st.lists(st.tuples(st.none() | _field_text.filter(bool), st.lists(_field_text, min_size=1,
                                                                                     max_size=3),
                                     st.none() | _field_text), max_size=5),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_sse_round_trip_at_any_split(data, events, eol):
    blocks = []
    for event, lines, ident in events:
        fields = ([f"event: {event}"] if event is not None else []) + [f"data: {line}" for line in lines]
        fields += [f"id: {ident}"] if ident is not None else []
        blocks.append(eol.join(fields) + eol + eol)
    body = "".join(blocks).encode()
    expected = [(event, "\n".join(lines).encode(), ident) for event, lines, ident in events]
    assert _sse(data.draw(split(body))) == expected


# ------------------------------------------------------------------------------- h1 responses

H1_FRAGMENTS = [
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 No Content\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 101 x\r\n",
    b"HTTP/1.1 304 \r\n", b"HTTP/1.1 099 x\r\n", b"Content-Length: 5\r\n", b"Content-Length: 5, 6\r\n",
    b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"X-A: b\r\n", b" folded\r\n", b"\r\n", b"\n", b"\r",
    b"5\r\nhello\r\n", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"3;ext=1\r\n", b"abc", b"Trailer: x\r\n",
    b"\x00", b"\xff",
]


def _h1(pieces: list[bytes], mode: str, **kw) -> tuple:
    parser = ResponseParser(**kw)
    try:
        if mode == "feed":
            result = None
            for piece in pieces:
                result = parser.feed(piece) or result
            result = parser.feed_eof() or result
            return ("ok", result.status, result.reason, list(result.headers.items()), result.body, result.keep_alive)
        head, body = None, b""
        for piece in pieces:
            h, b = parser.feed_stream(piece)
            head, body = head or h, body + b
        final = parser.feed_eof()
        if final is not None:
            body += final.body
        return ("ok", head.status, head.reason, list(head.headers.items()), body, head.keep_alive)
    except H1ProtocolError:
        return ("error",)


@FAST
@given(st.data(), pieces_of(H1_FRAGMENTS), st.sampled_from([{}, {"max_header_size": 30, "max_body_size": 4}]))
def test_h1_parser_any_bytes_any_split_gives_a_response_or_protocol_error(data, raw, limits):
    whole = _h1([raw], "feed", **limits)
    assert _h1(data.draw(split(raw)), "feed", **limits) == whole
    # The incremental mode makes the same response of the same bytes.
    assert _h1(data.draw(split(raw)), "stream", **limits) == whole


_header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True)
_header_values = st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True)


@FAST
@given(st.data(), st.integers(200, 599).filter(lambda s: s not in (204, 304)),
       st.lists(st.tuples(_header_names, _header_values), max_size=4), st.binary(max_size=300),
       st.sampled_from(["length", "chunked", "close"]))
def test_h1_round_trip_at_any_split(data, status, headers, body, framing):
    head = [f"HTTP/1.1 {status} Reason\r\n".encode()] + [f"{n}: {v}\r\n".encode() for n, v in headers]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}\r\n".encode())
        payload = body
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked\r\n")
        cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=4)))
        bounds = [0, *cuts, len(body)]
        chunks = [body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]  # a 0-size chunk is the last one
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        head.append(b"Connection: close\r\n")
        payload = body
    raw = b"".join(head) + b"\r\n" + payload
    for mode in ("feed", "stream"):
        result = _h1(data.draw(split(raw)), mode, max_body_size=UNBOUNDED if mode == "stream" else 1 << 20)
        assert result[0] == "ok" and result[1] == status and result[4] == body, (mode, result)
        assert result[5] == (framing != "close")
        assert result[3][:len(headers)] == headers


def _reference_fields(block: str) -> list[tuple[str, str]]:
    """The header fields of a CRLF head block as a line-by-line reading cuts them (RFC 9112
    §5: name, colon, the value without the optional whitespace around it)."""
    fields = []
    for line in block.split("\r\n")[:-2]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip(" \t")))
    return fields


_ows = st.sampled_from(["", " ", "\t", "  ", " \t "])
_any_value = (st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"), max_size=12)
              | st.sampled_from(["0", "3", "12", "3, 3", "close", "Keep-Alive, CLOSE", "a:b", "\t x \t y"]))
_framing_names = st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "Connection", "connection",
                                  "Transfer-Encoding", "transfer-encoding", "X-Content-Length", "Content-Lengths"])


@FAST
@given(st.data(), st.lists(st.tuples(_header_names | _framing_names, _ows, _any_value, _ows), max_size=6),
       st.binary(max_size=40))
def test_h1_header_fields_are_cut_as_a_line_reading_cuts_them(data, fields, body):
    """Any field values (whitespace around and inside them, colons, non-ASCII), any case and
    repeats of the framing fields: the parser's fields, in order, are the line-by-line
    reading's; its framing follows the Content-Length it finds (repeats joined by ",", so copies
    must agree), and ``Connection: close`` in any case and spacing ends keep-alive."""
    lines = [f"{name}:{before}{value}{after}\r\n" for name, before, value, after in fields]
    block = "".join(lines) + "\r\n"
    raw = b"HTTP/1.1 200 OK\r\n" + block.encode("utf-8") + body
    reference = _reference_fields(block)
    verdict = _h1(data.draw(split(raw)), "feed", max_body_size=1 << 20)
    framing = {}
    for name, value in reference:
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            framing.setdefault(name.lower(), []).append(value)
    lengths = {v.strip() for v in ",".join(framing.get("content-length", [])).split(",")} if "content-length" in framing else set()
    if "transfer-encoding" in framing or len(lengths) > 1 or any(not (v.isascii() and v.isdigit()) for v in lengths):
        return  # those framings (and refusals) have their own tests; here: the fields as cut
    tokens = {t.strip().lower() for t in ",".join(framing.get("connection", [])).split(",")}
    keep_alive = "close" not in tokens and bool(lengths)
    length = int(next(iter(lengths))) if lengths else len(body)
    if length > len(body) or (length < len(body) and keep_alive):
        assert verdict == ("error",)  # cut short, or bytes after a keep-alive response
        return
    assert verdict[3] == reference
    assert verdict[5] == keep_alive
    assert verdict[4] == body[:length]


# ------------------------------------------------------------------------------- config

# Values a config check could stumble on: units, overflowing numbers, env references, names.
_ODD = st.sampled_from(["", "local", "openai", "azure", "bedrock", "vertex", "anthropic", "groq", "info", "512MiB",
                        "0", "1e3", "9" * 400 + "KB", "9" * 400 + "s", "9" * 400, "1.5 GB", "30s", "500ms",
                        "http://127.0.0.1:1", "sqlite:///x.db", "os.environ/SET", "os.environ/UNSET",
                        "os.environ/EMPTY", "/v1", "a/b", *FILTER_NAMES])
# Numbers of any magnitude with any unit, as a size or a duration is written.
_MEASURES = st.tuples(st.integers(0, 10**400) | st.floats(0, 1e300),
                      st.sampled_from(["", " ", "B", "KB", "MiB", "TiB", "s", "ms", "m", "h", "x"])).map(
    lambda nu: f"{nu[0]}{nu[1]}")
_SCALARS = (_MEASURES | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _ODD | st.text(max_size=10))
_junk = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=10)


def _section(keys: list[str], values=None):
    """A mapping of known keys (each maybe present, so every check of the section runs) to odd
    values, plus a few unknown keys."""
    values = _ODD | _SCALARS | (_junk if values is None else values)
    known = st.fixed_dictionaries({}, optional={key: values for key in keys})
    unknown = st.dictionaries(st.text(max_size=6) | st.integers(), _junk, max_size=2)
    return st.tuples(unknown, known).map(lambda kv: {**kv[0], **kv[1]})


_timeouts = _section(["connect", "read", "total"])
_tls = _section(["ca_bundle", "client_cert", "client_key", "verify"])
_provider_values = _SCALARS | _timeouts | _tls | st.dictionaries(st.text(max_size=6), _SCALARS, max_size=3) | _junk
_provider = _section(["name", "type", "api_base", "api_key", "api_version", "path", "shared", "timeouts",
                      "max_retries", "deployments", "headers", "organization", "project", "region", "bucket", "prefix",
                      "endpoint_url", "aws_access_key_id", "aws_secret_access_key", "service_file", "project_id",
                      "model", "anthropic_version", "anthropic_beta", "max_file_size", "upload_chunk_size", "proxy",
                      "tls"],
                     _provider_values)
_configs = st.fixed_dictionaries({}, optional={
    "server": _section(["host", "port", "workers", "base_path", "drain_timeout", "chunk_size",
                        "expiry_sweep_interval"]) | _junk,
    "store": _section(["url"]) | _junk,
    "auth": st.fixed_dictionaries({}, optional={"keys": st.lists(_section(["key", "tenant", "admin"]), max_size=3)
                                                | _junk}) | _junk,
    "limits": _section(["max_file_size", "max_batch_file_size", "tenant_storage_quota", "max_batch_lines",
                        "max_json_body"]) | _junk,
    "providers": st.lists(_provider, max_size=3) | _junk,
    "filters": st.lists(st.sampled_from(FILTER_NAMES) | _SCALARS, max_size=8) | _junk,
    "default_provider": _SCALARS,
    "log_level": _SCALARS,
    "unknown_key": _junk,
})
ENV = {"SET": "value", "EMPTY": ""}


_SECTION_KEYS = {
    "server": ["host", "port", "workers", "base_path", "drain_timeout", "chunk_size", "expiry_sweep_interval"],
    "store": ["url"],
    "limits": ["max_file_size", "max_batch_file_size", "tenant_storage_quota", "max_batch_lines", "max_json_body"],
}
_PROVIDER_KEYS = ["name", "api_base", "api_key", "api_version", "path", "shared", "timeouts", "max_retries",
                  "deployments", "headers", "organization", "project", "region", "bucket", "prefix", "endpoint_url",
                  "aws_access_key_id", "aws_secret_access_key", "service_file", "project_id", "model",
                  "anthropic_version", "anthropic_beta", "max_file_size", "upload_chunk_size", "shared_filesystem",
                  "proxy", "tls"]
_PROVIDER_BASE = {"name": "p", "api_key": "k", "api_base": "http://127.0.0.1:1", "api_version": "v1", "bucket": "b",
                  "region": "r", "project_id": "x"}
_KEY_PATHS = ([(section, key) for section, keys in _SECTION_KEYS.items() for key in keys]
              + [("auth.keys", key) for key in ("key", "tenant", "admin")]
              + [("providers", key) for key in _PROVIDER_KEYS]
              + [("timeouts", key) for key in ("connect", "read", "total")]
              + [("tls", key) for key in ("ca_bundle", "client_cert", "client_key", "verify")]
              + [("", key) for key in ("server", "store", "auth", "limits", "providers", "filters",
                                       "default_provider", "log_level")])


def _config_with(where: str, key: str, value, provider_type: str) -> dict:
    """A config that is valid but for ``value`` at ``where.key``."""
    provider = {**_PROVIDER_BASE, "type": provider_type}
    if where == "providers":
        return {"providers": [{**provider, key: value}]}
    if where in ("timeouts", "tls"):
        return {"providers": [{**provider, where: {key: value}}]}
    if where == "auth.keys":
        return {"auth": {"keys": [{"key": "k", "tenant": "t", key: value}]}}
    if where:
        return {where: {key: value}}
    return {key: value}


@FAST
@given(st.sampled_from(_KEY_PATHS), _ODD | _SCALARS | _junk,
       st.sampled_from(["local", "openai", "azure", "groq", "anthropic", "bedrock", "vertex", "s3", "gcs"]))
def test_config_any_value_at_any_key_gives_a_config_or_config_error(path, value, provider_type):
    try:
        parse_config(_config_with(*path, value, provider_type), env=ENV)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems), exc.problems


@FAST
@given(_configs)
def test_config_any_mapping_gives_a_config_or_config_error(cfg):
    try:
        parse_config(cfg, env=ENV)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems), exc.problems


@SLOW
@given(_configs)
def test_config_file_any_yaml_gives_a_config_or_config_error(cfg):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        try:
            load_config(path, env=ENV)
        except ConfigError as exc:
            assert exc.problems


def test_config_numbers_too_long_for_a_float_are_config_errors():
    # Found by the property above: float("9" * 400) is inf, and round(inf) raised OverflowError.
    for cfg in ({"limits": {"max_file_size": "9" * 400}}, {"limits": {"max_json_body": "9" * 400 + "KB"}},
                {"server": {"drain_timeout": "9" * 400 + "s"}}):
        try:
            parse_config(cfg, env={})
        except ConfigError as exc:
            assert "must be a" in exc.problems[0]
        else:
            raise AssertionError(f"accepted {cfg}")
    assert parse_config({"limits": {"max_file_size": "12345678901234567890"}}, env={}).limits.max_file_size \
        == 12345678901234567890  # exact, not through a float


def test_sse_event_ended_by_a_cr_at_the_end_of_the_stream_is_kept():
    # Found by the round trip above: the final CR was held back (it might have begun a CRLF)
    # and close() dropped it, and with it the stream's last event.
    parser = SSEParser()
    assert parser.feed(b"event: done\rdata: {}\r\r") == []
    assert [(e.event, e.data) for e in parser.close()] == [("done", b"{}")]
