"""Bytes in flight count against the quota, and crash leftovers are cleaned at start-up.

Through the real openai SDK against the gateway as a process: concurrent uploads over the quota
are refused before their bodies are stored; a gateway killed mid-upload (local disk, and
bedrock on moto_server) leaves no partial data and no held quota once it is started again.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import botocore.session
import openai
import pytest

from proxy.reservations import owner_gone, process_owner
from tests.conftest import client
from tests.emulator_gcs import fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.support import db_rows, wait_for

MiB = 1 << 20
CHUNK = 256 * 1024  # server.chunk_size's default: the most one read can add to a partial file
BOUNDARY = "sgtestboundary"


def local_config(quota: str, **server: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"providers": [{"name": "local", "type": "local", "path": "./files"}],
                           "default_provider": "local", "limits": {"tenant_storage_quota": quota}}
    if server:
        cfg["server"] = server
    return cfg


def dir_bytes(path: Path) -> int:
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    return total


# -- concurrent uploads over the quota ------------------------------------------------------------


def test_concurrent_uploads_over_quota_are_refused_before_their_bodies(start_gateway):
    # Two workers: the reservations of both count, through the one database file.
    gw = start_gateway(local_config("20MiB"), workers=2)
    partial = gw.workdir / "files" / ".partial"
    data = os.urandom(8 * MiB)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, dir_bytes(partial))
            time.sleep(0.002)

    results: list[Any] = [None] * 6

    def upload(i: int) -> None:
        try:
            results[i] = client(gw, timeout=30).files.create(file=(f"{i}.bin", data), purpose="assistants")
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            results[i] = exc

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    watcher.join(5)

    stored = [r for r in results if isinstance(r, openai.types.FileObject)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(stored) == 2 and len(refused) == 4, results
    for err in refused:
        assert err.body["code"] == "storage_quota_exceeded"
        assert err.response.headers["x-should-retry"] == "false"
    # At no point did .partial hold more than the quota (+ one read per upload).
    assert peak <= 20 * MiB + 6 * CHUNK, peak
    assert db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert sum(f.bytes for f in client(gw).files.list()) == 16 * MiB
    # Refused before a byte of their files was taken in (not after the whole body). Read once
    # the gateway has stopped: every worker has written all its lines then.
    gw.stop()
    sizes = [line["upload_bytes"] for line in gw.access_log() if line["status"] == 429]
    assert sizes == [0, 0, 0, 0], gw.log()


class ChunkedUpload:
    """A raw upload without Content-Length (chunked), sent piece by piece."""

    HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def __init__(self, gw: GatewayProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        self.sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n\r\n")
        self._chunk(self.HEAD)
        self.sent = 0
        self.answer = b""

    def _chunk(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def send_file_bytes(self, n: int, piece: int = 64 * 1024) -> None:
        """Send up to ``n`` more file bytes; stop early once the gateway has answered."""
        goal = self.sent + n
        while self.sent < goal and not self.answered():
            try:
                self._chunk(b"z" * min(piece, goal - self.sent))
            except (BrokenPipeError, ConnectionResetError):
                return
            self.sent += min(piece, goal - self.sent)

    def answered(self, wait: float = 0.005) -> bool:
        self.sock.settimeout(wait)
        try:
            more = self.sock.recv(65536)
            self.answer += more
        except (socket.timeout, BlockingIOError):
            pass
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(20)
        return b"\r\n\r\n" in self.answer

    def finish(self) -> bytes:
        if not self.answered():
            self._chunk(f"\r\n--{BOUNDARY}--\r\n".encode())
            self.sock.sendall(b"0\r\n\r\n")
            wait_for("the answer", lambda: self.answered(0.05))
        self.sock.close()
        return self.answer


def test_chunked_uploads_are_refused_when_their_bytes_in_flight_pass_the_quota(start_gateway):
    # No Content-Length: reservations grow as the bytes arrive, and stop at the quota.
    gw = start_gateway(local_config("3MiB"))
    first, second = ChunkedUpload(gw), ChunkedUpload(gw)
    first.send_file_bytes(2 * MiB)
    wait_for("the first upload's bytes", lambda: dir_bytes(gw.workdir / "files" / ".partial") >= 2 * MiB)
    # The second passes the quota together with the first one's bytes in flight: refused then,
    # not after its body (nor does it take the quota from the first, which was there before).
    second.send_file_bytes(2 * MiB)
    assert second.finish().startswith(b"HTTP/1.1 429"), second.answer[:200]
    assert second.sent < 2 * MiB
    answer = first.finish()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert [f.bytes for f in client(gw).files.list()] == [2 * MiB]
    assert dir_bytes(gw.workdir / "files" / ".partial") == 0
    assert db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)]


# -- a gateway killed mid-upload --------------------------------------------------------------------


def start_raw_upload(gw: GatewayProcess, total: int, sent: int, headers: str = "") -> socket.socket:
    """Send the headers of a ``total``-byte file upload and its first ``sent`` bytes; keep the
    connection open (the rest never comes)."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"k.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    sock.sendall(f"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: {len(head) + total + len(tail)}\r\n"
                 f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{headers}\r\n".encode() + head)
    sock.sendall(b"k" * sent)
    return sock


def kill_and_restart(gw: GatewayProcess) -> None:
    assert gw.proc is not None
    gw.proc.kill()
    gw.proc.wait(10)
    gw.stop()
    gw.start()


def test_partial_file_of_a_killed_gateway_is_removed_at_start_up(start_gateway):
    gw = start_gateway(local_config("16MiB"))
    partial = gw.workdir / "files" / ".partial"
    sock = start_raw_upload(gw, total=12 * MiB, sent=3 * MiB)
    try:
        wait_for("the partial file", lambda: dir_bytes(partial) >= 3 * MiB)
        wait_for("the reservation to name it",
                 lambda: db_rows(gw, "SELECT location FROM reservations WHERE location LIKE '%file-%'"))
        kill_and_restart(gw)
    finally:
        sock.close()
    # Gone as soon as the new gateway is ready, not after a day.
    assert list(partial.iterdir()) == []
    assert db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)]
    # The quota it held is free again: 15 MiB fit into 16.
    assert client(gw).files.create(file=("q.bin", b"q" * (15 * MiB)), purpose="assistants").bytes == 15 * MiB


