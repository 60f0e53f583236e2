"""The listener's protocol against raw sockets: malformed requests, slow clients, connection
limits, closing after early errors, half-close, ``Expect: 100-continue`` (proxy/http_server.py,
proxy/body.py), each against a real gateway process."""
from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import passthrough_config
from tests.gateway_proc import GatewayProcess
from tests.support import wait_for_exchange, wait_until

SECRET = "sk-team-a-SECRET-7f3c9d"
BOUNDARY = "sgboundary"
# Generous bounds: the machine is shared; "prompt" means well under aiohttp's old 10 s linger.
PROMPT = 4.0


class Raw:
    """One client connection, read as HTTP/1.1 responses."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self, deadline: float) -> bool:
        """Read more; False on EOF. Raises TimeoutError past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except ConnectionResetError:
            return False
        self.buf += data
        return bool(data)

    def response(self, timeout: float = 10.0, *, interim: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next response; a 1xx is skipped unless ``interim`` (a client must accept one unasked)."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self._next(deadline)
            if interim or resp[0] >= 200:
                return resp

    def _next(self, deadline: float) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError(f"connection closed before a response: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", 0))
        while len(self.buf) < n:
            if not self._fill(deadline):
                break
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def eof(self, timeout: float = PROMPT) -> bool:
        """True when the gateway closes (FIN or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def error_of(status_headers_body: tuple[int, dict[str, str], bytes]) -> dict[str, Any]:
    status, headers, body = status_headers_body
    assert headers["content-type"].startswith("application/json"), (status, headers, body)
    err = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert headers["x-should-retry"] in ("true", "false")
    return err


def upload_head(content_length: int, *, extra: str = "", auth: str | None = None) -> str:
    lines = [f"POST /v1/files HTTP/1.1", "Host: gw", f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
             f"Content-Length: {content_length}"]
    if auth:
        lines.append(f"Authorization: Bearer {auth}")
    return "\r\n".join(lines) + "\r\n" + extra + "\r\n"


def form_start(purpose: str = "user_data", filename: str = "x.jsonl") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def form_end() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def partials(gw: GatewayProcess) -> list[Path]:
    return list((gw.workdir / "files" / ".partial").glob("*"))


def local_config(**server: Any) -> dict[str, Any]:
    cfg = passthrough_config()
    cfg["server"] = server
    return cfg


# ------------------------------------------------------------------ malformed requests

MALFORMED = {
    "bare LF": f"GET /v1/files HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\nX-A: b\r\n\r\n",
    "control byte": f"GET /v1/files HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n",
    "header over 16 KiB": f"GET /v1/files HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}{'A' * 17000}\r\n\r\n",
    "bad request line": f"GET /v1/files?k={SECRET} HTTP/1.1 extra\r\nHost: gw\r\n\r\n",
    "bad chunked framing": (f"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\r\n"
                            f"Transfer-Encoding: chunked\r\n\r\nzz{SECRET}\r\n"),
}


def test_malformed_requests_get_json_400_quoting_nothing_and_one_log_line(start_gateway):
    gw = start_gateway(local_config() | {"auth": {"keys": [{"key": SECRET, "tenant": "team-a"}]}})
    for name, request in MALFORMED.items():
        before = gw.log().count("malformed request from 127.0.0.1")
        c = Raw(gw)
        c.send(request)
        resp = c.response()
        status, headers, body = resp
        assert status == 400, name
        err = error_of(resp)
        assert err["type"] == "invalid_request_error" and err["code"] == "malformed_request", name
        assert headers["x-should-retry"] == "false" and headers["connection"].lower() == "close", name
        assert c.eof(), name
        c.close()
        assert SECRET.encode() not in body and b"sk-team" not in body and b"AAAA" not in body, name
        assert wait_until(lambda: gw.log().count("malformed request from 127.0.0.1") == before + 1), (name, gw.log())
    log = gw.log()
    assert SECRET not in log and "AAAA" not in log
    assert "Traceback" not in log and "ERROR" not in log
    assert "malformed request from 127.0.0.1: invalid header line (400)" in log
    assert "malformed request from 127.0.0.1: request line or header too long (400)" in log
    assert "malformed request from 127.0.0.1: invalid request line (400)" in log
    assert "malformed request from 127.0.0.1: invalid body framing (400)" in log


def test_bad_chunk_inside_a_body_being_read_is_a_400_at_once(start_gateway):
    gw = start_gateway(local_config())
    c = Raw(gw)
    c.send(f"POST /v1/files HTTP/1.1\r\nHost: gw\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
           "Transfer-Encoding: chunked\r\n\r\n")
    start = form_start()
    c.send(f"{len(start):x}\r\n".encode() + start + b"\r\n")
    assert wait_until(lambda: len(partials(gw)) == 1)  # the handler is reading the body (the file part)
    c.send(f"zz{SECRET}\r\n")
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 400 and error_of(resp)["code"] == "malformed_request"
    assert c.eof()
    assert SECRET not in gw.log() and "Traceback" not in gw.log()
    assert wait_until(lambda: partials(gw) == [])


def test_malformed_request_log_lines_are_rate_limited(start_gateway):
    gw = start_gateway(local_config())
    n = 60
    conns = [Raw(gw) for _ in range(n)]
    for c in conns:   # a burst: far more than 10 within a second
        c.send("GET /v1/files HTTP/1.1\r\nHost: gw\r\nX: a\x01\r\n\r\n")
    for c in conns:
        assert c.response()[0] == 400
        c.close()
    assert wait_until(lambda: "similar line(s) suppressed" in gw.log(), timeout=5), gw.log()
    lines = gw.log().count("malformed request from")
    suppressed = sum(int(k) for k in re.findall(r"(\d+) similar line\(s\) suppressed", gw.log()))
    assert suppressed > 0 and lines + suppressed == n


# ------------------------------------------------------------------ timeouts


def test_slow_headers_get_408_and_close_within_header_timeout(start_gateway):
    gw = start_gateway(local_config(header_timeout="1s"))
    c = Raw(gw)
    started = time.monotonic()
    c.send("GET /v1/fi")
    for ch in "les HTTP/1.1\r\nHost: gw\r\n":  # one byte every 0.25 s: never complete in time
        if time.monotonic() - started > 1.5:
            break
        try:
            c.send(ch)
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.25)
    got = c.response(timeout=PROMPT)
    assert got[0] == 408 and error_of(got)["code"] == "request_timeout"
    assert got[1]["connection"].lower() == "close"
    assert c.eof()
    assert time.monotonic() - started < 1 + PROMPT
    # A connection that sends nothing at all is closed as well, with nothing to answer.
    idle = Raw(gw)
    assert idle.eof(timeout=1 + PROMPT) and idle.buf == b""


def test_stalled_upload_gets_408_and_leaves_no_partial_file(start_gateway):
    gw = start_gateway(local_config(body_idle_timeout="1s"))
    c = Raw(gw)
    c.send(upload_head(1_000_000))   # the body will stop far short of this
    c.send(form_start() + b"x" * 1000)
    assert wait_until(lambda: len(partials(gw)) == 1)
    resp = c.response(timeout=1 + PROMPT)
    assert resp[0] == 408 and error_of(resp)["code"] == "request_timeout"
    assert resp[1]["x-should-retry"] == "false"
    assert c.eof()
    assert wait_until(lambda: partials(gw) == [])
    assert b'"data":[]' in get_body(gw, "/v1/files")


def test_trickled_upload_with_gaps_over_the_idle_timeout_gets_408(start_gateway):
    gw = start_gateway(local_config(body_idle_timeout="1s"))
    c = Raw(gw)
    body = form_start() + b"y" * 10 + form_end()
    c.send(upload_head(len(body)))
    c.send(body[:-20])
    # The gap before the rest grows until the gateway answers: past body_idle_timeout.
    assert select.select([c.sock], [], [], 1 + PROMPT)[0], "no answer after the idle timeout"
    try:
        c.send(body[-20:])
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 408
    assert wait_until(lambda: partials(gw) == [])


def test_upload_trickled_below_the_minimum_rate_gets_408(start_gateway):
    """1 byte every 0.2 s is never idle for body_idle_timeout, but averages far under
    body_min_rate: the body is cut once its grace and the credit its bytes earned are spent."""
    gw = start_gateway(local_config(body_idle_timeout="1s", body_min_rate="1KiB"))
    c = Raw(gw)
    c.send(upload_head(100_000))
    c.send(form_start())
    assert wait_until(lambda: len(partials(gw)) == 1)
    started = time.monotonic()
    cut = False
    while time.monotonic() - started < 8 and not cut:   # bounded: the old code never cuts it
        try:
            c.send(b"z")
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        cut = bool(select.select([c.sock], [], [], 0.2)[0])  # the answer (or EOF) is there
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 408 and error_of(resp)["code"] == "request_timeout"
    assert "too slowly" in error_of(resp)["message"]
    assert time.monotonic() - started < 5
    assert wait_until(lambda: partials(gw) == [])


def test_stalled_passthrough_upload_gets_408_and_nothing_upstream(start_gateway, fake_openai):
    cfg = passthrough_config(fake_openai)
    cfg["server"] = {"body_idle_timeout": "1s"}
    gw = start_gateway(cfg)
    c = Raw(gw)
    c.send(upload_head(1_000_000, extra="x-tfy-provider-name: my-openai\r\n"))
    c.send(form_start(purpose="batch") + b'{"custom_id": "a", "method": "POST"')
    resp = c.response(timeout=1 + PROMPT)
    assert resp[0] == 408 and error_of(resp)["code"] == "request_timeout"
    assert c.eof()
    wait_for_exchange(gw, op="files.create", status=408)
    assert fake_openai.wait_until(fake_openai.requests.answered)
    assert fake_openai.files == {}


def test_json_body_shorter_than_content_length_gets_408(start_gateway):
    gw = start_gateway(local_config(body_idle_timeout="1s"))
    c = Raw(gw)
    c.send("POST /v1/responses HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
           '{"model": "x", "input": "hi"}')
    started = time.monotonic()
    resp = c.response(timeout=1 + PROMPT)
    assert resp[0] == 408 and error_of(resp)["code"] == "request_timeout"
    assert time.monotonic() - started >= 0.9
    assert c.eof()


def test_connections_past_max_connections_are_refused_fast(start_gateway):
    gw = start_gateway(local_config(max_connections=3))
    held: list[Raw] = []
    for _ in range(100):   # each one is accepted and served (once the start-up probe's is gone)
        h = Raw(gw)
        h.send("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        if h.response()[0] == 200:
            held.append(h)
            if len(held) == 3:
                break
        else:
            h.close()
            time.sleep(0.05)
    assert len(held) == 3
    extra = Raw(gw)
    started = time.monotonic()
    extra.send("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    resp = extra.response(timeout=PROMPT)
    assert resp[0] == 503 and error_of(resp)["code"] == "server_overloaded"
    assert resp[1]["retry-after"] == "1" and resp[1]["x-should-retry"] == "true"
    assert extra.eof() and time.monotonic() - started < PROMPT
    assert "max_connections (3) reached" in gw.log()
    held.pop().close()
    # Once one closes, a new connection is served again.
    assert wait_until(lambda: get_status(gw, "/healthz") == 200)
    for h in held:
        h.close()


# ------------------------------------------------------------------ closing after early errors; half-close


def test_413_from_content_length_is_followed_by_eof_at_once(start_gateway):
    gw = start_gateway(local_config() | {"limits": {"max_file_size": "1MiB"}})
    c = Raw(gw)
    c.send(upload_head(50 * 1024 * 1024))
    c.send(form_start() + b"z" * 65536)
    started = time.monotonic()
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 413 and resp[1]["connection"].lower() == "close"
    assert c.eof(timeout=PROMPT) and time.monotonic() - started < PROMPT


def test_401_before_an_upload_body_is_followed_by_eof_at_once(start_gateway):
    gw = start_gateway(local_config() | {"auth": {"keys": [{"key": SECRET, "tenant": "team-a"}]}})
    c = Raw(gw)
    c.send(upload_head(10 * 1024 * 1024, auth="sk-wrong"))
    c.send(form_start() + b"z" * 65536)
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 401
    assert c.eof(timeout=PROMPT)


def test_half_closed_client_gets_its_response(start_gateway):
    gw = start_gateway(local_config())
    body = form_start() + b"hello" + form_end()
    c = Raw(gw)
    c.send(upload_head(len(body)).encode() + body)
    c.sock.shutdown(socket.SHUT_WR)
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 200, resp
    assert orjson.loads(resp[2])["bytes"] == 5
    assert c.eof()
    g = Raw(gw)
    g.send("GET /v1/files HTTP/1.1\r\nHost: gw\r\n\r\n")
    g.sock.shutdown(socket.SHUT_WR)
    assert g.response(timeout=PROMPT)[0] == 200
    assert " 499 " not in gw.log() and "status=499" not in gw.log()


def test_half_close_while_the_upstream_works_still_gets_the_answer(start_gateway, fake_openai):
    # The EOF arrives while the exchange is in flight: it is answered, and the file is kept;
    # a client that closes entirely instead is cancelled (tests/test_anthropic_files.py).
    gw = start_gateway(passthrough_config(fake_openai))
    fake_openai.delay_next(0.8, path="/v1/files")
    body = form_start(purpose="user_data", filename="a.txt") + b"half" + form_end()
    c = Raw(gw)
    c.send(upload_head(len(body), extra="x-tfy-provider-name: my-openai\r\n").encode() + body)
    c.sock.shutdown(socket.SHUT_WR)
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 200, resp
    file_id = orjson.loads(resp[2])["id"]
    assert list(fake_openai.files) == [file_id]
    assert file_id.encode() in get_body(gw, "/v1/files")


def test_half_close_in_the_middle_of_a_body_ends_the_upload_at_once(start_gateway):
    gw = start_gateway(local_config())
    c = Raw(gw)
    c.send(upload_head(1_000_000))
    c.send(form_start() + b"q" * 1000)
    assert wait_until(lambda: len(partials(gw)) == 1)
    c.sock.shutdown(socket.SHUT_WR)
    resp = c.response(timeout=PROMPT)
    assert resp[0] == 400 and error_of(resp)["code"] == "client_disconnected"
    assert wait_until(lambda: partials(gw) == [])


# ------------------------------------------------------------------ Expect: 100-continue

EXPECT = "Expect: 100-continue\r\n"


def test_expect_100_continue_is_answered_before_the_body_is_sent(start_gateway):
    gw = start_gateway(local_config())
    body = form_start() + b"hello" + form_end()
    c = Raw(gw)
    c.send(upload_head(len(body), extra=EXPECT))
    interim = c.response(timeout=PROMPT, interim=True)   # sent before any body byte
    assert interim[0] == 100
    c.send(body)
    resp = c.response()
    assert resp[0] == 200 and orjson.loads(resp[2])["bytes"] == 5
    # JSON bodies too (responses.create reads its body through the same reader).
    j = Raw(gw)
    payload = b'{"model": "x", "input": "hi"}'
    j.send(f"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(payload)}\r\n{EXPECT}\r\n")
    assert j.response(timeout=PROMPT, interim=True)[0] == 100
    j.send(payload)
    assert j.response()[0] == 400   # local does not serve responses.create; the body was read


def test_expect_100_continue_refused_at_once_from_content_length(start_gateway):
    gw = start_gateway(local_config() | {"limits": {"max_file_size": "10MiB", "max_batch_file_size": "1MiB"},
                                         "auth": {"keys": [{"key": SECRET, "tenant": "team-a"}]}})
    # Larger than every limit that could apply: the final 413 at once, no 100, then EOF.
    c = Raw(gw)
    c.send(upload_head(250 * 1000 * 1000, extra=EXPECT, auth=SECRET))
    resp = c.response(timeout=PROMPT, interim=True)
    assert resp[0] == 413 and error_of(resp)["code"] == "file_too_large"
    assert c.eof()
    # A wrong key: 401 without 100.
    u = Raw(gw)
    u.send(upload_head(1000, extra=EXPECT, auth="sk-wrong"))
    assert u.response(timeout=PROMPT, interim=True)[0] == 401
    assert u.eof()
    # A batch file over the batch limit: 100 at once, then the 413 as soon as the purpose and
    # the file part are in — the rest of the body is never needed.
    b = Raw(gw)
    b.send(upload_head(5 * 1024 * 1024, extra=EXPECT, auth=SECRET))
    assert b.response(timeout=PROMPT, interim=True)[0] == 100
    b.send(form_start(purpose="batch"))
    resp = b.response(timeout=PROMPT, interim=True)
    assert resp[0] == 413 and "batch" in error_of(resp)["message"]
    assert b.eof()


# ------------------------------------------------------------------ helpers using a fresh connection


def get_body(gw: GatewayProcess, path: str) -> bytes:
    c = Raw(gw)
    c.send(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n")
    _, _, body = c.response()
    c.close()
    return body


def get_status(gw: GatewayProcess, path: str) -> int:
    try:
        c = Raw(gw)
        c.send(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n")
        status = c.response(timeout=2)[0]
        c.close()
        return status
    except (OSError, EOFError, TimeoutError):
        return 0


# ------------------------------------------------------------------ pipelining

def _pipelined(n: int) -> tuple[bytes, list[tuple[int, int | None]]]:
    """``n`` requests on one connection, sent before any answer is read: uploads (one body far
    over the body reader's buffer, so its reading pauses and resumes), listings, and JSON
    bodies the gateway reads and refuses; with the status and uploaded size each must get."""
    out, expect = [], []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            content = (b"x" * (300 * 1024)) if i == 3 * (n // 6) else (b"line %d\n" % i)
            body = form_start() + content + form_end()
            out.append(upload_head(len(body)).encode() + body)
            expect.append((200, len(content)))
        elif kind == 1:
            out.append(b"GET /v1/files?limit=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
            expect.append((200, None))
        else:
            body = b'{"model": "gpt-4o-mini", "input": ' + b"[" * (i % 7)  # not JSON: 400 after the read
            out.append(b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            expect.append((400, None))
    return b"".join(out), expect


def test_pipelined_requests_with_bodies_are_all_answered_in_order(start_gateway):
    """More requests than aiohttp queues before it stops reading (its message queue pauses the
    transport), with bodies read whole, refused unread-to-the-end, and one read in pieces: each
    is answered once, in order, whether the bytes arrive at once or a few at a time."""
    gw = start_gateway(local_config())
    data, expect = _pipelined(120)
    for split in (len(data), 7000, 1500, 333):
        c = Raw(gw)
        for k in range(0, len(data), split):
            c.send(data[k:k + split])
        for i, (status, size) in enumerate(expect):
            resp = c.response(timeout=20)
            assert resp[0] == status, (split, i, resp)
            if size is not None:
                assert orjson.loads(resp[2])["bytes"] == size, (split, i)
            if status == 400:
                assert error_of(resp)["code"] == "invalid_json", resp
        c.sock.shutdown(socket.SHUT_WR)
        assert c.eof()
        c.close()
