"""Benchmark processes: the gateway and the upstreams, each pinned to a core, plus the
/proc readings the benchmark needs (CPU time, RSS, peak RSS with a resettable high-water mark)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.gateway_proc import proc_memory, reset_peak_rss

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(cpu: int | None) -> list[str]:
    """``taskset -c N`` (the whole process and every thread it starts runs on core N)."""
    if cpu is None:
        return []
    if shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    raise RuntimeError("taskset not found (util-linux); run with --no-pin or install it")


def system_cpu_seconds() -> tuple[float, float]:
    """(user+nice+system CPU seconds of every process on the machine, steal seconds), all cores,
    from /proc/stat. irq/softirq time (our own loopback traffic) is left out."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return (f[0] + f[1] + f[2]) / CLK_TCK, f[7] / CLK_TCK


_SPIN = """
import time
n = 0
end = time.perf_counter() + {seconds}
while time.perf_counter() < end:
    for _ in range(10000):
        n += 1
print(n / {seconds} / 1e6)
"""


def core_speed(cpu: int | None, seconds: float = 0.25) -> float:
    """Mops/s of a pure-Python loop pinned to ``cpu``: on a VM the same core can be twice as
    slow at one time as at another (other guests on the host), which no CPU% shows."""
    out = subprocess.run(pin_prefix(cpu) + [sys.executable, "-c", _SPIN.format(seconds=seconds)],
                         capture_output=True, text=True, timeout=30)
    try:
        return float(out.stdout.strip())
    except ValueError:
        return float("nan")


def user_cpu_seconds(uid: int) -> float:
    """CPU seconds of every live process of ``uid`` (e.g. a PostgreSQL cluster's postmaster and
    backends, which we did not start and cannot pin). A process that exits between two readings
    takes its time with it, so only compare readings over a window where the set is stable."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.stat().st_uid != uid:
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Proc:
    """A child process with /proc helpers."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, log_path: Path, env: dict[str, str] | None = None,
                 stdout_pipe: bool = False):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log, env=full_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, prefix: bytes, timeout: float = 30) -> bytes:
        """Wait for a stdout line starting with ``prefix`` (the READY line of bench/upstream.py)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(prefix):
                return line
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    # -- /proc ---------------------------------------------------------------------------
    def cpu_seconds(self) -> float:
        """user + system CPU time of the whole process (all threads)."""
        return _stat_cpu_seconds(self.pid)

    def rss(self) -> int:
        return proc_memory(self.pid)["VmRSS"]

    def peak_rss(self) -> int:
        return proc_memory(self.pid)["VmHWM"]

    def reset_peak_rss(self) -> None:
        reset_peak_rss(self.pid)


def start_upstream(workdir: Path, *, mode: str, cpu: int | None, stream_delay: float = 0.0,
                   data_dir: Path | None = None, answers: Path | None = None,
                   target: str | None = None) -> tuple[Proc, str]:
    port = free_port()
    args = pin_prefix(cpu) + [sys.executable, str(ROOT / "bench" / "upstream.py"), "--mode", mode,
                              "--port", str(port)]
    if mode == "fake":
        args += ["--data-dir", str(data_dir), "--stream-delay", str(stream_delay)]
    if mode == "floor":
        args += ["--answers", str(answers)]
    if mode == "forward":
        args += ["--target", str(target)]
    p = Proc(f"upstream-{mode}", args, cwd=workdir, log_path=workdir / f"upstream-{mode}.log", stdout_pipe=True)
    p.wait_line(b"READY")
    return p, f"http://127.0.0.1:{port}"


def start_gateway(workdir: Path, config: dict[str, Any], *, cpu: int | None) -> tuple[Proc, int]:
    port = free_port()
    gw_dir = workdir / "gateway"
    gw_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(config)
    cfg["server"] = {**cfg.get("server", {}), "host": "127.0.0.1", "port": port, "workers": 1}
    cfg_path = gw_dir / "sluicegate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = pin_prefix(cpu) + [sys.executable, "-m", "proxy", "--config", str(cfg_path), "--workers", "1"]
    p = Proc("gateway", args, cwd=gw_dir, log_path=gw_dir / "gateway.log")
    wait_ready(p, port)
    return p, port


def wait_ready(p: Proc, port: int, timeout: float = 30.0) -> None:
    """Until the gateway ``p`` answers ``/readyz`` on ``port`` with 200; stopped and an error if
    it exits or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {p.proc.returncode}:\n{p.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    p.stop()
    raise RuntimeError(f"gateway did not become ready:\n{p.log()}")


def _stat_cpu_seconds(pid: int) -> float:
    """user + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU time of ``pid`` and its descendants alive now (nginx: master + worker)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += _stat_cpu_seconds(p)
            todo.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def nginx_path() -> str | None:
    """The nginx binary (Debian installs it in /usr/sbin, outside a non-root PATH), or None."""
    return shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


# nginx as a reverse proxy to ``target`` (the issue-10 reference): one worker, keep-alive to
# the upstream, and its default access log (a line per request written to a file as it ends).
_NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream up {{ server {target}; keepalive 256; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(workdir: Path, target: str, *, cpu: int | None) -> tuple[Proc, int] | None:
    """nginx proxying to ``target`` (``http://host:port``) on a free port, or None without nginx."""
    exe = nginx_path()
    if exe is None:
        return None
    ngx_dir = workdir / "nginx"
    ngx_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = ngx_dir / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=ngx_dir, target=target.split("://", 1)[1], port=port))
    p = Proc("nginx", pin_prefix(cpu) + [exe, "-p", str(ngx_dir), "-c", str(conf)], cwd=ngx_dir,
             log_path=ngx_dir / "stderr.log")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {p.proc.returncode}:\n{p.log()}\n"
                               f"{(ngx_dir / 'error.log').read_text(errors='replace') if (ngx_dir / 'error.log').exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.stop()
    raise RuntimeError("nginx did not start listening")