def test_a_client_that_disconnects_mid_upload_releases_its_reservation(start_gateway):
    gw = start_gateway(local_config("16MiB"))
    partial = gw.workdir / "files" / ".partial"
    sock = start_raw_upload(gw, total=12 * MiB, sent=2 * MiB)
    with sock:
        wait_for("the reservation to name the partial file",
                 lambda: db_rows(gw, "SELECT location FROM reservations WHERE location LIKE '%file-%'"))
    wait_for("the release", lambda: db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)])
    assert dir_bytes(partial) == 0
    assert client(gw).files.create(file=("q.bin", b"q" * (15 * MiB)), purpose="assistants").bytes == 15 * MiB


def test_unowned_partial_files_are_swept_but_fresh_ones_are_kept(start_gateway):
    gw = start_gateway(local_config("16MiB"))
    partial = gw.workdir / "files" / ".partial"
    old, fresh = partial / "file-leftover", partial / "file-juststarting"
    gw.stop()
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 60, time.time() - 60))
    fresh.write_bytes(b"y")
    gw.start()
    assert not old.exists() and fresh.exists()


def test_an_owner_is_gone_when_its_process_is():
    now = time.time()
    me = process_owner()
    assert not owner_gone(me, 0, now, 3600)
    host, pid, token = me.split(":")
    # The same pid with another start token is an earlier process that had this pid.
    assert owner_gone(f"{host}:{pid}:{token}0", 0, now, 3600)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_gone(f"{host}:{dead.pid}:{token}", int(now), now, 3600)
    # A live sibling (here: the parent) with its own start token is alive.
    parent = os.getppid()
    with open(f"/proc/{parent}/stat", "rb") as fh:
        start = fh.read().rsplit(b")", 1)[1].split()[19].decode()
    assert not owner_gone(f"{host}:{parent}:{start}", 0, now, 3600)
    # Another host: only the heartbeat tells.
    assert not owner_gone("elsewhere:1:1", int(now) - 10, now, 3600)
    assert owner_gone("elsewhere:1:1", int(now) - 4000, now, 3600)


