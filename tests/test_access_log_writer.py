"""The access log is written off the event loop: queued lines, one writer thread, nothing lost
at drain or exit, a stdout nobody reads neither stalls the gateway nor grows it without bound."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import pytest
import yaml

from proxy.logs import AccessLineHandler
from tests.gateway_proc import GatewayProcess, free_port, gateway_env

TIMEOUT = 20  # seconds any one answer may take on a loaded machine


def _local_config() -> dict:
    return {"providers": [{"name": "local", "type": "local", "path": "./files"}], "default_provider": "local"}


def _get_many(port: int, paths: list[str]) -> list[int]:
    """GET each path in turn on one keep-alive connection; the statuses (bounded waits)."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        buf = b""
        for path in paths:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, "the gateway closed the connection"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(buf) < length:
                chunk = s.recv(65536)
                assert chunk, "the gateway closed the connection"
                buf += chunk
            buf = buf[length:]
            statuses.append(int(head.split(b" ", 2)[1]))
    return statuses


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_is_written_by_the_sigterm_drain(start_gateway, workers):
    gw: GatewayProcess = start_gateway(_local_config(), workers=workers)
    ids = [f"file-drain{i:04d}" for i in range(300)]
    assert set(_get_many(gw.port, [f"/v1/files/{i}" for i in ids])) == {404}
    assert gw.stop() == 0  # at once: the lines still queued are written by the drain
    lines = [line for line in gw.access_log() if line["op"] == "files.retrieve"]
    # One line per exchange, in the order the exchanges ended (one connection: one worker).
    assert [line["id"] for line in lines] == ids
    assert {line["status"] for line in lines} == {404}


def _start_unread(workdir: Path, workers: int = 1) -> tuple[subprocess.Popen, int, IO[bytes]]:
    """A gateway whose stdout is a pipe nobody reads (yet); stderr to workdir/stderr.log."""
    port = free_port()
    workdir.mkdir()
    (workdir / "sluicegate.yaml").write_text(yaml.safe_dump(_local_config()))
    stderr = open(workdir / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "--port", str(port), "--config", "sluicegate.yaml",
                             "--workers", str(workers)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=stderr, env=gateway_env())
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, stderr
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                stderr.close()
                raise AssertionError((workdir / "stderr.log").read_text()) from None
            time.sleep(0.05)


def test_a_stdout_nobody_reads_does_not_stop_the_gateway(tmp_path: Path):
    """Old: the handler wrote each line on the event loop; once the pipe (64 KiB) was full, the
    next write blocked the loop and every request after it hung."""
    workdir = tmp_path / "gw"
    proc, port, stderr = _start_unread(workdir)
    out = bytearray()
    reader = threading.Thread(target=lambda: out.extend(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    try:
        # ~2.3 KB per line: the pipe is full after ~28 lines, the writer's 4 MiB queue after ~1,800.
        n = 2500
        paths = [f"/v1/files/file-{i:05d}{'x' * 2000}" for i in range(n)]
        started = time.monotonic()
        statuses = _get_many(port, paths)
        assert statuses == [404] * n
        assert time.monotonic() - started < 120
        # Now read the pipe: what was queued comes out, then a stop writes the rest.
        reader.start()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    records = [orjson.loads(line) for line in bytes(out).splitlines()]  # every line whole JSON
    access = [r for r in records if "op" in r]
    notices = [r for r in records if "op" not in r]
    dropped = sum(int(r["message"].split("access log: ", 1)[1].split(" ", 1)[0]) for r in notices)
    assert dropped > 0 and all(r["level"] == "WARNING" for r in notices), notices
    assert len(access) + dropped == n  # every line written or counted as dropped
    line_bytes = len(bytes(out).split(b"\n", 1)[0]) + 1
    assert len(access) >= AccessLineHandler.MAX_PENDING // line_bytes  # the queue was used to its bound
    ids = [r["id"][:10] for r in access]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, once each
    text = (workdir / "stderr.log").read_text()
    assert "line(s) dropped while stdout was not taking them" in text


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stuck_stdout_does_not_hold_up_the_exit(tmp_path: Path, workers):
    workdir = tmp_path / "gw"
    proc, port, stderr = _start_unread(workdir, workers)
    try:
        assert set(_get_many(port, [f"/v1/files/file-{i:05d}{'x' * 2000}" for i in range(200)])) == {404}
        proc.send_signal(signal.SIGTERM)
        # The drain waits for the writer (5 s), then gives the lines up, and says so.
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    text = (workdir / "stderr.log").read_text()
    assert text.count("line(s) not written at exit: stdout is not taking them") == 1, text


class _Stuck:
    """A stream whose writes block until released (a pipe nobody reads, in-process)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        assert self.release.wait(30)
        self.data += data

    def flush(self) -> None:
        pass


def test_put_never_blocks_and_the_queue_is_bounded():
    stuck = _Stuck()
    w = AccessLineHandler(stuck, max_pending=10_000)  # type: ignore[arg-type]
    line = b'{"n":' + b"1" * 94 + b"}"  # 100 bytes, 101 with the newline
    assert len(line) == 100
    t = time.perf_counter()
    for _ in range(5_000):
        w.put(line)
    assert time.perf_counter() - t < 5  # 5,000 puts while every write blocks
    assert not w.write_out(timeout=0.2)  # still stuck: flush says so instead of hanging
    stuck.release.set()
    assert w.write_out(timeout=10)
    records = [orjson.loads(x) for x in bytes(stuck.data).splitlines()]
    written = [r for r in records if "n" in r]
    (notice,) = [r for r in records if "n" not in r]
    dropped = int(notice["message"].split("access log: ", 1)[1].split(" ", 1)[0])
    assert len(written) + dropped == 5_000
    assert len(written) * 101 <= 10_000 + 101  # never more queued than the bound (+ one line)
    w.close()


def test_a_forked_child_does_not_write_the_parents_lines_again(tmp_path: Path):
    path = tmp_path / "access.log"
    with open(path, "ab", buffering=0) as stream:
        w = AccessLineHandler(stream, linger=5.0)  # the parent's lines would wait 5 s without the fork hook
        for i in range(10):
            w.put(b'{"who":"parent","n":%d}' % i)
        pid = os.fork()
        if pid == 0:
            try:
                w.put(b'{"who":"child","n":0}')
                os._exit(0 if w.write_out(timeout=10) else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert w.write_out(timeout=10)
        w.close()
    records = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert sorted((r["who"], r["n"]) for r in records) == [("child", 0)] + [("parent", i) for i in range(10)]
