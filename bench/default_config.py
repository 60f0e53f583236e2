"""``bench/run.py --default-config``: the gateway as a new user runs it (issue 10), next to a bare
aiohttp server answering the same bytes (the floor) and the upstream loaded directly.

The gateway is ``python -m proxy --config FILE --workers 1`` with only what a user must write:
two providers (``local``, and ``canned``: type ``openai`` → the canned upstream) and
``default_provider``. So the filter chain is the default one (``access_log`` on), the log
level is the default (``info``), the store is the default SQLite file, auth is off; stdout and
stderr go to a file. The client sends ``Authorization: Bearer …`` and ``custom-llm-provider:
openai`` on every request (the header picks the one ``openai``-type provider).

Processes: the gateway, a second identical gateway with ``log_level: warning`` (access log
off: what the access log costs, in place), the floor server and the raw forwarder (bytes to
the canned upstream and back, unparsed: the floor under any proxy on this machine,
``bench/upstream.py --mode forward``) on the gateway's core; the canned upstream and the load
generator on the other core.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpclient as hc
import procs

if TYPE_CHECKING:
    from run import Bench

HOST = "127.0.0.1"
UNSEEN_ID = "file-abc"
RESPONSES_BODY = b'{"model":"gpt-4o-mini","input":"hello","store":false}'

# Issue 10's targets for the gateway with the default chain, one worker, one core.
TARGET_RPS = 10_000
TARGET_CPU_US = 100.0
TARGET_P99_MS = 10.0
TARGET_C1_ADDED_P50_MS = 0.25

# (key, label, method, path or None for the recorded local file, body, concurrency, has a direct path)
CASES = (
    ("unseen", f"GET /v1/files/{UNSEEN_ID} (unseen id), c=64", "GET", f"/v1/files/{UNSEEN_ID}",
     b"", 64, True),
    ("local", "GET /v1/files/{id} (local, recorded), c=64", "GET", None, b"", 64, False),
    ("responses", "POST /v1/responses, c=64", "POST", "/v1/responses", RESPONSES_BODY, 64, True),
    ("responses_c1", "POST /v1/responses, c=1", "POST", "/v1/responses", RESPONSES_BODY, 1, True),
)
# Column → (target name, the CPU key of the process that serves it).
COLUMNS = (("gateway", "dc-gateway", "gateway"), ("gw, log off", "dc-log-off", "gateway_log_off"),
           ("bare aiohttp", "dc-floor", "floor"), ("raw forwarder", "dc-forward", "forward"),
           ("nginx", "dc-nginx", "nginx"), ("direct", "dc-direct", "canned"))
# Columns that reach the canned upstream (only the rows that have a direct path).
PROXIED = frozenset({"dc-direct", "dc-forward", "dc-nginx"})


def user_config(canned_url: str) -> dict[str, Any]:
    """What a user writes: providers and the default one. Nothing else (filters, log_level,
    store, auth: all defaults)."""
    return {
        "providers": [
            {"name": "local", "type": "local"},
            {"name": "canned", "type": "openai", "api_base": canned_url + "/v1", "api_key": "sk-upstream-test"},
        ],
        "default_provider": "local",
    }


def record_local_file(workdir: Path, port: int, headers: dict[str, str]) -> str:
    """Upload a small file to the gateway on ``port`` naming the ``local`` provider (untimed);
    its id, for the recorded-id rows."""
    small = workdir / "small.jsonl"
    small.write_bytes(b'{"hello": "world"}\n' * 50)
    _, status, body = hc.upload_file(HOST, port, "/v1/files", str(small),
                                     headers={**headers, "x-tfy-provider-name": "local"})
    if status != 200:
        raise RuntimeError(f"local upload: HTTP {status} {body[:300]!r}")
    return str(json.loads(body)["id"])


def setup(b: "Bench") -> None:
    from run import CLIENT_KEY, UPSTREAM_KEY, _git_describe, log

    base = b.args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    b.workdir = Path(tempfile.mkdtemp(prefix="sluicegate-bench-", dir=base))
    if b.client_cpu is not None:
        os.sched_setaffinity(0, {b.client_cpu})
    log(f"workdir {b.workdir}")
    b.fake = b.calib = None
    b.canned, b.canned_url = procs.start_upstream(b.workdir, mode="canned", cpu=b.client_cpu)
    b.procs.append(b.canned)
    b.canned_port = int(b.canned_url.rsplit(":", 1)[1])
    cfg = user_config(b.canned_url)
    b.gw_config = cfg
    b.gw, b.gw_port = procs.start_gateway(b.workdir / "default", cfg, cpu=b.gw_cpu)
    b.procs.append(b.gw)
    quiet, quiet_port = procs.start_gateway(b.workdir / "log-off", {**cfg, "log_level": "warning"}, cpu=b.gw_cpu)
    b.procs.append(quiet)
    b.quiet_gw = quiet
    b.extra_cpu["gateway_log_off"] = quiet.cpu_seconds
    client = {"Authorization": f"Bearer {CLIENT_KEY}", "custom-llm-provider": "openai"}
    b.extra_targets = {"dc-gateway": (b.gw_port, client), "dc-log-off": (quiet_port, client),
                       "dc-direct": (b.canned_port, {"Authorization": f"Bearer {UPSTREAM_KEY}",
                                                     "custom-llm-provider": "openai"})}
    # A small local file recorded by each gateway (uploaded naming the provider, untimed).
    b.local_ids = {}
    for tgt in ("dc-gateway", "dc-log-off"):
        port, headers = b.extra_targets[tgt]
        b.local_ids[tgt] = record_local_file(b.workdir, port, headers)
    b.local_ids["dc-floor"] = b.local_ids["dc-gateway"]
    # The floor answers each request with the bytes the gateway answered it with.
    answers = {}
    for key, _, method, path, body, _, _ in CASES:
        path = path or f"/v1/files/{b.local_ids['dc-gateway']}"
        headers = {**client, "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        status, data = hc.request(HOST, b.gw_port, method, path, headers, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} via the gateway: HTTP {status} {data[:300]!r}")
        answers[f"{method} {path}"] = {"status": status, "content_type": "application/json",
                                       "body": base64.b64encode(data).decode()}
    answers_path = b.workdir / "floor-answers.json"
    answers_path.write_text(json.dumps(answers))
    floor, floor_url = procs.start_upstream(b.workdir, mode="floor", cpu=b.gw_cpu, answers=answers_path)
    b.procs.append(floor)
    b.extra_cpu["floor"] = floor.cpu_seconds
    b.extra_targets["dc-floor"] = (int(floor_url.rsplit(":", 1)[1]), client)
    # The floor under any proxy here: bytes copied to the canned upstream and back, unparsed.
    fwd, fwd_url = procs.start_upstream(b.workdir, mode="forward", cpu=b.gw_cpu, target=b.canned_url)
    b.procs.append(fwd)
    b.extra_cpu["forward"] = fwd.cpu_seconds
    b.extra_targets["dc-forward"] = (int(fwd_url.rsplit(":", 1)[1]), b.extra_targets["dc-direct"][1])
    # nginx proxying to the canned upstream, as in the issue's table (skipped where not installed).
    ngx = procs.start_nginx(b.workdir, b.canned_url, cpu=b.gw_cpu)
    if ngx is not None:
        b.procs.append(ngx[0])
        b.extra_cpu["nginx"] = lambda pid=ngx[0].pid: procs.tree_cpu_seconds(pid)
        b.extra_targets["dc-nginx"] = (ngx[1], b.extra_targets["dc-direct"][1])
    b.results["meta"] = {
        "mode": "default-config", "load_seconds": b.duration, "warmup_seconds": b.warmup,
        "gateway_cpu": b.gw_cpu, "client_cpu": b.client_cpu, "gateway_config": cfg,
        "loadgen": "bench/httpclient.py, python raw HTTP/1.1 keep-alive", "git": _git_describe(),
        "nginx": procs.nginx_path(), "wrk": shutil.which("wrk"),
    }


def run(b: "Bench") -> None:
    from run import _load_point, log

    b.duration = b.args.duration or 2.0
    b.warmup = 0.5
    setup(b)
    out: dict[str, Any] = {}
    for key, label, method, path, body, c, has_direct in CASES:
        log(label)
        extra = {"Content-Type": "application/json"} if body else None
        pts: dict[str, Any] = {}
        for col, tgt, cpu_key in COLUMNS:
            if (tgt in PROXIED and not has_direct) or tgt not in b.extra_targets:
                continue
            req_path = path or f"/v1/files/{b.local_ids[tgt]}"
            pt = _load_point(b, tgt, req_path, method, body, c, extra)
            if pt["errors"] or pt.get("error"):
                raise RuntimeError(f"{label} via {tgt}: {pt.get('error')} statuses {pt['statuses']}")
            pt["serving_cpu_us_per_req"] = pt.get(f"{cpu_key}_cpu_us_per_req")
            pts[col] = pt
        out[key] = pts
    b.results["default_config"] = out
    # The access log was on: the lines are in the default gateway's stdout file (written out
    # by its drain), none in the log-off gateway's.
    counts = []
    for gw in (b.gw, b.quiet_gw):
        gw.stop()
        counts.append(sum(1 for line in gw.log_path.read_bytes().splitlines() if line.startswith(b"{")))
    b.results["default_config_access_lines"] = {"default": counts[0], "log_off": counts[1]}
    print_table(b, out, *counts)


def _cell_cpu(pt: dict[str, Any] | None) -> str:
    us = (pt or {}).get("serving_cpu_us_per_req")
    return f"{us:.0f}" if us else "-"


def print_table(b: "Bench", out: dict[str, Any], access_lines: int, log_off_lines: int) -> None:
    import statistics

    m = b.results["meta"]
    print()
    print(f"sluicegate --default-config @ {m['git']}: {b.duration:g} s per point (+{b.warmup:g} s warm-up)")
    print(f"gateway: python -m proxy --config FILE --workers 1 (uvloop), config = {json.dumps(m['gateway_config'])} "
          "+ server.host/port; default filters and log level (access log on), stdout+stderr to a file")
    print(f"pinning: gateway, 'log off' gateway (log_level: warning) and the bare aiohttp.web.Server on core "
          f"{b.gw_cpu}; canned upstream + load generator on core {b.client_cpu}")
    print("client headers: Authorization: Bearer …, custom-llm-provider: openai; load generator: "
          f"{m['loadgen']} (wrk {'found' if m['wrk'] else 'not installed'}: the load generator stands in for "
          f"wrk -t1 -c64); nginx: {m['nginx'] or 'not installed (no nginx column)'}, one worker proxying to the "
          "canned upstream with keep-alive, its default access log to a file")
    print(f"rows: {UNSEEN_ID} is an id the gateway never saw (routed by the header to the openai-type provider on "
          "the canned upstream); the local file was uploaded through the gateway; responses are non-streaming "
          f"{RESPONSES_BODY.decode()}; 'bare aiohttp' answers each with the gateway's own bytes; 'raw forwarder' copies bytes to the canned upstream and back, unparsed (what any proxy here must spend); CPU µs/req is the "
          "serving process's (/proc), srv/lg/other its CPU%, the load generator's, everything else's")
    if b.other_cpu:
        print(f"other processes used {statistics.mean(b.other_cpu):.0f}% of a core on average (max "
              f"{max(b.other_cpu):.0f}%) during the measured windows"
              + ("  WARNING: a loaded machine; CPU µs/req is the figure least affected" if
                 statistics.mean(b.other_cpu) > 5 else ""))
    print()
    widths = (42, 17, 13, 13, 13, 13, 13, 13, 8)
    head = ("request", "metric") + tuple(col for col, _, _ in COLUMNS) + ("gw/bare",)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    verdicts = []
    vs_nginx: list[str] = []
    for key, label, *_ in CASES:
        pts = out[key]
        cols = [pts.get(col) for col, _, _ in COLUMNS]
        gw, floor = pts["gateway"], pts["bare aiohttp"]

        def row(lab: str, metric: str, cells: list[str], ratio: str = "") -> None:
            print("  ".join(str(x).ljust(w) for x, w in zip([lab, metric, *cells, ratio], widths)).rstrip())

        row(label, "req/s", [f"{p['rps']:,.0f}" if p else "-" for p in cols], f"{gw['rps'] / floor['rps']:.0%}")
        row("", "p50 / p99 ms", [f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}" if p else "-" for p in cols])
        row("", "CPU µs/req", [_cell_cpu(p) for p in cols],
            f"{gw['serving_cpu_us_per_req'] / floor['serving_cpu_us_per_req']:.1f}x"
            if gw.get("serving_cpu_us_per_req") and floor.get("serving_cpu_us_per_req") else "")
        row("", "CPU% srv/lg/other", [
            f"{p['cpu_percent'].get(cpu_key, 0):.0f}/{p['cpu_percent'].get('loadgen', 0):.0f}/"
            f"{p['cpu_percent'].get('other', 0):.0f}" if p else "-" for p, (_, _, cpu_key) in zip(cols, COLUMNS)])
        if pts["gateway"]["concurrency"] == 64:
            us = gw.get("serving_cpu_us_per_req") or 0
            verdicts.append((f"{label}: >= {TARGET_RPS:,} req/s", gw["rps"] >= TARGET_RPS))
            verdicts.append((f"{label}: <= {TARGET_CPU_US:g} µs CPU/req", 0 < us <= TARGET_CPU_US))
            verdicts.append((f"{label}: p99 < {TARGET_P99_MS:g} ms", gw["p99_ms"] < TARGET_P99_MS))
            ngx_us = (pts.get("nginx") or {}).get("serving_cpu_us_per_req")
            if ngx_us and us:
                vs_nginx.append(f"{label}: gateway {us:.0f} µs = {us / ngx_us:.1f}x nginx's {ngx_us:.0f} µs")
        elif pts.get("direct"):
            added = gw["p50_ms"] - pts["direct"]["p50_ms"]
            fwd = pts.get("raw forwarder")
            floor_note = (f" (the raw forwarder adds {fwd['p50_ms'] - pts['direct']['p50_ms']:.2f} ms)"
                          if fwd else "")
            verdicts.append((f"{label}: p50 added over direct {added:.2f} ms < {TARGET_C1_ADDED_P50_MS:g}{floor_note}",
                             added < TARGET_C1_ADDED_P50_MS))
    print()
    print(f"access log: {access_lines:,} JSON lines in the default gateway's stdout file (every request "
          f"of every point, warm-ups included); {log_off_lines:,} in the 'log off' gateway's")
    print("issue 10 targets (gateway column):")
    for text, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    if vs_nginx:
        # The issue's own table: nginx 1.22 at 38 µs (unseen id) and 32 µs (responses) per
        # request where the target is 100 µs, i.e. 2.6x and 3.1x nginx on that machine.
        print(f"CPU per request against nginx in this run (issue 10's table: 100 µs = {TARGET_CPU_US / 38:.1f}x "
              f"its nginx on GET, {TARGET_CPU_US / 32:.1f}x on POST /v1/responses):")
        for text in vs_nginx:
            print(f"  {text}")
    b.results["default_config_targets"] = [{"check": t, "ok": ok} for t, ok in verdicts]
