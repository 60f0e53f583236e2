"""Soak: a bounded mixed load against one gateway process, watching it for leaks.

    python bench/soak.py                    # 600 s, 4 clients (the figure for the note)
    python bench/soak.py --quick            # 60 s, 15 s warm-up
    python bench/soak.py --duration 180 --clients 8 --rss-tolerance-mib 24

A fake OpenAI upstream (``bench/upstream.py``, the tests' FakeOpenAI in its own process) and
the gateway (providers ``local`` on disk and ``up`` → the fake; auth off) run on loopback.
``--clients`` concurrent clients loop over a weighted mix: uploads (user_data and small valid
batch files, to both providers), lists, downloads (checked byte for byte), deletes,
``responses.create`` with SSE read to the end (one in ten cut after the first event: a client
that goes away), and stored JSON responses retrieved then deleted. Every answer's status is
checked; each client keeps at most a few files, so storage stays bounded.

Every ``--interval`` seconds it prints the gateway's RSS, open file descriptors and open
sockets (from /proc). After ``--warmup`` the baseline is the highest value seen in the second
half of the warm-up; the run fails (exit 1, with the reason) as soon as the lowest of the last
three samples is above baseline + tolerance — growth that stays, not a spike — and at the end
if any request got an unexpected answer or anything is left behind (partial uploads, files).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import aiohttp  # noqa: E402
import orjson  # noqa: E402

import procs  # noqa: E402
from tests.gateway_proc import proc_memory  # noqa: E402

UPSTREAM_KEY = "sk-upstream-test"  # bench/upstream.py's default
MiB = 1 << 20
FILES_PER_CLIENT = 4
# op -> weight
MIX = {"upload": 4, "list": 3, "download": 4, "delete": 2, "sse": 4, "response": 2}


def fd_counts(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process."""
    fds = socks = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        fds += 1
        try:
            if os.readlink(f"{base}/{name}").startswith("socket:"):
                socks += 1
        except OSError:  # closed between listdir and readlink
            pass
    return fds, socks


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    sockets: int
    ops: int