# -- bedrock on moto_server ---------------------------------------------------------------------------


def s3_client(moto: MotoS3) -> Any:
    return botocore.session.get_session().create_client(
        "s3", region_name=moto.region, endpoint_url=moto.endpoint_url,
        aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)


def bedrock_config(moto: MotoS3, bucket: str, **server: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": [{"name": "bedrock", "type": "bedrock", "bucket": bucket, "region": moto.region,
                       "prefix": "gw/", "endpoint_url": moto.endpoint_url,
                       "aws_access_key_id": moto.access_key, "aws_secret_access_key": moto.secret_key}],
        "default_provider": "bedrock", "limits": {"tenant_storage_quota": "32MiB"}}
    if server:
        cfg["server"] = server
    return cfg


def uploads_in(s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_s3_multipart_upload_of_a_killed_gateway_is_aborted_at_start_up(start_gateway, moto_s3):  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket = f"sg-test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    gw = start_gateway(bedrock_config(moto_s3, bucket))
    sock = start_raw_upload(gw, total=24 * MiB, sent=12 * MiB)
    try:
        wait_for("the multipart upload", lambda: uploads_in(s3, bucket))
        wait_for("the reservation to name it",
                 lambda: db_rows(gw, "SELECT location FROM reservations WHERE location LIKE '%upload_id%'"))
        kill_and_restart(gw)
    finally:
        sock.close()
    # Aborted at once (its owner is dead), not after server.orphan_upload_age.
    assert uploads_in(s3, bucket) == []
    assert db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)]
    f = client(gw).files.create(file=("q.bin", b"q" * (30 * MiB)), purpose="assistants")
    assert f.bytes == 30 * MiB


def test_unowned_s3_multipart_uploads_under_the_prefix_are_aborted_owned_ones_kept(start_gateway,
                                                                                   moto_s3):  # noqa: F811
    # moto_server reports every upload as initiated in 2010: all are older than the default 1 h,
    # so what protects an upload in progress here is its reservation alone.
    s3 = s3_client(moto_s3)
    bucket = f"sg-test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    for key in ("gw/team/file-abc/x.bin", "gw/not-ours.bin", "other/team/file-abc/x.bin"):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    cfg = bedrock_config(moto_s3, bucket, expiry_sweep_interval="200ms")
    # A second provider on the same bucket and prefix must not take the first one's uploads.
    cfg["providers"].append({**cfg["providers"][0], "name": "bedrock-twin"})
    gw = start_gateway(cfg)
    # From start-up on (an upload is aborted once two sweeps in a row find it unowned: the one
    # at start-up and the next periodic one); only the gateway's own key layout under its
    # prefix is touched.
    wait_for("the start-up orphan to be aborted",
             lambda: "gw/team/file-abc/x.bin" not in uploads_in(s3, bucket), timeout=10)
    assert sorted(uploads_in(s3, bucket)) == ["gw/not-ours.bin", "other/team/file-abc/x.bin"]
    # An upload in progress survives the periodic sweeps and completes.
    total = 12 * MiB
    sock = start_raw_upload(gw, total=total, sent=8 * MiB)
    with sock:
        wait_for("the reservation to name the upload",
                 lambda: db_rows(gw, "SELECT location FROM reservations WHERE location LIKE '%upload_id%'"))
        s3.create_multipart_upload(Bucket=bucket, Key="gw/team/file-lost/y.bin")
        wait_for("a periodic sweep", lambda: "gw/team/file-lost/y.bin" not in uploads_in(s3, bucket), timeout=10)
        assert len([k for k in uploads_in(s3, bucket) if k.startswith("gw/default/")]) == 1
        sock.sendall(b"k" * (total - 8 * MiB) + f"\r\n--{BOUNDARY}--\r\n".encode())
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert [k for k in uploads_in(s3, bucket) if k.startswith("gw/")] == ["gw/not-ours.bin"]


