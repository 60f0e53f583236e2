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
                              "timeouts": {"connect": "2s", "read": "5s", "idle": "5s"}})
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


def test_a_response_made_through_one_replica_is_retrieved_and_deleted_through_the_other(replicas, fake_openai):
    a, b = (client(gw) for gw in replicas(fake_openai))
    for i in range(20):
        r = a.responses.create(model="my-openai/gpt-4o", input=f"turn {i}")
        # Visible to B by the time the client has A's answer.
        assert b.responses.retrieve(r.id).id == r.id
        assert b.responses.input_items.list(r.id).data is not None
        assert b.responses.delete(r.id) is None
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(r.id)