@dataclass
class Stats:
    ops: dict[str, int] = field(default_factory=lambda: {k: 0 for k in MIX})
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    cut_streams: int = 0

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def error(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 10:
            self.errors.append(what)


class Client:
    def __init__(self, n: int, base: str, session: aiohttp.ClientSession, stats: Stats, max_size: int) -> None:
        self.n = n
        self.base = base
        self.http = session
        self.stats = stats
        self.rng = random.Random(1000 + n)
        self.max_size = max_size
        self.files: list[tuple[str, str, str]] = []  # (id, provider, sha256)

    async def run(self, until: float) -> None:
        ops, weights = list(MIX), list(MIX.values())
        while time.monotonic() < until:
            op = self.rng.choices(ops, weights)[0]
            if op in ("download", "delete") and not self.files:
                op = "upload"
            if op == "upload" and len(self.files) >= FILES_PER_CLIENT:
                op = "delete"
            try:
                await getattr(self, op)()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.stats.error(f"{op}: {type(exc).__name__}: {exc}")
            self.stats.ops[op] += 1

    def _check(self, op: str, status: int, body: bytes = b"") -> bool:
        if status == 200:
            return True
        self.stats.error(f"{op}: HTTP {status} {body[:200]!r}")
        return False

    # -- operations ------------------------------------------------------------------------
    async def upload(self) -> None:
        provider = self.rng.choice(("local", "up"))
        form = aiohttp.FormData()
        if self.rng.random() < 0.25:
            lines = [orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                                   "body": {"model": "gpt-4o", "input": "x" * self.rng.randint(1, 200)}})
                     for i in range(self.rng.randint(1, 50))]
            data, purpose, name = b"\n".join(lines) + b"\n", "batch", "soak.jsonl"
        else:
            data, purpose, name = self.rng.randbytes(self.rng.randint(1024, self.max_size)), "user_data", "soak.bin"
        form.add_field("purpose", purpose)
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        async with self.http.post(self.base + "/files", data=form, headers={"x-tfy-provider-name": provider}) as r:
            body = await r.read()
        if self._check("upload", r.status, body):
            self.files.append((orjson.loads(body)["id"], provider, hashlib.sha256(data).hexdigest()))

    async def list(self) -> None:
        provider = self.rng.choice(("local", "up"))
        async with self.http.get(self.base + "/files", params={"limit": "20"},
                                 headers={"x-tfy-provider-name": provider}) as r:
            body = await r.read()
        if self._check("list", r.status, body) and orjson.loads(body).get("object") != "list":
            self.stats.error(f"list: not a list: {body[:200]!r}")

    async def download(self) -> None:
        file_id, _, digest = self.rng.choice(self.files)
        sha = hashlib.sha256()
        async with self.http.get(f"{self.base}/files/{file_id}/content") as r:
            async for chunk in r.content.iter_chunked(256 * 1024):
                sha.update(chunk)
        if self._check("download", r.status) and sha.hexdigest() != digest:
            self.stats.error(f"download: {file_id} content differs from what was uploaded")

    async def delete(self) -> None:
        file_id, _, _ = self.files.pop(self.rng.randrange(len(self.files)))
        async with self.http.delete(f"{self.base}/files/{file_id}") as r:
            self._check("delete", r.status, await r.read())

    async def sse(self) -> None:
        cut = self.rng.random() < 0.1
        payload = {"model": "gpt-4o", "input": "soak " * self.rng.randint(1, 40), "stream": True, "store": False}
        seen = b""
        async with self.http.post(self.base + "/responses", json=payload, headers={"x-tfy-provider-name": "up"}) as r:
            if not self._check("sse", r.status, await r.read() if r.status != 200 else b""):
                return
            async for chunk in r.content.iter_any():
                seen = (seen + chunk)[-4096:]
                if cut:
                    self.stats.cut_streams += 1
                    r.close()  # the client goes away mid-stream
                    return
        if b"response.completed" not in seen:
            self.stats.error(f"sse: stream ended without response.completed: {seen[-200:]!r}")

    async def response(self) -> None:
        """A stored JSON response: create, retrieve, delete (keeps the fake's memory flat)."""
        headers = {"x-tfy-provider-name": "up"}
        async with self.http.post(self.base + "/responses", json={"model": "gpt-4o", "input": "hi"},
                                  headers=headers) as r:
            body = await r.read()
        if not self._check("response", r.status, body):
            return
        rid = orjson.loads(body)["id"]
        for method in ("GET", "DELETE"):
            async with self.http.request(method, f"{self.base}/responses/{rid}") as r:
                if not self._check(f"response {method}", r.status, await r.read()):
                    return


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.samples: list[Sample] = []
        self.failure: str | None = None
        self.baseline: tuple[int, int] | None = None  # rss, fds

    def sample(self, pid: int, t: float, ops: int) -> Sample:
        rss = proc_memory(pid)["VmRSS"]
        fds, socks = fd_counts(pid)
        s = Sample(t, rss, fds, socks, ops)
        self.samples.append(s)
        return s

    def check_growth(self) -> None:
        """Set self.failure when growth past the tolerance has lasted three samples."""
        a = self.args
        if self.baseline is None:
            if not self.samples or self.samples[-1].t < a.warmup:
                return
            # the second half of the warm-up, up to and with the first sample after it
            warm = [s for s in self.samples if s.t >= a.warmup / 2]
            self.baseline = (max(s.rss for s in warm), max(s.fds for s in warm))
            print(f"-- baseline after {a.warmup:g}s warm-up: RSS {self.baseline[0] / MiB:.1f} MiB, "
                  f"{self.baseline[1]} fds", flush=True)
            return
        last = self.samples[-3:]
        if len(last) < 3 or last[0].t <= a.warmup:
            return
        rss_floor = min(s.rss for s in last)
        fd_floor = min(s.fds for s in last)
        if rss_floor > self.baseline[0] + a.rss_tolerance_mib * MiB:
            self.failure = (f"RSS grew: {rss_floor / MiB:.1f} MiB for the last 3 samples, baseline "
                            f"{self.baseline[0] / MiB:.1f} MiB + tolerance {a.rss_tolerance_mib} MiB")
        elif fd_floor > self.baseline[1] + a.fd_tolerance:
            self.failure = (f"open file descriptors grew: {fd_floor} for the last 3 samples, baseline "
                            f"{self.baseline[1]} + tolerance {a.fd_tolerance}")

    async def run(self, gw_pid: int, base: str, partial_dir: Path) -> Stats:
        a = self.args
        stats = Stats()
        start = time.monotonic()
        until = start + a.duration
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=a.clients * 2)) as http:
            clients = [Client(i, base, http, stats, a.max_file_kib * 1024) for i in range(a.clients)]
            tasks = [asyncio.ensure_future(c.run(until)) for c in clients]
            print(f"{'t':>6} {'ops':>8} {'ops/s':>7} {'errors':>6} {'RSS MiB':>8} {'fds':>5} {'sockets':>7}",
                  flush=True)
            last_ops, last_t = 0, 0.0
            while time.monotonic() < until and self.failure is None:
                await asyncio.sleep(min(a.interval, max(0.0, until - time.monotonic())))
                t = time.monotonic() - start
                s = self.sample(gw_pid, t, stats.total)
                rate = (s.ops - last_ops) / max(t - last_t, 1e-9)
                last_ops, last_t = s.ops, t
                print(f"{t:6.0f} {s.ops:8d} {rate:7.0f} {stats.error_count:6d} {s.rss / MiB:8.1f} {s.fds:5d} "
                      f"{s.sockets:7d}", flush=True)
                self.check_growth()
            for task in tasks:
                if self.failure is not None:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Leave nothing behind: the remaining files go, and no upload may be half-written.
            for c in clients:
                while c.files:
                    await c.delete()
            for provider in ("local", "up"):
                async with http.get(base + "/files", headers={"x-tfy-provider-name": provider}) as r:
                    left = orjson.loads(await r.read()).get("data", [])
                if left:
                    stats.error(f"{len(left)} file(s) still listed on {provider} after every delete")
        partials = list(partial_dir.glob("*")) if partial_dir.is_dir() else []
        if partials:
            stats.error(f"{len(partials)} partial upload(s) left in {partial_dir}")
        return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--quick", action="store_true", help="60 s, 15 s warm-up")
    p.add_argument("--warmup", type=float, default=None, help="seconds before the baseline (default 60; quick 15)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-file-kib", type=int, default=512, help="largest user_data upload")
    p.add_argument("--rss-tolerance-mib", type=float, default=16.0)
    p.add_argument("--fd-tolerance", type=int, default=24)
    p.add_argument("--stream-delay", type=float, default=0.005, help="the fake's seconds between SSE events")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = p.parse_args()
    if a.quick:
        a.duration = min(a.duration, 60.0)
    if a.warmup is None:
        a.warmup = 15.0 if a.quick else 60.0
    if a.warmup + 3 * a.interval >= a.duration:
        p.error("--duration must leave at least three samples after --warmup")

    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-soak-"))
    started: list[procs.Proc] = []
    try:
        fake, fake_url = procs.start_upstream(workdir, mode="fake", cpu=None, stream_delay=a.stream_delay,
                                              data_dir=workdir / "fake-openai")
        started.append(fake)
        files_dir = workdir / "gateway" / "files"
        config = {
            "store": {"url": f"sqlite:///{workdir / 'gateway' / 'sluicegate.db'}"},
            "providers": [
                {"name": "local", "type": "local", "path": str(files_dir)},
                {"name": "up", "type": "openai", "api_base": fake_url + "/v1", "api_key": UPSTREAM_KEY},
            ],
            "default_provider": "local",
            "log_level": "warning",
        }
        gw, port = procs.start_gateway(workdir, config, cpu=None)
        started.append(gw)
        print(f"soak: {a.duration:g}s, {a.clients} clients, gateway pid {gw.pid} on 127.0.0.1:{port}, "
              f"workdir {workdir}", flush=True)
        soak = Soak(a)
        stats = asyncio.run(soak.run(gw.pid, f"http://127.0.0.1:{port}/v1", files_dir / ".partial"))
        if gw.proc.poll() is not None:
            soak.failure = soak.failure or f"the gateway exited with {gw.proc.returncode}:\n{gw.log()}"
    finally:
        for proc in reversed(started):
            proc.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    after = [s for s in soak.samples if s.t > a.warmup]
    elapsed = soak.samples[-1].t if soak.samples else 0.0
    print(f"\nops: {stats.total} in {elapsed:.0f}s ({stats.total / max(elapsed, 1e-9):.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in stats.ops.items()) + f"; {stats.cut_streams} streams cut by the client")
    if after and soak.baseline is not None:
        print(f"after warm-up: RSS {min(s.rss for s in after) / MiB:.1f}-{max(s.rss for s in after) / MiB:.1f} MiB "
              f"(baseline {soak.baseline[0] / MiB:.1f}), fds {min(s.fds for s in after)}-{max(s.fds for s in after)} "
              f"(baseline {soak.baseline[1]}), sockets {min(s.sockets for s in after)}-{max(s.sockets for s in after)}")
    if stats.error_count:
        print(f"{stats.error_count} unexpected answer(s); first ones:", *stats.errors, sep="\n  ")
    if soak.failure is not None or stats.error_count:
        print(f"SOAK FAILED: {soak.failure or f'{stats.error_count} unexpected answer(s)'}", file=sys.stderr)
        return 1
    print("SOAK OK: no growth past the tolerance, every answer as expected, nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