def test_gcs_session_of_a_killed_gateway_is_released_at_start_up(start_gateway, fake_gcs):  # noqa: F811
    import httpx2 as httpx

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    assert httpx.post(f"{fake_gcs.api_root}/storage/v1/b", params={"project": "test"},
                      json={"name": bucket}).status_code == 200
    gw = start_gateway({"providers": [{"name": "vertex", "type": "vertex", "bucket": bucket, "project_id": "p",
                                       "endpoint_url": fake_gcs.api_root, "upload_chunk_size": "256KiB"}],
                        "default_provider": "vertex", "limits": {"tenant_storage_quota": "8MiB"}})
    sock = start_raw_upload(gw, total=6 * MiB, sent=1 * MiB)
    try:
        # The session URI is what the janitor needs to cancel it.
        wait_for("the reservation to name the session",
                 lambda: db_rows(gw, "SELECT location FROM reservations WHERE location LIKE '%session_uri%'"))
        kill_and_restart(gw)
    finally:
        sock.close()
    assert db_rows(gw, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert client(gw).files.create(file=("q.bin", b"q" * (7 * MiB)), purpose="assistants").bytes == 7 * MiB


# -- the janitor, in process (a scripted GCS session server: fake-gcs-server's DELETE cancels nothing) --


async def test_janitor_removes_dead_owners_partial_data_and_keeps_live_ones(tmp_path):
    from proxy.providers.configs import LocalConfig, VertexConfig
    from proxy.janitor import clean_orphans
    from proxy.providers.local import LocalProvider
    from proxy.providers.vertex import VertexProvider
    from proxy.store.base import Reservation
    from proxy.store.sqlite import SQLiteStore
    from tests.test_gcs_storage import ScriptedSession

    gcs = ScriptedSession([])
    await gcs.server.start_server()
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    local = LocalProvider(LocalConfig(name="local", path=str(tmp_path / "files")))
    vertex = VertexProvider(VertexConfig(name="vertex", bucket="b", project_id="p",
                                         endpoint_url=gcs.api_root))
    await local.start()
    await vertex.start()
    try:
        dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_proc.wait()
        host, _, token = process_owner().split(":")
        dead, me = f"{host}:{dead_proc.pid}:{token}", process_owner()
        partial = Path(local.partial_dir)
        for name in ("file-dead", "file-dead.spool.partial", "file-mine"):
            (partial / name).write_bytes(b"x")
        rows = [("rsv-1", dead, "local", {"file_id": "file-dead"}),
                ("rsv-2", dead, "vertex", {"file_id": "file-g", "session_uri": f"{gcs.api_root}/session?upload_id=u9"}),
                ("rsv-3", me, "local", {"file_id": "file-mine"})]
        for rid, owner, provider, location in rows:
            await store.reserve(Reservation(id=rid, tenant="t", owner=owner, provider=provider, bytes=5,
                                            location=location, started_at=1, heartbeat=1), minimum=0, quota=None)
        done = await clean_orphans(store, {"local": local, "vertex": vertex}, 3600)
        assert (done.reservations, done.partials) == (2, 0)
        assert sorted(p.name for p in partial.iterdir()) == ["file-mine"]
        assert gcs.deletes == ["/session?upload_id=u9"]
        left = await store.reservations()
        assert [r.id for r in left] == ["rsv-3"] and left[0].heartbeat > 1  # own rows get a heartbeat
    finally:
        await vertex.close()
        await local.close()
        await store.close()
        await gcs.server.close()
