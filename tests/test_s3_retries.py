"""A provider's ``max_retries`` on the S3 side (``s3`` and ``bedrock``): that many retries after
the first attempt, so ``max_retries: 2`` is exactly 3 attempts, and a transient 500 from S3
(on a ``PutObject`` or an ``UploadPart``) is survived. The gateway runs as a process, its
providers pointing at the real moto_server through a loopback proxy that answers chosen
operations with S3's 500 ``InternalError`` and counts every request
(tests/fakes/s3_fault_proxy.py). The bucket is inspected on moto directly.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from proxy.providers.bedrock import BedrockProvider
from proxy.providers.configs import BedrockConfig
from tests.conftest import client
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.fakes.s3_fault_proxy import S3FaultProxy
from tests.gateway_proc import GatewayProcess
from tests.support import location, store_rows, wait_until
from tests.test_bedrock_files import keys, new_bucket, object_bytes, pending_uploads, s3_client

MiB = 1 << 20
ALWAYS = 1000          # more failures than any number of attempts


class Env:
    def __init__(self, gw: GatewayProcess, proxy: S3FaultProxy, moto: MotoS3, buckets: dict[str, str]) -> None:
        self.gw, self.proxy, self.buckets = gw, proxy, buckets
        self.s3 = s3_client(moto)
        self.c = client(gw)


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    s3 = s3_client(moto_s3)
    providers = {"s3-r0": ("s3", 0), "s3-r2": ("s3", 2), "bedrock-r2": ("bedrock", 2)}
    buckets = {name: new_bucket(s3) for name in providers}
    with S3FaultProxy(moto_s3.endpoint_url) as proxy:
        cfg = {"providers": [
            {"name": name, "type": kind, "bucket": buckets[name], "region": moto_s3.region,
             "endpoint_url": proxy.url, "aws_access_key_id": moto_s3.access_key,
             "aws_secret_access_key": moto_s3.secret_key, "max_retries": retries}
            for name, (kind, retries) in providers.items()], "default_provider": "s3-r2"}
        with GatewayProcess(tmp_path_factory.mktemp("s3-retries-gw"), cfg) as gw:
            yield Env(gw, proxy, moto_s3, buckets)


@pytest.fixture
def e(env: Env) -> Iterator[Env]:
    env.proxy.reset()
    yield env
    env.proxy.reset()


def on(provider: str) -> dict[str, str]:
    return {"x-tfy-provider-name": provider}


def assert_upstream_error(err: openai.APIStatusError) -> None:
    """S3's 500 after the last attempt: an OpenAI-shaped 502 the SDK may retry."""
    assert err.status_code == 502, err.body
    assert isinstance(err.body, dict) and set(err.body) >= {"message", "type", "param", "code"}
    assert err.body["code"] == "upstream_error"
    assert err.response.headers["x-should-retry"] == "true"
    assert err.response.json()["error"] == err.body


@pytest.mark.parametrize("provider,retries", [("s3-r0", 0), ("s3-r2", 2), ("bedrock-r2", 2)])
def test_max_retries_is_retries_after_the_first_attempt(e: Env, provider: str, retries: int) -> None:
    rows = store_rows(e.gw)
    e.proxy.fail("PutObject", ALWAYS)
    with pytest.raises(openai.APIStatusError) as err:
        e.c.files.create(file=("a.txt", b"small: one PutObject"), purpose="user_data", extra_headers=on(provider))
    assert_upstream_error(err.value)
    assert e.proxy.count("PutObject") == retries + 1
    assert keys(e.s3, e.buckets[provider]) == [] and store_rows(e.gw) == rows


def test_each_part_is_tried_max_retries_plus_one_times_then_the_upload_is_aborted(e: Env) -> None:
    bucket, rows = e.buckets["s3-r2"], store_rows(e.gw)
    e.proxy.fail("UploadPart", ALWAYS)
    with pytest.raises(openai.APIStatusError) as err:   # two parts: 5 MiB and 1 MiB
        e.c.files.create(file=("p.bin", os.urandom(6 * MiB)), purpose="user_data", extra_headers=on("s3-r2"))
    assert_upstream_error(err.value)
    parts = e.proxy.parts()
    # Part 1's failure is the one reported: all its attempts were made. Part 2, if sent, is
    # cancelled by the abort, perhaps before its last attempt.
    assert parts[1] == 3 and all(n <= 3 for n in parts.values()), parts
    assert wait_until(lambda: pending_uploads(e.s3, bucket) == [], timeout=30)
    assert e.proxy.count("AbortMultipartUpload") >= 1
    assert keys(e.s3, bucket) == [] and store_rows(e.gw) == rows


@pytest.mark.parametrize("provider", ["s3-r2", "bedrock-r2"])
@pytest.mark.parametrize("op,size", [("PutObject", 100_000), ("UploadPart", 11 * MiB)], ids=["put", "parts"])
def test_transient_500s_are_retried_and_the_upload_succeeds(e: Env, provider: str, op: str, size: int) -> None:
    data = os.urandom(size)
    e.proxy.fail(op, 2)                 # as many as max_retries allows, on whichever request comes first
    f = e.c.files.create(file=("t.bin", data), purpose="user_data", extra_headers=on(provider))
    assert f.bytes == size
    loc = location(e.gw, f.id)
    assert loc is not None and object_bytes(e.s3, loc["bucket"], loc["key"]) == data
    if op == "UploadPart":
        parts = e.proxy.parts()
        assert sorted(parts) == [1, 2, 3] and sum(parts.values()) == 3 + 2, parts
        assert loc["etag"].strip('"').endswith("-3")
        assert pending_uploads(e.s3, loc["bucket"]) == []
    else:
        assert e.proxy.count("PutObject") == 1 + 2
    assert e.c.files.delete(f.id).deleted


@pytest.mark.parametrize("retries", [0, 2, 5])
async def test_every_aws_client_makes_max_retries_plus_one_attempts(moto_s3: MotoS3, retries: int) -> None:  # noqa: F811
    """The S3, Bedrock control-plane and bedrock-runtime clients all take the provider's setting."""
    p = BedrockProvider(BedrockConfig(name="br", bucket="b", region=moto_s3.region, endpoint_url=moto_s3.endpoint_url,
                                      aws_access_key_id=moto_s3.access_key, aws_secret_access_key=moto_s3.secret_key,
                                      max_retries=retries))
    await p.start()
    try:
        clients: dict[str, Any] = {"s3": p._clients[moto_s3.region].client, "bedrock-runtime": p._runtime,
                                   "bedrock": await p.batch_runner()._client(moto_s3.region)}
        for name, c in clients.items():
            assert c.meta.config.retries == {"total_max_attempts": retries + 1, "mode": "standard"}, name
    finally:
        await p.close()
