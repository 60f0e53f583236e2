"""Logs a client cannot forge: the JSON access log and the one-line text log."""
from __future__ import annotations

import io
import logging
import os
import re
import socket

import orjson
import pytest

from proxy import logs
from proxy.logs import ACCESS_LOGGER, MAX_MESSAGE_CHARS, OneLineFormatter, one_line, setup_logging
from tests.conftest import passthrough_config

KEY = "sk-log-team"
FORGED = "2026-01-01 00:00:00,000 ERROR sluicegate FORGED"
# A text-log line of the gateway's own: its timestamp, a level, a logger name.
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.-]+\[\d+\] ")


def _raw(port: int, request: bytes) -> bytes:
    """One request on its own connection, as sent; the whole answer (bounded wait)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _get(port: int, target: str, *, key: str | None = KEY) -> int:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    answer = _raw(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
    return int(answer.split(b" ", 2)[1])


def _post_json(port: int, target: str, body: bytes, headers: str = "") -> int:
    answer = _raw(port, (f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{headers}"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n").encode() + body)
    return int(answer.split(b" ", 2)[1])


def _check_lines(log: str) -> tuple[list[dict], list[str]]:
    """Split the gateway's output into access records and text lines, asserting that every line
    is one or the other: a JSON object, a text line starting with the gateway's own prefix, or a
    line of a traceback that such a line started (indented frames, then one exception line)."""
    access, text = [], []
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("{"):
            access.append(orjson.loads(line))  # raises on a line that is not whole JSON
            in_traceback = False
        elif TEXT_LINE.match(line):
            text.append(line)
            in_traceback = False
        elif line == "Traceback (most recent call last):" or (in_traceback and line.startswith("  ")):
            in_traceback = True
        elif in_traceback:
            in_traceback = False  # the exception's own line ends the traceback
            text.append(line)
        else:
            raise AssertionError(f"a line no log record started: {line!r}")
        assert not line.startswith(FORGED[:23]), line
    return access, text


def test_client_values_cannot_forge_or_break_log_lines(start_gateway, fake_openai):
    cfg = passthrough_config(fake_openai, auth={"keys": [{"key": KEY, "tenant": "team-log"}]})
    gw = start_gateway(cfg)
    forging = "/v1/files/x%0a" + FORGED.replace(" ", "%20")
    statuses = [
        _get(gw.port, forging, key=None),  # no key at all: 401, still logged
        _get(gw.port, "/v1/files/x%00y%0d%1b[31m%e2%80%a8z"),  # NUL, CR, an escape sequence, U+2028
        _get(gw.port, "/v1/files/" + "A" * 6000),  # far over the path cap
    ]
    model = "gpt-4o\n" + FORGED + "\x00\r\x1b\x85\u2028" + "m" * 400
    statuses.append(_post_json(gw.port, "/v1/responses", orjson.dumps({"model": model, "input": "hi"}),
                               "x-tfy-provider-name: my-openai\r\n"))
    # A malformed header: aiohttp's parser error quotes the raw header; the gateway logs one
    # fixed line for it instead (proxy/http_server.py), quoting nothing.
    bad = _raw(gw.port, b"GET /v1/files HTTP/1.1\r\nHost: x\r\nX-A: a\nFORGED\r\nConnection: close\r\n\r\n")
    assert bad.startswith(b"HTTP/1.") and b" 400 " in bad.split(b"\r\n", 1)[0]
    assert statuses[:3] == [401, 404, 404] and statuses[3] == 200
    gw.stop()

    access, text = _check_lines(gw.log())
    assert len(access) == 4, access  # exactly one line per exchange
    forged, controls, huge, response = access
    assert forged["status"] == 401 and forged["path"] == "/v1/files/x\n" + FORGED
    assert forged["id"] == "x\n" + FORGED and "truncated" not in forged
    assert controls["id"] == "x\x00y\r\x1b[31m\u2028z" and controls["tenant"] == "team-log"
    assert len(huge["path"]) == 2048 and len(huge["id"]) == 256 and huge["truncated"] == ["path", "id"]
    assert response["model"] == model[:256] and response["truncated"] == ["model"]
    assert response["input_tokens"] > 0 and response["provider"] == "my-openai"
    # Every field the logfmt line had, under the same names.
    for record in access:
        assert set(record) >= {"time", "method", "path", "op", "status", "tenant", "provider", "upload_bytes",
                               "duration_ms", "ttfb_ms", "id", "model", "input_tokens", "output_tokens", "error"}
    # The malformed request is one short line that quotes nothing from it.
    assert not [line for line in text if "FORGED" in line], text
    assert len([line for line in text if "malformed request" in line]) == 1, text
    assert KEY not in gw.log()


def test_formatter_keeps_every_message_on_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter())
    log = logging.getLogger("sluicegate.test-logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("id %s", f"x\n{FORGED}\r\x00\x7f\x85\u2028\u2029\tend")
        log.warning("long %s", "y\n" * MAX_MESSAGE_CHARS)
        try:
            try:
                raise KeyError(f"cause\n{FORGED}")
            except KeyError as exc:
                raise ValueError(f"bad value\n{FORGED}") from exc
        except ValueError:
            log.exception("failed on %s", "z\nFORGED")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(f"id x\\n{FORGED}\\r\\x00\\x7f\\x85\\u2028\\u2029\\tend")
    assert TEXT_LINE.match(lines[1]) and lines[1].endswith("...[truncated]")
    assert len(lines[1]) < MAX_MESSAGE_CHARS + 100
    assert lines[2].endswith("failed on z\\nFORGED")
    # The tracebacks keep their frames on their own lines; each exception's message is escaped.
    assert f"KeyError: 'cause\\n{FORGED}'" in lines and f"ValueError: bad value\\n{FORGED}" in lines
    assert not any(line.startswith(FORGED[:10]) for line in lines)


def test_one_line_cost_is_bounded_for_huge_messages():
    assert one_line("plain") == "plain"
    out = one_line("\x00" * 10_000_000, limit=100)
    assert out == "\\x00" * 25 + "...[truncated]"


def test_access_line_is_json_even_for_a_lone_surrogate():
    from filters.access_log import _dumps

    line = _dumps({"path": "/v1/files/\ud800x", "status": 404})
    assert orjson.loads(line) == {"path": "/v1/files/\\ud800x", "status": 404}


@pytest.mark.parametrize("level, access_on", [("info", True), ("debug", True), ("warning", False)])
def test_log_level_switches_the_access_log(level, access_on):
    text, access = io.StringIO(), io.BytesIO()
    root_level = logging.getLogger().level
    try:
        setup_logging(level, text_stream=text, access_stream=access)
        logging.getLogger(ACCESS_LOGGER).info(b'{"status":200}')
        logging.getLogger("sluicegate").warning("two\nlines")
        assert logs.flush_access_log(timeout=10)  # the access line is written by the writer's thread
    finally:  # leave this process's logging as the test found it
        logs.reset_logging()
        logging.getLogger().setLevel(root_level)
    assert access.getvalue() == (b'{"status":200}\n' if access_on else b"")
    assert text.getvalue().endswith(f" WARNING sluicegate[{os.getpid()}] two\\nlines\n")
