"""/metrics: the whole gateway's counts (all workers), the same names and labels as always,
on by default, nothing carried over from a previous run."""
from __future__ import annotations

import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import psutil

from tests.conftest import client, passthrough_config
from tests.support import scrape, total
from tests.test_local_files import local_config

BUCKETS = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
           "10.0", "30.0", "60.0", "+Inf")


def metrics_dirs(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("sluicegate-metrics-*"))


def test_workers_report_the_whole_gateway(start_gateway, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    gw = start_gateway(local_config(), workers=2, env={"TMPDIR": str(tmpdir)})
    assert len(metrics_dirs(tmpdir)) == 1  # one private directory, shared by the workers
    # A new connection per request, several at once, so both workers accept some.
    c = client(gw, default_headers={"Connection": "close"}, timeout=30)
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: list(c.files.list()), range(100)))
    assert pages == [[]] * 100
    lines = gw.access_log(until=lambda ls: sum(line["op"] == "files.list" for line in ls) == 100)
    served_by = {line["pid"] for line in lines if line["op"] == "files.list"}
    assert len(served_by) == 2, served_by  # else a per-worker share could not show
    # Scrapes are admin requests and not counted: every scrape, whichever worker answers it,
    # sees all 100, never one worker's part.
    for _ in range(10):
        samples = scrape(gw)
        assert total(samples, "sluicegate_requests_total") == 100
        assert total(samples, "sluicegate_requests_total", operation="files.list", provider="local",
                     status="200") == 100
        assert total(samples, "sluicegate_request_duration_seconds_count") == 100
        assert total(samples, "sluicegate_inflight_requests") == 0
        assert total(samples, "sluicegate_draining") == 0
    assert gw.stop() == 0
    assert metrics_dirs(tmpdir) == []  # removed on exit


def test_single_worker_names_labels_and_values(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))  # no filters key: metrics is in the default chain
    c = client(gw)
    f = c.files.create(file=("a.txt", b"x" * 1234), purpose="assistants")
    assert c.files.content(f.id).content == b"x" * 1234
    try:
        c.files.retrieve("file-missing")
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("expected a 404")
    resp = c.responses.create(model="gpt-4o", input="hi", extra_headers={"x-tfy-provider-name": "my-openai"})

    samples = scrape(gw)
    requests = {(lab["operation"], lab["provider"], lab["status"]): v
                for lab, v in samples["sluicegate_requests_total"]}
    assert requests[("files.create", "local", "200")] == 1
    assert requests[("files.content", "local", "200")] == 1
    assert requests[("responses.create", "my-openai", "200")] == 1
    assert sum(v for (op, _, status), v in requests.items() if op == "files.retrieve" and status == "404") == 1
    assert sum(requests.values()) == 4
    # The histogram: the same buckets, cumulative, its count the requests'.
    buckets = [(lab["le"], v) for lab, v in samples["sluicegate_request_duration_seconds_bucket"]
               if lab["operation"] == "files.create" and lab["provider"] == "local"]
    assert [le for le, _ in buckets] == list(BUCKETS)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1][1] == 1
    assert total(samples, "sluicegate_request_duration_seconds_count", operation="files.create") == 1
    assert total(samples, "sluicegate_request_duration_seconds_sum", operation="files.create") > 0
    assert samples["sluicegate_upload_bytes_total"] == [({"provider": "local"}, 1234)]
    tokens = {lab["kind"]: v for lab, v in samples["sluicegate_tokens_total"] if lab["provider"] == "my-openai"}
    assert tokens == {"input_tokens": resp.usage.input_tokens, "output_tokens": resp.usage.output_tokens}
    assert samples["sluicegate_inflight_requests"] == [({}, 0)]
    assert samples["sluicegate_draining"] == [({}, 0)]


