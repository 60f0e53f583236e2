"""The Uploads API benchmark (issue 11; not part of the test suite): one file through
``client.uploads.upload_file_chunked`` (64 MiB parts, sequential) and through the four raw calls
with 4 parts in flight, vs the same bytes in one ``files.create``, to ``local`` and to an ``s3``
provider on a real ``moto_server``: MB/s and the gateway's peak RSS growth.

    python bench/uploads.py                   # 1 GiB, local and s3
    python bench/uploads.py --size 256MiB --only local

The gateway runs as a process (tests/gateway_proc.py), everything on loopback, every run bounded.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai  # noqa: E402

from tests.fakes.bigfile import make_big_file  # noqa: E402
from tests.gateway_proc import GatewayProcess, free_port  # noqa: E402

MiB = 1 << 20
PART = 64 * MiB


def size_arg(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def provider_config(target: str, moto_url: str | None) -> dict[str, Any]:
    if target == "local":
        return {"name": "local", "type": "local", "path": "./files"}
    import botocore.session

    bucket = f"sg-bench-{uuid.uuid4().hex[:12]}"
    botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
        aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return {"name": "s3", "type": "s3", "bucket": bucket, "endpoint_url": moto_url,
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def parallel_parts(c: openai.OpenAI, src: Path, size: int, inflight: int = 4) -> Any:
    up = c.uploads.create(bytes=size, filename=src.name, mime_type="application/octet-stream", purpose="assistants")

    def send(offset: int) -> str:
        with open(src, "rb") as fh:
            fh.seek(offset)
            return c.uploads.parts.create(up.id, data=fh.read(PART)).id

    with concurrent.futures.ThreadPoolExecutor(inflight) as pool:
        ids = list(pool.map(send, range(0, size, PART)))
    return c.uploads.complete(up.id, part_ids=ids)


def measure(gw: GatewayProcess, what: Callable[[], Any], size: int) -> tuple[float, float]:
    idle = gw.rss()
    gw.reset_peak_rss()
    t0 = time.perf_counter()
    what()
    seconds = time.perf_counter() - t0
    return size / seconds / 1e6, (gw.peak_rss() - idle) / MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=size_arg, default=1 << 30)
    ap.add_argument("--only", choices=["local", "s3"], action="append")
    args = ap.parse_args()
    targets = args.only or ["local", "s3"]
    work = Path(tempfile.mkdtemp(prefix="sluicegate-bench-uploads-"))
    moto = None
    try:
        src = work / "big.bin"
        make_big_file(src, args.size)
        moto_url = None
        if "s3" in targets:
            moto, moto_url = start_moto()
        print(f"{'target':6} {'how':34} {'MB/s':>8} {'peak RSS +MiB':>14}")
        for target in targets:
            cfg = {"providers": [provider_config(target, moto_url)],
                   "limits": {"max_file_size": "8GiB", "max_upload_size": "8GiB", "tenant_storage_quota": "1TB"},
                   "log_level": "warning"}
            with GatewayProcess(work / f"gw-{target}", cfg) as gw:
                c = openai.OpenAI(base_url=gw.base_url, api_key="unused", timeout=600, max_retries=0)
                c.files.list()
                runs: list[tuple[str, Callable[[], Any]]] = [
                    ("files.create (one request)", lambda: c.files.create(file=src, purpose="assistants")),
                    ("upload_file_chunked (64 MiB, seq.)", lambda: c.uploads.upload_file_chunked(
                        file=src, mime_type="application/octet-stream", purpose="assistants", part_size=PART)),
                    ("parts 4 in flight (64 MiB)", lambda: parallel_parts(c, src, args.size)),
                ]
                for how, run in runs:
                    mbps, rss = measure(gw, run, args.size)
                    print(f"{target:6} {how:34} {mbps:8.0f} {rss:14.1f}", flush=True)
                    for f in c.files.list():
                        c.files.delete(f.id)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.environ.get("PYTEST_CURRENT_TEST"):
        raise SystemExit("bench/uploads.py is not part of the test suite")
    main()
