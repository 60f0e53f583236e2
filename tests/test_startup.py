"""Start-up through real processes: failures are one line and an exit, one gateway per port,
the command line and its environment variables, and where the data goes."""
from __future__ import annotations

import collections
import configparser
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import client
from tests.gateway_proc import CLI_ENV_VARS, free_port, gateway_env

# Generous: a start-up failure must end the process at once; only the interpreter's start-up
# (imports, ~1 s on a loaded machine) counts against this.
EXIT_WITHIN = 20


def sluicegate(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m proxy ARGS`` run to its end (a process still running after EXIT_WITHIN
    seconds is killed and fails the test)."""
    cwd.mkdir(parents=True, exist_ok=True)
    # Its own session, so that a gateway that does not exit is killed with all its workers.
    proc = subprocess.Popen([sys.executable, "-m", "proxy", *args], cwd=cwd, env=gateway_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"sluicegate {' '.join(args)} still running after {EXIT_WITHIN}s; stderr:\n{stderr}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def failure_lines(stderr: str) -> list[str]:
    """The lines a start-up failure prints (log lines have a timestamp and a level first)."""
    return [line for line in stderr.splitlines() if line.startswith("sluicegate:")]


def no_process_mentions(marker: str) -> bool:
    """No process left (an orphaned worker, say) whose command line contains ``marker``."""
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or ()):
            return False
    return True


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# --------------------------------------------------------------------------- start-up failures


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_port_is_one_line_and_an_exit(tmp_path, busy_port, workers):
    t0 = time.monotonic()
    r = sluicegate(["--port", str(busy_port), "--workers", str(workers)], tmp_path)
    assert r.returncode == 1
    assert r.stderr == f"sluicegate: cannot listen on 127.0.0.1:{busy_port}: address already in use\n"
    assert time.monotonic() - t0 < EXIT_WITHIN
    # nothing was opened before the bind failed
    assert not (tmp_path / "sluicegate-data").exists()


def test_address_not_on_this_host_is_one_line_and_an_exit(tmp_path):
    port = free_port()
    r = sluicegate(["--host", "192.0.2.1", "--port", str(port)], tmp_path)  # TEST-NET-1, never local
    assert (r.returncode, r.stderr) == (1, f"sluicegate: cannot listen on 192.0.2.1:{port}: cannot assign requested address\n")


def test_second_gateway_on_the_same_port_fails(start_gateway, tmp_path):
    first = start_gateway(workers=2)
    f = client(first).files.create(file=("a.txt", b"first gateway"), purpose="assistants")
    r = sluicegate(["--port", str(first.port), "--workers", "2"], tmp_path / "elsewhere")
    assert r.returncode == 1
    assert failure_lines(r.stderr) == [f"sluicegate: cannot listen on 127.0.0.1:{first.port}: address already in use"]
    assert "Traceback" not in r.stderr
    # every connection still reaches the first gateway and its store
    for _ in range(12):
        with urllib.request.urlopen(f"{first.base_url}/files/{f.id}", timeout=10) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_store_that_cannot_open_is_one_line_and_an_exit(tmp_path, workers):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    cfg = tmp_path / "store.yaml"
    url = f"sqlite:///{blocker}/sub/gw.db"
    cfg.write_text(yaml.safe_dump({"store": {"url": url}}))
    r = sluicegate(["--config", str(cfg), "--port", str(free_port()), "--workers", str(workers)], tmp_path / "cwd")
    assert r.returncode == 1
    assert failure_lines(r.stderr) == [f"sluicegate: cannot open store {url}: not a directory: '{blocker}/sub'"]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_provider_that_cannot_start_closes_the_store_and_exits(tmp_path, workers):
    # The store opens first (its aiosqlite thread used to keep the failed process alive).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the provider's directory should be")
    cfg = tmp_path / f"provider-{workers}.yaml"
    cfg.write_text(yaml.safe_dump({"providers": [{"name": "disk", "type": "local", "path": str(blocker / "files")}]}))
    r = sluicegate(["--config", str(cfg), "--port", str(free_port()), "--workers", str(workers)], tmp_path / "cwd")
    assert r.returncode == 1
    assert failure_lines(r.stderr) == [
        f"sluicegate: cannot start provider disk (type local): not a directory: '{blocker}/files'"]
    assert "Traceback" not in r.stderr
    assert (tmp_path / "cwd" / "sluicegate-data" / "sluicegate.db").exists()  # it did get that far
    assert no_process_mentions(str(cfg))  # no worker left behind


def test_a_worker_that_dies_stops_the_gateway(start_gateway):
    gw = start_gateway(workers=2)
    workers = psutil.Process(gw.proc.pid).children()
    assert len(workers) == 2
    workers[0].kill()
    assert gw.proc.wait(EXIT_WITHIN) == 1
    gone, alive = psutil.wait_procs(workers, timeout=EXIT_WITHIN)
    assert not alive


def test_workers_share_the_load(start_gateway):
    gw = start_gateway(workers=2)
    workers = {str(p.pid) for p in psutil.Process(gw.proc.pid).children()}

    def list_files(_: int) -> int:
        with urllib.request.urlopen(gw.base_url + "/files", timeout=10) as resp:  # a new connection each
            return resp.status

    # /readyz answered means one worker is ready; the other may still be starting, and until
    # it is, the first accepts everything. Rounds of new connections until both have served
    # (bounded): the one socket is shared, whichever worker is free accepts.
    sent = 0
    served: collections.Counter = collections.Counter()
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(8) as pool:
        while set(served) != workers and time.monotonic() < deadline:
            assert set(pool.map(list_files, range(100))) == {200}
            sent += 100
            until = time.monotonic() + 10
            while time.monotonic() < until:  # the access log lines of this round are written
                served = collections.Counter(str(line["pid"]) for line in gw.access_log())
                if sum(served.values()) == sent:
                    break
                time.sleep(0.05)
    assert sum(served.values()) == sent
    assert set(served) == workers, served  # both workers accepted connections on the one socket


# --------------------------------------------------------------------------- command line


def test_log_level_is_checked_like_the_config_file(tmp_path):
    port = str(free_port())
    r = sluicegate(["--log-level", "verbose", "--port", port], tmp_path)
    assert r.returncode == 2
    assert "argument --log-level: must be one of debug, info, warning, error, critical" in r.stderr
    r = sluicegate(["--port", port], tmp_path, env={"SLUICEGATE_LOG_LEVEL": "verbose"})
    assert (r.returncode, r.stderr) == (
        2, "sluicegate: SLUICEGATE_LOG_LEVEL: must be one of debug, info, warning, error, critical\n")


@pytest.mark.parametrize("name, value, message", [
    ("SLUICEGATE_PORT", "http", "SLUICEGATE_PORT: must be an integer, not 'http'"),
    ("SLUICEGATE_PORT", "70000", "SLUICEGATE_PORT: must be between 1 and 65535"),
    ("SLUICEGATE_WORKERS", "0", "SLUICEGATE_WORKERS: must be at least 1"),
])
def test_invalid_environment_value_is_exit_2(tmp_path, name, value, message):
    r = sluicegate([], tmp_path, env={name: value})
    assert (r.returncode, r.stderr) == (2, f"sluicegate: {message}\n")


def test_version_is_the_package_version(tmp_path):
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    r = sluicegate(["--version"], tmp_path)
    assert (r.returncode, r.stdout) == (0, f"sluicegate {setup['metadata']['version']}\n")


def test_help_names_every_option_default_and_env_var(tmp_path):
    from proxy.__main__ import OPTIONS

    assert {option.env for option in OPTIONS} == set(CLI_ENV_VARS)
    r = sluicegate(["--help"], tmp_path)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps lines
    for flag, default, env in [("--config", "none, built-in defaults", "SLUICEGATE_CONFIG"),
                               ("--host", "127.0.0.1", "SLUICEGATE_HOST"), ("--port", "8080", "SLUICEGATE_PORT"),
                               ("--workers", "1", "SLUICEGATE_WORKERS"), ("--log-level", "info", "SLUICEGATE_LOG_LEVEL"),
                               ("--data-dir", "./sluicegate-data", "SLUICEGATE_DATA_DIR")]:
        assert re.search(rf"{flag} \S+ [^(]*\(default: {re.escape(default)}; env: {env}\)", text), (flag, text)


def test_flag_beats_env_beats_config_file(tmp_path):
    from proxy.__main__ import _overrides, _parser

    env = {"SLUICEGATE_PORT": "9001", "SLUICEGATE_HOST": "::1", "SLUICEGATE_DATA_DIR": "/srv/d"}
    assert _overrides(_parser().parse_args(["--port", "9002"]), env) == {
        "--port": 9002, "--host": "::1", "--data-dir": "/srv/d"}
    assert _overrides(_parser().parse_args(["serve", "--workers", "3"]), {"SLUICEGATE_WORKERS": ""}) == {"--workers": 3}


def test_environment_port_beats_the_config_file(tmp_path):
    """The env var reaches the listener (the config file says another port)."""
    port, file_port = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"server": {"port": file_port}}))
    proc = subprocess.Popen([sys.executable, "-m", "proxy"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env=gateway_env({"SLUICEGATE_CONFIG": str(cfg), "SLUICEGATE_PORT": str(port)}))
    try:
        deadline = time.monotonic() + EXIT_WITHIN
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "gateway did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WITHIN) == 0
        proc.stderr.close()


# --------------------------------------------------------------------------- where data goes


def test_data_dir_from_the_environment_holds_store_and_files(start_gateway, tmp_path):
    data = tmp_path / "data-elsewhere"
    gw = start_gateway(env={"SLUICEGATE_DATA_DIR": str(data)})
    f = client(gw).files.create(file=("a.txt", b"where do I live"), purpose="assistants")
    assert (data / "files" / f.id).read_bytes() == b"where do I live"
    assert (data / "sluicegate.db").exists()
    assert not (gw.workdir / "sluicegate-data").exists()
    log = gw.log()
    assert f"data directory {data}; store sqlite:///{data}/sluicegate.db" in log
    assert f"provider local (type local) keeps files in {data}/files" in log


def test_default_data_dir_is_logged_as_an_absolute_path(start_gateway):
    gw = start_gateway()
    data = gw.workdir.resolve() / "sluicegate-data"
    assert f"data directory {data}; store sqlite:///{data}/sluicegate.db" in gw.log()



async def test_store_waits_for_a_database_another_worker_is_setting_up(tmp_path):
    """Workers start at once on a new SQLite file: while one holds the lock (switching to WAL,
    creating the schema), the others must wait, not fail with 'database is locked' (which,
    in one worker, now stops the whole gateway)."""
    import asyncio
    import sqlite3

    from proxy.store.sqlite import SQLiteStore

    path = tmp_path / "gw.db"
    other_worker = sqlite3.connect(path, isolation_level=None)
    other_worker.execute("CREATE TABLE warm_up (x INTEGER)")
    # Writing, as a worker creating the schema does: a reader's switch to WAL then gets
    # "locked" at once, without SQLite's busy handler (that wait could deadlock).
    other_worker.execute("BEGIN IMMEDIATE")
    other_worker.execute("INSERT INTO warm_up VALUES (1)")
    asyncio.get_running_loop().call_later(0.5, other_worker.execute, "COMMIT")
    store = SQLiteStore(str(path))
    t0 = time.monotonic()
    await store.open()
    try:
        assert time.monotonic() - t0 >= 0.4  # it waited for the lock
        assert (await (await store.db.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"
    finally:
        await store.close()
        other_worker.close()
