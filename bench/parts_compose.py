"""Memory and speed of assembling an Upload's parts (proxy/upload_parts.py), in process.

For each backend the parts are written through the store's part sinks (streamed: no part is
ever built in memory), then composed, and the process's peak RSS growth over the compose is
measured (``VmHWM`` reset through ``/proc/self/clear_refs`` before it):

* ``s3``: a real ``moto_server`` (its memory is its own process's); ``--parts`` large parts
  (all copied server-side by ``UploadPartCopy``), then the same with a small part between each
  two (the small runs and the heads of the large parts go through the one bounded buffer);
* ``local``: a temporary directory (``copy_file_range`` in a thread).

    python bench/parts_compose.py                 # 4 x 64 MiB, both backends (~30 s)
    python bench/parts_compose.py --part-mib 16   # quicker

The issue's budget is an RSS growth under 64 MiB; a non-zero exit says it was exceeded.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.providers.configs import LocalConfig, S3Config  # noqa: E402
from proxy.providers.local import LocalProvider  # noqa: E402
from proxy.providers.s3 import S3Provider  # noqa: E402
from proxy.upload_parts import PartRef, PartStore  # noqa: E402
from tests.emulator_s3 import _answers, _free_port, _moto_server_executable, fresh_bucket  # noqa: E402
from tests.gateway_proc import proc_memory, reset_peak_rss  # noqa: E402
from tests.unit.fakes import exchange  # noqa: E402

MiB = 1 << 20
BUDGET = 64 * MiB
CHUNK = 256 << 10   # what the gateway's server.chunk_size hands a sink


async def write_part(store: PartStore, upload_id: str, part_id: str, size: int, seed: int) -> PartRef:
    """A part of ``size`` pseudo-random bytes, generated and written chunk by chunk."""
    sink = store.open_part(upload_id, part_id)
    block = hashlib.sha256(f"{seed}".encode()).digest() * (CHUNK // 32)
    left = size
    while left:
        piece = block[:min(CHUNK, left)]
        await sink.write(piece)
        left -= len(piece)
    result = await sink.complete()
    return PartRef(part_id, result.bytes, result.location)


def baseline() -> int:
    """The current RSS, with the peak reset to it."""
    pid = os.getpid()
    reset_peak_rss(pid)
    return proc_memory(pid)["VmRSS"]


async def measure(label: str, start_rss: int, compose: Callable[[], Awaitable[Any]], total: int) -> int:
    """Run the compose; print its speed, the peak RSS growth over it and over the whole case
    (``start_rss``: before its parts were written); return the whole case's growth."""
    before = baseline()
    start = time.perf_counter()
    await compose()
    seconds = time.perf_counter() - start
    peak = proc_memory(os.getpid())["VmHWM"]
    whole = max(peak, before) - start_rss
    print(f"{label:<44} {total / MiB:6.0f} MiB in {seconds:6.2f} s ({total / MiB / seconds:6.0f} MiB/s); "
          f"peak RSS growth: compose {(peak - before) / MiB:5.1f} MiB, parts + compose {whole / MiB:5.1f} MiB")
    return whole


async def s3_bench(sizes: list[int]) -> list[int]:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([_moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto_server did not start")
            time.sleep(0.1)
        provider = S3Provider(S3Config(name="s3", bucket="placeholder", endpoint_url=endpoint,
                                       aws_access_key_id="testing", aws_secret_access_key="testing"))
        await provider.start()
        try:
            async with provider.lease(provider.region) as client:
                provider.bucket = await fresh_bucket(client)
            growths = []
            for label, layout in (("large parts (UploadPartCopy)", sizes),
                                  ("large + 1 MiB parts between (+ buffered)", _interleaved(sizes))):
                store = provider.part_store(exchange())
                start_rss = baseline()
                refs = [await write_part(store, "upload_bench", f"part_{i}", n, i)
                        for i, n in enumerate(layout)]
                dest = store.destination(f"file-bench{len(growths)}", tenant="t", filename="f.bin",
                                         purpose="user_data")
                growths.append(await measure(f"s3 (moto) {label}", start_rss, lambda: store.compose(refs, dest),
                                             sum(layout)))
                await store.delete(refs)
            return growths
        finally:
            await provider.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def local_bench(sizes: list[int]) -> list[int]:
    with tempfile.TemporaryDirectory(prefix="sg-parts-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) \
            as tmp:
        provider = LocalProvider(LocalConfig(name="local", path=os.path.join(tmp, "files")))
        await provider.start()
        store = provider.part_store(exchange())
        start_rss = baseline()
        refs = [await write_part(store, "upload_bench", f"part_{i}", n, i) for i, n in enumerate(sizes)]
        growth = await measure("local (copy_file_range)", start_rss,
                               lambda: store.compose(refs, {"path": "file-bench"}), sum(sizes))
        await store.delete(refs)
        return [growth]


def _interleaved(sizes: list[int]) -> list[int]:
    out: list[int] = []
    for size in sizes:
        out += [size, MiB]
    return out[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument("--only", choices=("s3", "local"))
    args = parser.parse_args()
    sizes = [args.part_mib * MiB] * args.parts
    growths: list[int] = []
    if args.only in (None, "s3"):
        growths += asyncio.run(s3_bench(sizes))
    if args.only in (None, "local"):
        growths += asyncio.run(local_bench(sizes))
    worst = max(growths)
    print(f"worst peak RSS growth {worst / MiB:.1f} MiB (budget {BUDGET / MiB:.0f} MiB)")
    sys.exit(0 if worst < BUDGET else 1)


if __name__ == "__main__":
    main()
