"""Sans-IO JSONL splitting and batch-file validation, fed whole and split at every byte."""
from __future__ import annotations

import orjson
import pytest

from proxy.transforms.jsonl import (
    BATCH_ENDPOINTS,
    BatchLineError,
    BatchValidator,
    LineSplitter,
    LineTooLong,
    describe,
)


def split_lines(data: bytes, *cuts: int, max_line_length: int = 1 << 20) -> list[tuple[int, bytes]]:
    """Feed ``data`` cut at the given offsets, then close."""
    splitter = LineSplitter(max_line_length)
    out: list[tuple[int, bytes]] = []
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:]):
        out += splitter.feed(data[a:b])
    return out + splitter.close()


def validate(data: bytes, *cuts: int, **limits: int) -> BatchValidator:
    validator = BatchValidator(**limits)
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:]):
        validator.feed(data[a:b])
    validator.close()
    return validator


def error_of(data: bytes, *cuts: int, **limits: int) -> str:
    with pytest.raises(BatchLineError) as info:
        validate(data, *cuts, **limits)
    return str(info.value)


def row(custom_id: object = "r1", method: object = "POST", url: object = "/v1/chat/completions",
        body: object = None, **extra: object) -> dict:
    line = {"custom_id": custom_id, "method": method, "url": url,
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "2+2?"}]}
            if body is None else body}
    line.update(extra)
    return line


def jsonl(*rows: object, eol: bytes = b"\n") -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + eol for r in rows)


# ---------------------------------------------------------------- LineSplitter


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"", []),
        (b"a\n", [(1, b"a")]),
        (b"a", [(1, b"a")]),
        (b"a\nbc", [(1, b"a"), (2, b"bc")]),
        (b"a\r\nb\r\n", [(1, b"a"), (2, b"b")]),
        (b"a\r\nb\nc", [(1, b"a"), (2, b"b"), (3, b"c")]),
        (b"\n\n", [(1, b""), (2, b"")]),
        (b"\r\n", [(1, b"")]),
        (b"a\rb\n", [(1, b"a\rb")]),  # a lone CR is data
        (b"a\r", [(1, b"a\r")]),  # ... also at the end of the input
        (b"a\r\r\n", [(1, b"a\r")]),
        (b"\xff\x00\n", [(1, b"\xff\x00")]),
    ],
)
def test_splitter_every_split(data: bytes, lines: list) -> None:
    assert split_lines(data) == lines
    for i in range(len(data) + 1):
        assert split_lines(data, i) == lines, i
    assert split_lines(data, *range(1, len(data))) == lines  # one byte at a time


def test_splitter_every_double_split() -> None:
    data = b'{"a":1}\r\n\n{"b":"x\\ny"}\nlast'
    expected = [(1, b'{"a":1}'), (2, b""), (3, b'{"b":"x\\ny"}'), (4, b"last")]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert split_lines(data, i, j) == expected, (i, j)


def test_splitter_returns_bytes_for_any_buffer_type() -> None:
    splitter = LineSplitter()
    assert splitter.feed(memoryview(b"ab\ncd")) == [(1, b"ab")]
    lines = splitter.feed(bytearray(b"e\n"))
    assert lines == [(2, b"cde")] and type(lines[0][1]) is bytes
    assert splitter.close() == []


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_splitter_line_of_exactly_max_length(eol: bytes) -> None:
    data = b"x" * 8 + eol + b"y" * 8
    for i in range(len(data) + 1):
        assert split_lines(data, i, max_line_length=8) == [(1, b"x" * 8), (2, b"y" * 8)], i


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"x" * 9 + b"\n", 1),  # complete line in one chunk
        (b"ok\n" + b"x" * 9, 2),  # unterminated, never buffered past the limit
        (b"ok\n" + b"x" * 9 + b"\r\n", 2),
        (b"x" * 8 + b"\r", 1),  # a final lone CR is data: 9 bytes
        (b"x" * 8 + b"\ry\n", 1),
    ],
)
def test_splitter_line_too_long_every_split(data: bytes, line: int) -> None:
    for i in range(len(data) + 1):
        with pytest.raises(LineTooLong) as info:
            split_lines(data, i, max_line_length=8)
        assert info.value.line == line and info.value.limit == 8
        assert str(info.value) == f"line {line} is longer than 8 bytes"


def test_splitter_raises_before_buffering_past_the_limit() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b"x" * 5) == []
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 4)  # no newline yet: 9 bytes pending is already too many
    with pytest.raises(LineTooLong):  # dead from then on
        splitter.feed(b"\n")
    with pytest.raises(LineTooLong):
        splitter.close()


