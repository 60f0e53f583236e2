"""Two gateway processes (separate working directories) on one PostgreSQL database behave as one
gateway. Their files provider is shared: ``local`` on one directory (a shared filesystem), ``s3``
on the real moto_server or ``gcs`` on the real fake-gcs-server (one fresh bucket per test)."""
from __future__ import annotations

import hashlib
import io
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.conftest import client
from tests.emulator_gcs import fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import moto_s3  # noqa: F401  (fixture)
from tests.fakes.bigfile import make_big_file
from tests.test_bedrock_files import new_bucket as new_s3_bucket, s3_client
from tests.test_gcs_files import gcs_provider
from tests.test_s3_files import s3_provider
from tests.test_vertex_files import new_bucket as new_gcs_bucket

QUOTA = 1_000_000
UPLOAD = 300_000   # 8 uploads of this size, only 3 fit under QUOTA
UPLOADS = 8


@pytest.fixture
def shared_files(request, tmp_path) -> dict[str, Any]:
    """The files provider both replicas use (``local`` unless parametrised indirectly)."""
    kind = getattr(request, "param", "local")
    if kind == "local":
        return {"name": "local", "type": "local", "path": str(tmp_path / "shared-files")}
    if kind == "s3":
        moto = request.getfixturevalue("moto_s3")
        return s3_provider("s3", new_s3_bucket(s3_client(moto)), moto)
    assert kind == "gcs", kind
    gcs = request.getfixturevalue("fake_gcs")
    return gcs_provider("gcs", new_gcs_bucket(gcs), gcs)


@pytest.fixture
async def replicas(start_gateway, pg_url, shared_files):
    def start(fake_openai=None, **extra):
        providers = [shared_files]
        if fake_openai is not None:
            providers.append({"name": "my-openai", "type": "openai", "api_base": fake_openai.url + "/v1",
                              "api_key": "sk-upstream-test", "max_retries": 0,
                              "timeouts": {"connect": "2s", "read": "5s"}})
        cfg = {"store": {"url": pg_url, "pool_max": 4}, "providers": providers, "default_provider": shared_files["name"], **extra}
        return start_gateway(cfg), start_gateway(cfg)
    return start


@pytest.mark.parametrize("shared_files", ["local", "s3", "gcs"], indirect=True)
def test_a_file_made_through_one_replica_is_served_and_deleted_through_the_other(replicas):
    a, b = (client(gw) for gw in replicas())
    data = b"".join(b'{"custom_id": "%d", "method": "POST", "url": "/v1/responses", "body": {}}\n' % i
                    for i in range(50))
    f = a.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch")
    assert f.id in [x.id for x in b.files.list()]
    assert b.files.retrieve(f.id).bytes == len(data)
    assert hashlib.sha256(b.files.content(f.id).read()).digest() == hashlib.sha256(data).digest()
    assert a.files.retrieve(f.id).id == f.id  # cached in A now
    assert b.files.delete(f.id).deleted
    # At once: A never serves the deleted record from its cache.
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        a.files.content(f.id)
    assert f.id not in [x.id for x in a.files.list()]


def test_deletes_through_one_replica_are_seen_at_once_by_the_other(replicas):
    a, b = (client(gw) for gw in replicas())
    for i in range(20):
        f = a.files.create(file=(f"{i}.txt", io.BytesIO(b"x" * (i + 1))), purpose="user_data")
        assert a.files.retrieve(f.id).bytes == i + 1 and b.files.retrieve(f.id).bytes == i + 1  # both cached
        deleter, other = (a, b) if i % 2 else (b, a)
        assert deleter.files.delete(f.id).deleted
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(f.id)


@pytest.mark.parametrize("shared_files", ["local", "s3"], indirect=True)
def test_quota_holds_across_replicas_under_concurrent_uploads(replicas):
    gws = replicas(limits={"tenant_storage_quota": QUOTA})
    clients = [client(gw) for gw in gws]

    def upload(i: int):
        try:
            return clients[i % 2].files.create(file=(f"{i}.bin", io.BytesIO(bytes([i]) * UPLOAD)), purpose="user_data")
        except openai.APIStatusError as err:
            return err

    with ThreadPoolExecutor(UPLOADS) as pool:
        results = list(pool.map(upload, range(UPLOADS)))
    stored = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(stored) == QUOTA // UPLOAD and len(refused) == UPLOADS - len(stored)
    assert all(r.status_code == 429 and r.body["code"] == "storage_quota_exceeded" for r in refused), \
        [str(r) for r in refused]
    listed = clients[0].files.list().data
    assert sum(f.bytes for f in listed) <= QUOTA
    assert {f.id for f in listed} == {f.id for f in stored} == {f.id for f in clients[1].files.list()}


