"""Issue 10's ``--workers 2`` criterion: the default-config gateway with one worker and with two,
same load, same run.

    python bench/workers.py [--duration 5] [--rounds 2]

Rows: ``GET /v1/files/{id}`` of a ``local`` file the gateway recorded (no upstream: the only other
process is the load generator) and ``GET /v1/files/file-abc`` (an id it never saw, the
openai-type provider on the canned upstream, ``bench/upstream.py --mode canned``), c=64 keep-alive
connections from ``bench/httpclient.py``. The gateway is ``python -m proxy --config FILE
--workers N`` with the configuration a user writes (bench/default_config.py ``user_config``: the
default filters and log level, access log on, to a file).

Pinning: one worker runs on core 0 with the load generator (and the canned upstream) on core 1,
as issue 10 measures it; two workers run on cores 0 and 1 — and on a two-core machine the load
generator and the upstream must then share those same cores, so the two workers cannot have two
whole cores: the ratio measured here is a floor under what two workers do on two free cores.
Printed with it: each configuration's CPU µs per request (all of the gateway's processes), and
how the requests were shared between the two workers (the ``pid`` field of their access-log
lines; the workers accept from one listening socket they share): equal CPU per request and an
even split are what let two free cores give 2x.

Bounded (rounds x configurations x rows runs of ``--duration`` s), loopback only, every process
stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # procs imports the tests package

import default_config as dc  # noqa: E402
import httpclient as hc  # noqa: E402
import procs  # noqa: E402
import yaml  # noqa: E402

HOST = "127.0.0.1"
CLIENT = {"Authorization": "Bearer sk-bench", "custom-llm-provider": "openai"}


def _tree_cpu_seconds(pid: int) -> float:
    """user + system CPU of ``pid`` and of its live children (the workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / procs.CLK_TCK
    return total


def _start(workdir: Path, cfg: dict, workers: int, cpus: str) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {**cfg, "server": {"host": HOST, "port": port, "workers": workers}}
    path = workdir / "sluicegate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = ["taskset", "-c", cpus, sys.executable, "-m", "proxy", "--config", str(path), "--workers", str(workers)]
    p = procs.Proc(f"gateway-{workers}w", args, cwd=workdir, log_path=workdir / "gateway.log")
    procs.wait_ready(p, port)
    return p, port


def _point(gw: procs.Proc, port: int, path: str, duration: float) -> dict:
    req = hc.build_request("GET", path, HOST, CLIENT)
    cpu: list[float] = []
    res = asyncio.run(hc.run_load(HOST, port, req, concurrency=64, duration=duration, warmup=1.0,
                                  on_start=lambda: cpu.append(_tree_cpu_seconds(gw.pid)),
                                  on_end=lambda: cpu.append(_tree_cpu_seconds(gw.pid))))
    n = len(res.latencies)
    bad = sum(v for k, v in res.statuses.items() if k != 200)
    if bad or not n:
        raise RuntimeError(f"{path}: statuses {dict(res.statuses)}")
    lat = sorted(res.latencies)
    return {"rps": n / duration, "p99_ms": lat[int(n * 0.99)] * 1e3, "cpu_us": (cpu[1] - cpu[0]) / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        sys.exit("needs 2 cores and taskset")
    work = Path(tempfile.mkdtemp(prefix="sluicegate-workers-"))
    os.sched_setaffinity(0, {1})
    canned, canned_url = procs.start_upstream(work, mode="canned", cpu=1)
    results: dict[tuple[int, str], list[dict]] = collections.defaultdict(list)
    shares: dict[str, list[dict[int, int]]] = collections.defaultdict(list)
    try:
        for _ in range(args.rounds):
            for workers, cpus in ((1, "0"), (2, "0,1")):
                if workers == 2:
                    os.sched_setaffinity(0, {0, 1})  # the load generator shares both cores then
                else:
                    os.sched_setaffinity(0, {1})
                gw, port = _start(work / f"gw{workers}-{time.monotonic_ns()}", dc.user_config(canned_url), workers, cpus)
                try:
                    fid = dc.record_local_file(work, port, CLIENT)
                    for row, path in (("local", f"/v1/files/{fid}"), ("unseen", f"/v1/files/{dc.UNSEEN_ID}")):
                        results[(workers, row)].append(_point(gw, port, path, args.duration))
                finally:
                    gw.stop()
                if workers == 2:
                    pids: collections.Counter[int] = collections.Counter()
                    for line in gw.log_path.read_bytes().splitlines():
                        if line.startswith(b'{"time"'):
                            rec = json.loads(line)
                            if rec.get("op") == "files.retrieve":
                                pids[rec["pid"]] += 1
                    shares["files.retrieve"].append(dict(pids))
    finally:
        canned.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsluicegate --workers 1 vs 2, default config, c=64, {args.duration:g} s per point, "
          f"{args.rounds} round(s) (figures: mean over rounds)")
    print("1 worker: core 0, load generator + canned upstream on core 1; 2 workers: cores 0-1, the load "
          "generator and upstream sharing them (2 cores in all on this machine)\n")
    print(f"{'row':<8} {'workers':<8} {'req/s':>9} {'p99 ms':>8} {'CPU µs/req':>11}   ratio")
    for row in ("local", "unseen"):
        base = None
        for workers in (1, 2):
            pts = results[(workers, row)]
            rps = sum(p["rps"] for p in pts) / len(pts)
            p99 = sum(p["p99_ms"] for p in pts) / len(pts)
            us = sum(p["cpu_us"] for p in pts) / len(pts)
            base = base or rps
            print(f"{row:<8} {workers:<8} {rps:>9,.0f} {p99:>8.2f} {us:>11.0f}   {rps / base:.2f}x")
    for split in shares["files.retrieve"]:
        total = sum(split.values()) or 1
        print("requests per worker (2 workers, access log):",
              ", ".join(f"pid {pid}: {n / total:.0%}" for pid, n in sorted(split.items())))


if __name__ == "__main__":
    main()
