"""Run sluicegate as a real server process for integration tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import orjson
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The command line's environment variables (proxy/__main__.py OPTIONS; tests/test_startup.py
# checks the two lists agree).
CLI_ENV_VARS = ("SLUICEGATE_CONFIG", "SLUICEGATE_HOST", "SLUICEGATE_PORT", "SLUICEGATE_WORKERS",
                "SLUICEGATE_LOG_LEVEL", "SLUICEGATE_DATA_DIR")


# The egress proxy variables (either case): the fakes are on loopback, and the gateway honours
# these, so a test's gateway sees only those the test sets.
PROXY_ENV_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a gateway process: this worktree's code first on the path, and none
    of the command line's variables (SLUICEGATE_PORT, …) or egress proxy variables from the
    outer environment, only those in ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV_VARS and k.lower() not in PROXY_ENV_VARS}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def proc_memory(pid: int) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident set size of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak_rss(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class GatewayProcess:
    """``python -m proxy`` in its own working directory, with a YAML config (or none)."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
                 workers: int = 1) -> None:
        self.workdir = Path(workdir)
        self.config = config
        self.env = env or {}
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> "GatewayProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "proxy", "--port", str(self.port)]
        if self.config is not None:
            cfg_path = self.workdir / "sluicegate.yaml"
            cfg_path.write_text(yaml.safe_dump(self.config))
            args += ["--config", str(cfg_path)]
        if self.workers != 1:
            args += ["--workers", str(self.workers)]
        env = gateway_env(self.env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log(self, until: Callable[[list[dict[str, Any]]], bool] | None = None,
                   timeout: float = 15) -> list[dict[str, Any]]:
        """The access log's lines (JSON objects, one per exchange), in order.

        A running gateway writes its lines in batches (within ~100 ms, proxy/logs.py): with
        ``until``, wait (up to ``timeout`` s) until the lines satisfy it, and fail if they never do.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [orjson.loads(line) for line in self.log().splitlines() if line.startswith("{")]
            if until is None or until(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"the access log never showed what the test waits for: {lines[-20:]}")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    # -- memory --------------------------------------------------------------------------
    def rss(self) -> int:
        assert self.proc is not None
        return proc_memory(self.proc.pid)["VmRSS"]

    def peak_rss(self) -> int:
        assert self.proc is not None
        return proc_memory(self.proc.pid)["VmHWM"]

    def reset_peak_rss(self) -> None:
        assert self.proc is not None
        reset_peak_rss(self.proc.pid)

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