def test_a_restart_starts_from_zero(start_gateway, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    for workers in (1, 2):
        gw = start_gateway(local_config(), workers=workers, env=env)
        for _ in range(5):
            assert list(client(gw).files.list()) == []
        assert total(scrape(gw), "sluicegate_requests_total") == 5
        assert len(metrics_dirs(tmpdir)) == 1
        assert gw.stop() == 0
        assert metrics_dirs(tmpdir) == []
    # Killed outright, a run cannot remove its directory; the next run does not read it, and
    # removes it once the killed run's workers are gone too.
    gw = start_gateway(local_config(), workers=2, env=env)
    workers = psutil.Process(gw.proc.pid).children()
    assert list(client(gw).files.list()) == []
    (killed,) = metrics_dirs(tmpdir)
    gw.signal(signal.SIGKILL)
    gw.proc.wait(15)
    _, alive = psutil.wait_procs(workers, timeout=15)  # they end with their parent
    assert not alive and metrics_dirs(tmpdir) == [killed]
    again = start_gateway(local_config(), workers=2, env=env)
    assert len(metrics_dirs(tmpdir)) == 1 and metrics_dirs(tmpdir) != [killed]
    assert total(scrape(again), "sluicegate_requests_total") == 0
    assert list(client(again).files.list()) == []
    assert total(scrape(again), "sluicegate_requests_total") == 1
    # A second gateway starting beside a running one leaves the running one's directory alone.
    (running,) = metrics_dirs(tmpdir)
    beside = start_gateway(local_config(), env=env)
    assert running in metrics_dirs(tmpdir) and len(metrics_dirs(tmpdir)) == 2
    assert list(client(again).files.list()) == []
    assert total(scrape(again), "sluicegate_requests_total") == 2
    assert total(scrape(beside), "sluicegate_requests_total") == 0


def test_metrics_filter_left_out(start_gateway):
    cfg = local_config()
    cfg["filters"] = ["auth", "provider_route", "access_log"]
    gw = start_gateway(cfg)
    assert list(client(gw).files.list()) == []
    samples = scrape(gw)
    assert "sluicegate_requests_total" not in samples
    assert samples["sluicegate_inflight_requests"] == [({}, 0)]


def _wait_for(gw, check, seconds: float = 15):
    """Scrape until ``check(samples)`` holds (bounded); the last samples."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(gw)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_gauges_cover_all_workers_and_the_drain(start_gateway, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    cfg = local_config()
    cfg["server"] = {"drain_timeout": "20s"}
    gw = start_gateway(cfg, workers=2, env={"TMPDIR": str(tmpdir)})
    data = b"d" * 50_000
    head = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n")
    body = head + data + b"\r\n--b--\r\n"
    # One upload held open in whichever worker accepted it.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as upload:
        upload.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-none\r\n"
                       b"Content-Type: multipart/form-data; boundary=b\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:len(head) + 1000])
        _wait_for(gw, lambda s: total(s, "sluicegate_inflight_requests") == 1)
        # Every scrape sees it, whichever worker answers.
        for _ in range(10):
            assert total(scrape(gw), "sluicegate_inflight_requests") == 1
        gw.signal(signal.SIGTERM)
        # The idle worker stops at once (its live gauges go with it); the other drains.
        samples = _wait_for(gw, lambda s: total(s, "sluicegate_draining") == 1)
        assert total(samples, "sluicegate_draining") == 1
        assert total(samples, "sluicegate_inflight_requests") == 1
        upload.sendall(body[len(head) + 1000:])
        answer = b""
        while chunk := upload.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert gw.proc.wait(30) == 0
    assert metrics_dirs(tmpdir) == []


def test_a_dead_workers_inflight_requests_leave_the_gauge(start_gateway, tmp_path):
    cfg = local_config()
    cfg["server"] = {"drain_timeout": "20s"}
    gw = start_gateway(cfg, workers=2)
    workers = psutil.Process(gw.proc.pid).children()
    assert len(workers) == 2
    held: list[socket.socket] = []

    def holding(worker) -> int:
        """Uploads this worker holds: its connections from our held sockets."""
        ours = {s.getsockname()[1] for s in held}
        connections = getattr(worker, "net_connections", None) or worker.connections  # psutil < 6
        return sum(1 for c in connections("tcp") if c.raddr and c.raddr.port in ours)

    try:
        # Held uploads, a new connection each, until both workers hold some (bounded).
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            held.append(s)
            s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-none\r\n"
                      b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            _wait_for(gw, lambda smp: total(smp, "sluicegate_inflight_requests") == len(held))
            if all(holding(w) for w in workers):
                break
        counts = [holding(w) for w in workers]
        assert all(counts) and sum(counts) == len(held), counts
        assert total(scrape(gw), "sluicegate_inflight_requests") == len(held)
        # Killed, the first worker cannot lower its gauge; the parent drops it, and stops the
        # other worker, which drains its own uploads.
        workers[0].kill()
        samples = _wait_for(gw, lambda smp: total(smp, "sluicegate_draining") == 1)
        assert total(samples, "sluicegate_draining") == 1
        assert total(samples, "sluicegate_inflight_requests") == counts[1]
    finally:
        for s in held:
            s.close()
    gw.proc.wait(30)


def test_no_writable_temporary_directory_is_a_startup_failure(tmp_path):
    # TMPDIR, /tmp, /var/tmp and the working directory all unusable: a read-only root filesystem
    # without the /tmp volume. An unwritable TMPDIR alone is not enough (tempfile falls back
    # to /tmp), so this asks tempfile for the missing directory directly.
    import subprocess
    import sys

    from tests.gateway_proc import free_port, gateway_env

    code = ("import sys, tempfile; tempfile.tempdir = sys.argv[1]; from proxy.__main__ import main; "
            "sys.exit(main(sys.argv[2:]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing"), "--port", str(free_port())],
                       cwd=tmp_path, env=gateway_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("sluicegate: cannot create the metrics directory: no such file or directory: "
                           f"'{tmp_path / 'missing'}/.sluicegate-metrics-"), r.stderr
    assert "Traceback" not in r.stderr
