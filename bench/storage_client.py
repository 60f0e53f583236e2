#!/usr/bin/env python3
"""The direct baselines of the s3 / gcs / translate sections, as a long-lived worker process.

`bench/run.py` starts it pinned to the *gateway's* core (the gateway idles meanwhile), so a
direct upload runs its client stack on the same core the gateway would use, and the
emulator keeps the other core to itself, as in the gateway runs. It reads one JSON command
per stdin line and answers one JSON line on stdout; clients (aiobotocore, aiohttp) are made
once and kept, as the gateway keeps its own, so only the transfer itself is timed.

Commands (``op``):

* ``s3_bucket`` / ``s3_list`` / ``s3_delete`` — bucket set-up, listing, clean-up (untimed).
* ``s3_upload`` — aiobotocore multipart upload of a file: ``CreateMultipartUpload`` with a
  CRC32 checksum, ``UploadPart`` of ``part_size`` bytes read from the file (CRC32 each), at
  most ``in_flight`` parts outstanding, ``CompleteMultipartUpload`` — what the gateway's
  ``S3MultipartSink`` does, without the gateway.
* ``gcs_storage_upload`` — gcloud-aio-storage ``Storage.upload`` of the open file (resumable
  session, then the whole seekable file in ONE ``PUT``: a different protocol from the
  gateway's chunked one).
* ``gcs_sink_upload`` — the gateway's own ``GCSResumableSink`` driven in-process with
  ``chunk_size``, fed ``feed``-byte reads of the file (the protocol-level baseline).
* ``gcs_delete`` — delete an object (untimed).
* ``translate`` — feed a file in ``feed``-byte chunks to ``bedrock_batch_translator(model)``,
  ``vertex_batch_translator()`` or a bare ``BatchValidator`` (what the ``batch_jsonl`` filter
  runs on the same bytes) and count the output.

Every answer carries ``seconds`` (wall time of the timed part) and ``cpu`` (this process's
user+system CPU seconds over it).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class Worker:
    def __init__(self) -> None:
        self._s3: dict[str, Any] = {}
        self._s3_stacks: list[Any] = []
        self._http: Any = None

    async def close(self) -> None:
        for stack in self._s3_stacks:
            await stack.__aexit__(None, None, None)
        if self._http is not None:
            await self._http.close()

    # -- clients ----------------------------------------------------------------------------
    async def s3(self, endpoint: str, region: str) -> Any:
        key = f"{endpoint}|{region}"
        if key not in self._s3:
            from aiobotocore.session import get_session

            from proxy.providers.s3_storage import make_client_kwargs
            # The same client settings the gateway's bedrock provider starts from.
            ctx = get_session().create_client("s3", **make_client_kwargs(region, endpoint, "testing", "testing"))
            self._s3[key] = await ctx.__aenter__()
            self._s3_stacks.append(ctx)
        return self._s3[key]

    def http(self) -> Any:
        if self._http is None:
            import aiohttp
            # Like the vertex provider's session: no total timeout, pooled connections.
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
                connector=aiohttp.TCPConnector(limit=100, ssl=False), cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    # -- S3 ---------------------------------------------------------------------------------
    async def op_s3_bucket(self, c: dict[str, Any]) -> dict[str, Any]:
        client = await self.s3(c["endpoint"], c["region"])
        await client.create_bucket(Bucket=c["bucket"])
        return {}

    async def op_s3_list(self, c: dict[str, Any]) -> dict[str, Any]:
        client = await self.s3(c["endpoint"], c["region"])
        resp = await client.list_objects_v2(Bucket=c["bucket"], Prefix=c.get("prefix", ""))
        return {"objects": [{"key": o["Key"], "size": o["Size"], "etag": o["ETag"]} for o in resp.get("Contents", [])]}

    async def op_s3_delete(self, c: dict[str, Any]) -> dict[str, Any]:
        client = await self.s3(c["endpoint"], c["region"])
        await client.delete_object(Bucket=c["bucket"], Key=c["key"])
        return {}

    async def op_s3_upload(self, c: dict[str, Any]) -> dict[str, Any]:
        client = await self.s3(c["endpoint"], c["region"])
        bucket, key, part_size, in_flight = c["bucket"], c["key"], c["part_size"], c["in_flight"]
        t0, cpu0 = time.perf_counter(), _cpu()
        resp = await client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/octet-stream",
                                                    ChecksumAlgorithm="CRC32")
        upload_id = resp["UploadId"]
        pending: list[asyncio.Task[dict[str, Any]]] = []
        parts: list[dict[str, Any]] = []

        async def part(number: int, body: bytes) -> dict[str, Any]:
            r = await client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                                         ChecksumAlgorithm="CRC32")
            p = {"PartNumber": number, "ETag": r["ETag"]}
            if "ChecksumCRC32" in r:
                p["ChecksumCRC32"] = r["ChecksumCRC32"]
            return p

        number = 1
        with open(c["path"], "rb", buffering=0) as fh:
            while body := fh.read(part_size):
                while len(pending) >= in_flight:  # oldest first, like the sink
                    parts.append(await pending.pop(0))
                pending.append(asyncio.create_task(part(number, body)))
                number += 1
        for t in pending:
            parts.append(await t)
        done = await client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - cpu0, "etag": done["ETag"], "parts": len(parts)}

    # -- GCS --------------------------------------------------------------------------------
    async def op_gcs_storage_upload(self, c: dict[str, Any]) -> dict[str, Any]:
        from gcloud.aio.storage import Storage
        storage = Storage(api_root=c["api_root"], session=self.http())
        t0, cpu0 = time.perf_counter(), _cpu()
        with open(c["path"], "rb") as fh:
            res = await storage.upload(c["bucket"], c["name"], fh, content_type="application/octet-stream",
                                       timeout=600)
        return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - cpu0, "size": int(res.get("size", -1)),
                "md5": res.get("md5Hash")}

    async def op_gcs_sink_upload(self, c: dict[str, Any]) -> dict[str, Any]:
        from proxy.providers.gcs_storage import GCSResumableSink
        sink = GCSResumableSink(self.http(), c["api_root"], c["bucket"], c["name"], chunk_size=c["chunk_size"],
                                metadata={"file_id": "file-bench", "purpose": "user_data", "filename": "big.bin",
                                          "tenant": "default"})
        feed = c["feed"]
        t0, cpu0 = time.perf_counter(), _cpu()
        with open(c["path"], "rb", buffering=0) as fh:
            while chunk := fh.read(feed):
                await sink.write(chunk)
        res = await sink.complete()
        return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - cpu0, "size": res.bytes}

    async def op_gcs_delete(self, c: dict[str, Any]) -> dict[str, Any]:
        from urllib.parse import quote
        url = f"{c['api_root']}/storage/v1/b/{quote(c['bucket'], safe='')}/o/{quote(c['name'], safe='')}"
        async with self.http().delete(url) as resp:
            return {"status": resp.status}

    # -- translators ------------------------------------------------------------------------
    async def op_translate(self, c: dict[str, Any]) -> dict[str, Any]:
        from proxy.transforms.batch_bedrock import bedrock_batch_translator
        from proxy.transforms.batch_vertex import vertex_batch_translator
        from proxy.transforms.jsonl import BatchValidator
        max_lines = c.get("max_lines", 50_000)
        kind = c["kind"]
        if kind == "bedrock":
            t = bedrock_batch_translator(c["model"], max_lines=max_lines)
        elif kind == "vertex":
            t = vertex_batch_translator(max_lines=max_lines)
        else:
            t = None
            v = BatchValidator(max_lines=max_lines)
        feed = c["feed"]
        n_in = n_out = 0
        # Read the whole file first (untimed): only the sans-IO work is measured.
        with open(c["path"], "rb") as fh:
            data = fh.read()
        view = memoryview(data)
        t0, cpu0 = time.perf_counter(), _cpu()
        for i in range(0, len(data), feed):
            chunk = bytes(view[i:i + feed])  # what the multipart parser hands the sink: bytes
            n_in += len(chunk)
            if t is not None:
                n_out += len(t.feed(chunk))
            else:
                v.feed(chunk)
        if t is not None:
            n_out += len(t.close())
        else:
            v.close()
        secs = time.perf_counter() - t0
        return {"seconds": secs, "cpu": _cpu() - cpu0, "bytes_in": n_in, "bytes_out": n_out,
                "ids": len(t.ids) if t is not None else 0}


async def serve() -> None:
    w = Worker()
    loop = asyncio.get_running_loop()
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            try:
                res = await getattr(w, "op_" + cmd["op"])(cmd)
                res["ok"] = True
            except Exception as exc:  # noqa: BLE001 - reported to the runner
                res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        await w.close()


def main() -> None:
    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:  # pragma: no cover
        asyncio.run(serve())


if __name__ == "__main__":
    main()
