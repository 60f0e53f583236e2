"""Two gateway trees, alternated on one machine: gateway CPU µs per request on the hot paths.

    python bench/ab_hotpath.py /path/to/old-tree /path/to/new-tree [--rounds 4] [--seconds 3]

Each round starts, for each tree in turn, the canned upstream (``bench/upstream.py --mode
canned``, core 1) and that tree's gateway (``python -m proxy`` with ``PYTHONPATH`` = the tree,
one worker, ``taskset -c 0``, ``log_level: warning``), drives c=64 keep-alive load from core 1
(``bench/httpclient.py``) and reads the gateway's CPU time from ``/proc`` over the measured
window. Rows: an unseen file id (``GET /v1/files/file-abc``, the openai-type provider on the
canned upstream) and a non-streaming ``POST /v1/responses``. Alternating the trees, round after
round, is what makes a before/after comparison honest on a machine whose speed drifts by 15–30%
between two short runs; the means and every round are printed.

Bounded: ``rounds × trees × rows`` runs of ``--seconds`` each, loopback only, every process
stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # procs imports the tests package

import httpclient as hc  # noqa: E402
import procs  # noqa: E402
import yaml  # noqa: E402

UPSTREAM_KEY = "sk-upstream-test"
RESPONSES_BODY = b'{"model":"gpt-4o-mini","input":"hello there","store":false}'


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not become ready")


def measure(tree: Path, row: str, seconds: float, workdir: Path) -> float:
    """Gateway CPU µs per request for one row against one tree."""
    run_dir = workdir / f"{tree.name}-{row}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    canned, url = procs.start_upstream(run_dir, mode="canned", cpu=1)
    port = procs.free_port()
    config = {"store": {"url": f"sqlite:///{run_dir}/gw.db"},
              "providers": [{"name": "canned", "type": "openai", "api_base": url + "/v1", "api_key": UPSTREAM_KEY}],
              "default_provider": "canned", "log_level": "warning",
              "server": {"host": "127.0.0.1", "port": port, "workers": 1}}
    (run_dir / "gw.yaml").write_text(yaml.safe_dump(config))
    with open(run_dir / "gw.log", "wb") as log:
        gw = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "proxy", "--config",
                               str(run_dir / "gw.yaml"), "--workers", "1"], cwd=run_dir,
                              env={**os.environ, "PYTHONPATH": str(tree)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, gw)
        host = f"127.0.0.1:{port}"
        if row == "retrieve":
            req = hc.build_request("GET", "/v1/files/file-abc", host, {"Authorization": "Bearer sk-x"})
        else:
            req = hc.build_request("POST", "/v1/responses", host,
                                   {"Authorization": "Bearer sk-x", "Content-Type": "application/json"}, RESPONSES_BODY)
        marks: dict[str, float] = {}
        result = asyncio.run(hc.run_load("127.0.0.1", port, req, concurrency=64, duration=seconds,
                                         on_start=lambda: marks.__setitem__("start", _cpu_seconds(gw.pid)),
                                         on_end=lambda: marks.__setitem__("end", _cpu_seconds(gw.pid))))
        if result.errors or set(result.statuses) != {200}:
            raise RuntimeError(f"{tree} {row}: errors {result.errors}, statuses {result.statuses}")
        return (marks["end"] - marks["start"]) / result.requests * 1e6
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(30)
        except subprocess.TimeoutExpired:
            gw.kill()
        canned.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs=2, type=Path, help="two source trees (each with proxy/ and filters/)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    trees = [t.resolve() for t in args.trees]
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sluicegate-ab-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as wd:
        for row in ("retrieve", "responses"):
            for _ in range(args.rounds):
                for tree in trees:
                    us = measure(tree, row, args.seconds, Path(wd))
                    runs.setdefault((str(tree), row), []).append(us)
                    print(f"{tree}  {row:9s}  {us:7.1f} µs/request", flush=True)
    print()
    for (tree, row), values in runs.items():
        print(f"{row:9s}  {tree}: mean {statistics.mean(values):.1f} µs/request over "
              f"{len(values)} runs ({', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