ROUND_TRIPS = 200
SSE_EVERY = 40  # every 40th round trip streams (5 of 200): the record must exist by the terminal event


def test_a_response_made_through_one_replica_is_retrieved_and_deleted_through_the_other(replicas, fake_openai):
    a, b = (client(gw) for gw in replicas(fake_openai))
    misses: list[str] = []
    for i in range(ROUND_TRIPS):
        if i % SSE_EVERY == 0:
            with a.responses.create(model="my-openai/gpt-4o", input=f"turn {i}", stream=True) as stream:
                rid = next((ev.response.id for ev in stream if ev.type == "response.completed"), None)
            assert rid is not None, f"turn {i}: the stream through A had no response.completed"
        else:
            rid = a.responses.create(model="my-openai/gpt-4o", input=f"turn {i}").id
        # Through B at once: visible by the time the client has A's answer (or terminal event).
        try:
            assert b.responses.retrieve(rid).id == rid
            assert b.responses.input_items.list(rid).data
            assert b.responses.delete(rid) is None
        except (openai.APIStatusError, AssertionError) as exc:
            misses.append(f"{i}: {rid}: {exc!r}")
            continue
        try:
            a.responses.retrieve(rid)
            misses.append(f"{i}: {rid} still served by A after B deleted it")
        except openai.NotFoundError:
            pass
    assert misses == [], f"{len(misses)} of {ROUND_TRIPS} round trips missed: {misses[:5]}"


# -- SIGTERM to a replica mid-upload ------------------------------------------------------------

BIG = 64 << 20
PAUSE_AT = 16 << 20   # the upload stops here until A is draining
DRAIN_TIMEOUT = 30.0


class PausingFile(io.FileIO):
    """A real file (so the SDK sends a Content-Length) whose reads stop once, after
    ``PAUSE_AT`` bytes, until ``resume`` is set: the upload is provably in flight."""

    def __init__(self, path) -> None:
        super().__init__(path, "rb")
        self.paused, self.resume = threading.Event(), threading.Event()

    def read(self, size: int = -1) -> bytes:
        if self.tell() >= PAUSE_AT and not self.paused.is_set():
            self.paused.set()
            assert self.resume.wait(30), "the test never resumed the upload"
        return super().read(size)


def _ready_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("shared_files", ["s3"], indirect=True)
def test_sigterm_drains_an_upload_in_flight_which_the_other_replica_then_serves(replicas, tmp_path):
    gw_a, gw_b = replicas(server={"drain_timeout": f"{DRAIN_TIMEOUT:g}s"})
    a, b = client(gw_a, timeout=120), client(gw_b, timeout=120)
    src = tmp_path / "big.bin"
    digest = make_big_file(src, BIG)
    with PausingFile(src) as fh, ThreadPoolExecutor(1) as pool:
        upload = pool.submit(a.files.create, file=fh, purpose="assistants")
        assert fh.paused.wait(60), "the upload never got under way"
        gw_a.signal(signal.SIGTERM)
        t0 = time.monotonic()
        deadline = t0 + 10
        while _ready_status(gw_a.url) != 503:  # A drains (and is still up: the upload is in flight)
            assert time.monotonic() < deadline, "A never reported draining on /readyz"
            time.sleep(0.05)
        fh.resume.set()
        f = upload.result(timeout=120)
    assert f.bytes == BIG
    assert gw_a.proc.wait(DRAIN_TIMEOUT) == 0
    assert time.monotonic() - t0 < DRAIN_TIMEOUT
    assert b.files.retrieve(f.id).bytes == BIG
    h = hashlib.sha256()
    with b.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest
    assert b.files.delete(f.id).deleted  # frees moto's memory


@pytest.mark.parametrize("shared_files", ["local", "s3", "gcs"], indirect=True)
def test_upload_parts_sent_to_both_replicas_assemble(replicas):
    """An Upload's state is in the store and its parts in the shared storage (the ``local``
    path, the bucket): parts sent concurrently to either replica, completed through one, give
    one file both serve."""
    a, b = (client(gw) for gw in replicas())
    chunks = [bytes([i]) * 100_000 for i in range(8)]
    up = a.uploads.create(bytes=sum(map(len, chunks)), filename="big.bin", mime_type="application/octet-stream",
                          purpose="user_data")
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda i: (a, b)[i % 2].uploads.parts.create(up.id, data=chunks[i]), range(8)))
    done = b.uploads.complete(up.id, part_ids=[p.id for p in parts])
    assert done.status == "completed"
    assert a.files.content(done.file.id).read() == b"".join(chunks)
    with pytest.raises(openai.BadRequestError) as e:  # settled for every replica
        a.uploads.cancel(up.id)
    assert e.value.body["code"] == "upload_completed"
