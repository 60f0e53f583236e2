"""Instructions per request: the default-config gateway's user-space work, counted by callgrind.

On a shared VM the CPU time per request drifts by up to 2x within minutes (the host, frequency,
other tenants), so two builds' µs/request can only be compared alternating, many times over.
An instruction count does not drift: the gateway runs under ``valgrind --tool=callgrind``
(~50x slower, so it is always the bottleneck, as at c=64), the counters are zeroed when the
measured window starts and dumped when it ends, and the total over the window divided by the
requests answered in it is reproducible to ~0.5% run to run. It counts user space only (the
Python interpreter, uvloop, orjson, aiohttp's C parts, libc), not the kernel's side of the
sends and receives, which the syscall count covers (4 per proxied request: read and write on
each side); use it to compare builds, and ``bench/run.py --default-config`` for what a user
sees in req/s and µs.

    python bench/instructions.py                           # unseen, local, responses (~4 min)
    python bench/instructions.py --cases responses --floor # + a bare aiohttp.web.Server answering the same bytes
    python bench/instructions.py --tree ../old-checkout    # the gateway of another checkout, same harness
    python bench/instructions.py --cases responses --keep cg  # + callgrind's dumps in cg/ (callgrind_annotate cg/gateway.callgrind.*)

The gateway is ``python -m proxy --config FILE --workers 1`` with bench/default_config.py's
user config (default filters, access log on, default log level and idle_poll), the canned
upstream and the load generator on the other core. Needs ``valgrind`` (Debian: ``apt-get
install valgrind``); not part of the test suite.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # procs imports the tests package

import default_config as dc  # noqa: E402
import httpclient as hc  # noqa: E402
import procs  # noqa: E402

HOST = "127.0.0.1"
CLIENT = {"Authorization": "Bearer sk-bench-client", "custom-llm-provider": "openai"}
CASES = ("unseen", "local", "responses")
WARMUP_S = 2.0


def _under_callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


def _totals(out: Path) -> int:
    """The instruction total of the last dump callgrind wrote for ``out``."""
    dumps = sorted(glob.glob(f"{out}*"), key=os.path.getmtime)
    for line in Path(dumps[-1]).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def _request(case: str, local_id: str | None) -> bytes:
    if case == "unseen":
        return hc.build_request("GET", f"/v1/files/{dc.UNSEEN_ID}", HOST, CLIENT)
    if case == "local":
        return hc.build_request("GET", f"/v1/files/{local_id}", HOST, CLIENT)
    return hc.build_request("POST", "/v1/responses", HOST, {**CLIENT, "Content-Type": "application/json"},
                            dc.RESPONSES_BODY)


def _count(pid: int, port: int, req: bytes, seconds: float, out: Path) -> tuple[int, int]:
    """(requests answered, instructions) over one measured window at c=64."""
    asyncio.run(hc.run_load(HOST, port, req, concurrency=64, duration=WARMUP_S))

    def zero() -> None:
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)

    def dump() -> None:
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)

    res = asyncio.run(hc.run_load(HOST, port, req, concurrency=64, duration=seconds, on_start=zero, on_end=dump))
    if set(res.statuses) != {200} or res.errors:
        raise RuntimeError(f"not all answers were 200: {res.statuses}, errors {res.errors} ({res.first_error})")
    time.sleep(0.5)
    return res.requests, _totals(out)


def _gateway(tree: Path, workdir: Path, canned_url: str, gw_cpu: int, out: Path) -> tuple[procs.Proc, int]:
    cfg = dc.user_config(canned_url)
    port = procs.free_port()
    gw_dir = workdir / "gateway"
    gw_dir.mkdir(parents=True, exist_ok=True)
    cfg["server"] = {"host": HOST, "port": port, "workers": 1}
    (gw_dir / "sluicegate.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = (procs.pin_prefix(gw_cpu) + _under_callgrind(out)
            + [sys.executable, "-m", "proxy", "--config", str(gw_dir / "sluicegate.yaml"), "--workers", "1"])
    p = procs.Proc("gateway", args, cwd=gw_dir, log_path=gw_dir / "gateway.log", env={"PYTHONPATH": str(tree)})
    procs.wait_ready(p, port, timeout=600)
    return p, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per case (default 8)")
    ap.add_argument("--floor", action="store_true", help="also count a bare aiohttp.web.Server answering the same bytes")
    ap.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout whose gateway runs (default: this one)")
    ap.add_argument("--gateway-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None,
                    help="copy callgrind's dumps here (read them with callgrind_annotate) before the scratch directory goes")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - set(CASES):
        ap.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    os.sched_setaffinity(0, {args.client_cpu})
    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-ir-"))
    canned, canned_url = procs.start_upstream(workdir, mode="canned", cpu=args.client_cpu)
    results: dict[str, dict[str, Any]] = {}
    try:
        out = workdir / "gateway.callgrind"
        gw, port = _gateway(args.tree.resolve(), workdir, canned_url, args.gateway_cpu, out)
        answers: dict[str, Any] = {}
        try:
            local_id = dc.record_local_file(workdir, port, CLIENT)
            for case in cases:
                req = _request(case, local_id)
                n, ir = _count(gw.pid, port, req, args.seconds, out)
                results[case] = {"requests": n, "gateway_ir": ir / n}
                method, path = req.split(b" ", 2)[:2]
                st, data = hc.request(HOST, port, method.decode(), path.decode(),
                                      {**CLIENT, "Content-Type": "application/json"} if method == b"POST" else CLIENT,
                                      dc.RESPONSES_BODY if method == b"POST" else b"")
                answers[f"{method.decode()} {path.decode()}"] = {
                    "status": st, "content_type": "application/json", "body": base64.b64encode(data).decode()}
                print(f"{case:10s} gateway {ir / n:10,.0f} instructions/request ({n} requests)", flush=True)
        finally:
            gw.stop()
        if args.floor:
            (workdir / "answers.json").write_text(json.dumps(answers))
            fout = workdir / "floor.callgrind"
            fport = procs.free_port()
            floor = procs.Proc("floor", procs.pin_prefix(args.gateway_cpu) + _under_callgrind(fout) + [
                sys.executable, str(HERE / "upstream.py"), "--mode", "floor", "--port", str(fport),
                "--answers", str(workdir / "answers.json")], cwd=workdir, log_path=workdir / "floor.log", stdout_pipe=True)
            try:
                floor.wait_line(b"READY", timeout=600)
                for case in cases:
                    n, ir = _count(floor.pid, fport, _request(case, local_id), args.seconds, fout)
                    results[case]["floor_ir"] = ir / n
                    print(f"{case:10s} floor   {ir / n:10,.0f} instructions/request ({n} requests)", flush=True)
            finally:
                floor.stop()
    finally:
        canned.stop()
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in glob.glob(str(workdir / "*.callgrind*")):
                shutil.copy(dump, args.keep)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ninstructions/request (callgrind, user space), gateway from {args.tree.resolve()}")
    print(f"{'case':10s} {'gateway':>12s} {'bare aiohttp':>13s} {'ratio':>6s}")
    for case, r in results.items():
        floor_ir = r.get("floor_ir")
        floor_col, ratio = (f"{floor_ir:13,.0f}", f"{r['gateway_ir'] / floor_ir:6.2f}") if floor_ir else ("-", "-")
        print(f"{case:10s} {r['gateway_ir']:12,.0f} {floor_col:>13s} {ratio:>6s}")


if __name__ == "__main__":
    main()