def test_splitter_iter_feed_yields_lines_before_a_long_one() -> None:
    lines = LineSplitter(4).iter_feed(b"ab\ncd\n" + b"x" * 5 + b"\n")
    assert next(lines) == (1, b"ab")
    assert next(lines) == (2, b"cd")
    with pytest.raises(LineTooLong):
        next(lines)


# ---------------------------------------------------------------- describe


def test_describe_shows_scalars_and_names_containers() -> None:
    assert describe("GET") == '"GET"'
    assert describe('say "hi"') == '"say \\"hi\\""'
    assert describe("x" * 500) == '"' + "x" * 100 + '…"'
    assert [describe(v) for v in (None, True, 3, 2.5, [1], [], {"a": 1}, {})] == [
        "null", "true", "3", "2.5", "an array", "an empty array", "an object", "an empty object"]


# ---------------------------------------------------------------- BatchValidator: valid files

VALID = jsonl(row("a"), row("b"), row("c"), row("d"))


@pytest.mark.parametrize(
    "data",
    [
        VALID,
        VALID.replace(b"\n", b"\r\n"),
        VALID[:-1],  # last line without a newline
        jsonl(*(row(f"id-{i}", url="/v1/responses", body={"model": "m", "input": "hi"}) for i in range(4))),
    ],
    ids=["lf", "crlf", "no-final-eol", "responses"],
)
def test_valid_file_every_split(data: bytes) -> None:
    assert validate(data).lines == 4
    for i in range(len(data) + 1):
        assert validate(data, i).lines == 4, i
    assert validate(data, *range(1, len(data))).lines == 4


@pytest.mark.parametrize("url", BATCH_ENDPOINTS)
def test_every_batch_endpoint_is_accepted(url: str) -> None:
    assert validate(jsonl(row("a", url=url), row("b", url=url))).lines == 2


def test_extra_top_level_keys_and_unicode_are_fine() -> None:
    assert validate(jsonl(row("ü-1", note="x"), row("ü-2"))).lines == 2


def test_on_request_sees_each_validated_request_in_order() -> None:
    seen: list[tuple[int, str]] = []
    validator = BatchValidator(on_request=lambda line, req: seen.append((line, req["custom_id"])))
    for i in range(len(VALID)):
        validator.feed(VALID[i:i + 1])
    validator.close()
    assert seen == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_on_request_error_kills_the_validator() -> None:
    def refuse(line: int, request: dict) -> None:
        if line == 2:
            raise BatchLineError(line, '"body.n" must be 1')

    validator = BatchValidator(on_request=refuse)
    with pytest.raises(BatchLineError, match=r'^line 2: "body.n" must be 1$'):
        validator.feed(VALID)
    with pytest.raises(BatchLineError, match="^line 2:"):
        validator.close()


# ---------------------------------------------------------------- BatchValidator: one rule per case

