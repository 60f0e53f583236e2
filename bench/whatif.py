#!/usr/bin/env python3
"""What would a change buy? Gateways with experimental runtime patches (bench/whatif/
sitecustomize.py), measured side by side against the canned upstream.

    python bench/whatif.py                                   # base vs the default variants
    python bench/whatif.py --variants "base;freeze;rawclient;freeze,gcthreshold,rawclient"

Each variant is its own gateway process (pinned like run.py's, started with
``BENCH_PATCHES=<variant>``); every variant also records its GC pauses. For files.retrieve and
responses.create (non-streaming) at c=1 and c=64 it prints req/s, p50/p99, the gateway's CPU
µs per request and its longest GC pause. The patches are experiments that monkeypatch gateway
internals, not fixes; see bench/whatif/sitecustomize.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repository: tests.gateway_proc, tests.fakes

import httpclient as hc  # noqa: E402
import procs  # noqa: E402
import run as R  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="base;freeze,gcthreshold;rawclient;freeze,gcthreshold,rawclient",
                   help="';'-separated variants, each a ','-separated set of patches ('base' = none)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--reps", type=int, default=2, help="rounds over all variants (medians reported)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.wait_quiet:
        R.wait_quiet(a.wait_quiet)
    ns = argparse.Namespace(quick=True, size_mib=16, duration=a.duration, reps=1, ttfe_runs=1,
                            gateway_log_level="warning", canned=True, profile=None, gateway_cpu=0, client_cpu=1,
                            no_pin=False, workdir=None, keep=False, only="", json=None, noisy_retries=2,
                            wait_quiet=0)
    b = R.Bench(ns)
    b.setup()
    b.warmup = 0.5
    gws: dict[str, tuple[procs.Proc, int, Path]] = {}
    saved_env = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_PATCHES", "BENCH_GCSTATS")}
    try:
        for v in a.variants.split(";"):
            patches = "gcstats" + ("" if v == "base" else "," + v)
            wd = b.workdir / f"gw-{v.replace(',', '+')}"
            wd.mkdir()
            os.environ["PYTHONPATH"] = str(HERE / "whatif") + os.pathsep + os.environ.get("PYTHONPATH", "")
            os.environ["BENCH_PATCHES"] = patches
            os.environ["BENCH_GCSTATS"] = str(wd / "gcstats.json")
            cfg = json.loads(json.dumps(b.gw_config))
            cfg["store"] = {"url": f"sqlite:///{wd / 'db.sqlite'}"}
            cfg["providers"][0]["path"] = str(wd / "files")
            gw, port = procs.start_gateway(wd, cfg, cpu=b.gw_cpu)
            gws[v] = (gw, port, wd)
            for k, val in saved_env.items():
                if val is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = val
        time.sleep(3)  # let the 'freeze' timers fire before any load
        small = b.workdir / "small.jsonl"
        small.write_bytes(b'{"hello": "world"}\n' * 50)
        reqs: dict[str, dict[str, bytes]] = {}
        for v, (gw, port, _) in gws.items():
            canned = {"x-tfy-provider-name": "canned", "Authorization": "Bearer sk-bench-client"}
            _, st, body = hc.upload_file(R.HOST, port, "/v1/files", str(small), headers=canned)
            fid = json.loads(body)["id"]
            st1, b1 = hc.request(R.HOST, port, "GET", f"/v1/files/{fid}", canned)
            st2, b2 = hc.request(R.HOST, port, "POST", "/v1/responses", {**canned, "Content-Type": "application/json"},
                                 R.RESPONSES_BODY)
            if st1 != 200 or json.loads(b1)["id"] != fid or st2 != 200 or not json.loads(b2)["id"].startswith("resp_"):
                raise RuntimeError(f"variant {v} answers wrongly: {st1} {b1[:200]!r} {st2} {b2[:200]!r}")
            host = f"{R.HOST}:{port}"
            reqs[v] = {
                "files.retrieve": hc.build_request("GET", f"/v1/files/{fid}", host, canned),
                "responses.create": hc.build_request("POST", "/v1/responses", host,
                                                     {**canned, "Content-Type": "application/json"},
                                                     R.RESPONSES_BODY),
            }
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for _ in range(a.reps):
            for case in ("files.retrieve", "responses.create"):
                for c in (1, 64):
                    for v, (gw, port, _) in gws.items():
                        snaps: dict[str, float] = {}
                        r = R.run_async(hc.run_load(
                            R.HOST, port, reqs[v][case], concurrency=c, duration=a.duration, warmup=b.warmup,
                            on_start=lambda gw=gw: snaps.update(a=gw.cpu_seconds(), sa=procs.system_cpu_seconds()[0],
                                                                ta=time.perf_counter()),
                            on_end=lambda gw=gw: snaps.update(b=gw.cpu_seconds(), sb=procs.system_cpu_seconds()[0],
                                                              tb=time.perf_counter())))
                        wall = snaps["tb"] - snaps["ta"]
                        results.setdefault((case, c, v), []).append({
                            "rps": r.rps, "p50_ms": r.percentile(50) * 1e3, "p99_ms": r.percentile(99) * 1e3,
                            "gw_us_per_req": (snaps["b"] - snaps["a"]) / max(1, r.requests) * 1e6,
                            "machine_cpu_pct": 100 * (snaps["sb"] - snaps["sa"]) / wall, "errors": r.errors})
    finally:
        for gw, _, _ in gws.values():
            gw.stop()
    gcstats = {}
    for v, (_, _, wd) in gws.items():
        try:
            gcstats[v] = json.loads((wd / "gcstats.json").read_text())
        except (OSError, ValueError):
            gcstats[v] = {}
    b.teardown()
    print(f"\nwhat-if: gateway variants against the canned upstream, medians of {a.reps} x {a.duration:g} s "
          f"(gateway on core {b.gw_cpu}, load generator + upstream on core {b.client_cpu})\n")
    print(f"{'case':18s} {'c':>3s}  {'variant':34s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'gw µs/req':>10s}")
    base_us: dict[tuple[str, int], float] = {}
    for (case, c, v), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        if v == "base":
            base_us[(case, c)] = med["gw_us_per_req"]
        rel = base_us.get((case, c))
        rel_s = f"  ({med['gw_us_per_req'] / rel - 1:+.0%})" if rel and v != "base" else ""
        print(f"{case:18s} {c:3d}  {v:34s} {med['rps']:8,.0f} {med['p50_ms']:8.2f} {med['p99_ms']:8.2f} "
              f"{med['gw_us_per_req']:10.0f}{rel_s}" + (f"  errors {med['errors']:.0f}" if med["errors"] else ""))
    print("\nGC pauses over the whole run (gen2 = full collections):")
    for v, st in gcstats.items():
        parts = [f"{g}: {s['n']} x, max {s['max_ms']:.1f} ms, total {s['total_ms']:.0f} ms" for g, s in st.items()]
        print(f"  {v:34s} " + "; ".join(parts))
    if a.json:
        Path(a.json).write_text(json.dumps({"results": {f"{k[0]} c={k[1]} {k[2]}": v for k, v in results.items()},
                                            "gc": gcstats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