LONG = "x" * 300
OK = orjson.dumps(row("first")) + b"\n"  # a valid line 1 in front of cases that need one


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", 'line 1: the file contains no requests'),
        (b"\n", "line 1: empty line"),
        (OK + b"\n", "line 2: empty line"),
        (OK + b"   \t\n" + OK, "line 2: empty line"),
        (OK + b"\r\n\r\n", "line 2: empty line"),
        (OK + b" ", "line 2: empty line"),
        (b"\xef\xbb\xbf" + OK, "line 1: UTF-8 byte order mark is not allowed"),
        (OK + b'{"custom_id": "x"', "line 2: not valid JSON (unexpected end of data at column 18)"),
        (OK + b"{} {}\n", "line 2: not valid JSON (unexpected content after document at column 4)"),
        (OK + b'{"custom_id": "\xff"}\n', "line 2: not valid UTF-8 (byte 16)"),
        (OK + b"[1, 2]\n", "line 2: must be a JSON object, got an array"),
        (OK + b'"text"\n', 'line 2: must be a JSON object, got "text"'),
        (jsonl({"method": "POST", "url": "/v1/embeddings", "body": {}}), 'line 1: "custom_id" is required'),
        (jsonl(row(None)), 'line 1: "custom_id" is required'),
        (jsonl(row(7)), 'line 1: "custom_id" must be a string, got 7'),
        (jsonl(row("")), 'line 1: "custom_id" must not be empty'),
        (jsonl(row("a"), row("b"), row("a")), 'line 3: "custom_id" "a" is already used on line 1'),
        (jsonl({"custom_id": "a", "url": "/v1/embeddings", "body": {}}), 'line 1: "method" is required'),
        (jsonl(row(method="GET")), 'line 1: "method" must be "POST", got "GET"'),
        (jsonl(row(method="post")), 'line 1: "method" must be "POST", got "post"'),
        (jsonl(row(method=["POST"])), 'line 1: "method" must be "POST", got an array'),
        (jsonl({"custom_id": "a", "method": "POST", "body": {}}), 'line 1: "url" is required'),
        (jsonl(row(url="/v1/files")),
         'line 1: "url" must be one of ' + ", ".join(BATCH_ENDPOINTS) + '; got "/v1/files"'),
        (jsonl(row(url="v1/chat/completions")),
         'line 1: "url" must be one of ' + ", ".join(BATCH_ENDPOINTS) + '; got "v1/chat/completions"'),
        (jsonl(row(url={"path": "/v1/responses"})),
         'line 1: "url" must be one of ' + ", ".join(BATCH_ENDPOINTS) + "; got an object"),
        (jsonl(row("a"), row("b", url="/v1/embeddings")),
         'line 2: "url" must be "/v1/chat/completions" as on line 1 (a batch uses one endpoint), '
         'got "/v1/embeddings"'),
        (jsonl({"custom_id": "a", "method": "POST", "url": "/v1/embeddings"}), 'line 1: "body" is required'),
        (jsonl(row(body=None) | {"body": None}), 'line 1: "body" is required'),
        (jsonl(row(body="hi")), 'line 1: "body" must be a JSON object, got "hi"'),
        (jsonl(row(body=[])), 'line 1: "body" must be a JSON object, got an empty array'),
        (jsonl(row(method=LONG)), 'line 1: "method" must be "POST", got "' + "x" * 100 + '…"'),
    ],
)
def test_rule(data: bytes, message: str) -> None:
    assert error_of(data) == message


def test_too_many_lines() -> None:
    three = jsonl(row("a"), row("b"), row("c"))
    assert validate(three, max_lines=3).lines == 3
    assert error_of(three + jsonl(row("d")), max_lines=3) == (
        "line 4: too many requests: a batch file holds at most 3")


def test_line_too_long_becomes_a_line_error() -> None:
    line = orjson.dumps(row("a"))
    assert validate(line + b"\r\n", max_line_length=len(line)).lines == 1
    assert error_of(jsonl(row("b")) + line + b"x\n", max_line_length=len(line)) == (
        f"line 2: the line is longer than {len(line)} bytes")


def test_no_message_echoes_more_than_100_chars_of_input() -> None:
    for data in (jsonl(row(LONG), row(LONG)), jsonl(row(url="/" + LONG)), jsonl(row(body=LONG)),
                 OK + b'"' + LONG.encode() + b'"\n'):
        assert LONG[:101] not in error_of(data)


# ---------------------------------------------------------------- BatchValidator: errors are split-proof

BAD_LINE_3 = jsonl(row("a"), row("b"), row("c", method="GET"), row("d"))


@pytest.mark.parametrize("data", [BAD_LINE_3, BAD_LINE_3.replace(b"\n", b"\r\n")], ids=["lf", "crlf"])
def test_error_on_line_3_is_the_same_for_every_split(data: bytes) -> None:
    expected = 'line 3: "method" must be "POST", got "GET"'
    assert error_of(data) == expected
    for i in range(len(data) + 1):
        assert error_of(data, i) == expected, i
    assert error_of(data, *range(1, len(data))) == expected


def test_first_bad_line_wins_over_a_later_long_line_in_the_same_chunk() -> None:
    data = jsonl(row("a"), row("a"), row("b", note="x" * 200))
    limit = len(orjson.dumps(row("a"))) + 20
    for i in range(len(data) + 1):
        assert error_of(data, i, max_line_length=limit) == 'line 2: "custom_id" "a" is already used on line 1', i


def test_a_failed_validator_stays_failed() -> None:
    validator = BatchValidator()
    with pytest.raises(BatchLineError) as first:
        validator.feed(BAD_LINE_3)
    assert first.value.line == 3 and first.value.message == '"method" must be "POST", got "GET"'
    for call in (lambda: validator.feed(OK), validator.close):
        with pytest.raises(BatchLineError) as again:
            call()
        assert again.value is first.value
    assert validator.lines == 2


def test_no_requests_error_is_sticky() -> None:
    validator = BatchValidator()
    with pytest.raises(BatchLineError, match="^line 1: the file contains no requests$"):
        validator.close()
    with pytest.raises(BatchLineError, match="no requests"):
        validator.feed(OK)
