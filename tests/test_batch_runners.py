"""The batch runners (proxy/batch_runner.py) of bedrock, vertex and anthropic, driven directly.

Input files are uploaded the real way, through the openai SDK into a gateway process (so each
runner gets the FileRecord the store keeps, with the location its provider wrote); the runner
under test is then a provider object in this process, pointed at the same storage and at the
faithful fakes of the batch APIs (tests/fakes/README.md): submit → poll until the job ends
(bounded) → open_results rows with every ``custom_id`` exactly as uploaded, failed requests in
the error kind → results_size equal to the bytes → cancel.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session
import orjson
import pytest

from proxy.batch_runner import BatchProgress, BatchRunner
from proxy.errors import GatewayError
from proxy.providers.bedrock import BedrockProvider
from proxy.providers.bedrock_batches import IDS_NAME, job_name, request_token
from proxy.providers.anthropic import AnthropicProvider
from proxy.providers.configs import AnthropicConfig, BedrockConfig, VertexConfig
from proxy.providers.vertex import VertexProvider
from proxy.store.base import FileRecord
from proxy.store.sqlite import _FILE_COLS, _row_to_file
from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.bedrock_control import FakeBedrock
from tests.fakes.vertex_batches import FakeVertex
from tests.gateway_proc import GatewayProcess
from tests.support import db_rows

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"
PREFIX = "sluice/"
CHAT = "/v1/chat/completions"
WAIT = 30.0  # seconds a job may take to end on a loaded machine

# custom_ids a recordId cannot carry (and one that looks like a rewritten one), plus plain ones.
IDS = ["row1", "row-2", "has space", "R0000000004", "ü/ñ?", "FAIL-6", "x" * 70]


def batch_file(custom_ids: list[str]) -> bytes:
    return b"".join(orjson.dumps({
        "custom_id": cid, "method": "POST", "url": CHAT,
        "body": {"model": "gpt-4o-mini", "max_tokens": 16,
                 "messages": [{"role": "user", "content": f"{'FAIL ' if cid.startswith('FAIL') else ''}q{i}"}]},
    }) + b"\n" for i, cid in enumerate(custom_ids))


def stored(gw: GatewayProcess, file_id: str) -> FileRecord:
    [row] = db_rows(gw, f"SELECT {_FILE_COLS} FROM files WHERE id = ?", (file_id,))
    return _row_to_file(row)


def s3_client(moto: MotoS3) -> Any:
    return botocore.session.get_session().create_client(
        "s3", region_name=moto.region, endpoint_url=moto.endpoint_url,
        aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)


async def wait_ended(runner: BatchRunner, job: dict[str, Any]) -> BatchProgress:
    deadline = time.monotonic() + WAIT
    seen = []
    while True:
        progress = await runner.poll_batch(job)
        seen.append(progress.status)
        if progress.job is not None:
            job.update(progress.job)
        if progress.status in ("completed", "failed", "cancelled", "expired"):
            progress.timestamps["_seen"] = len(seen)
            return progress
        assert time.monotonic() < deadline, f"the job did not end within {WAIT}s: {seen}"
        await asyncio.sleep(0.05)


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def rows(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


# ============================================================================ the uploads


class Env:
    """One gateway with a bedrock (moto), a vertex (fake-gcs-server) and an anthropic provider,
    used only to upload batch files the real way."""

    def __init__(self, gw: GatewayProcess, moto: MotoS3, bucket: str, gcs: FakeGCS, gcs_bucket: str) -> None:
        self.gw, self.moto, self.bucket, self.gcs, self.gcs_bucket = gw, moto, bucket, gcs, gcs_bucket
        self.s3 = s3_client(moto)

    def upload(self, data: bytes, model: str | None = None, *, provider: str = "bedrock",
               filename: str = "requests.jsonl") -> FileRecord:
        headers = {"x-tfy-provider-name": provider}
        if model:
            headers["x-tfy-provider-model"] = model
        f = client(self.gw).files.create(file=(filename, data), purpose="batch", extra_headers=headers)
        return stored(self.gw, f.id)

    def provider(self, fake: FakeBedrock, **extra: Any) -> BedrockProvider:
        return BedrockProvider(BedrockConfig(
            name="bedrock", bucket=self.bucket, region=self.moto.region, prefix=PREFIX,
            endpoint_url=self.moto.endpoint_url, aws_access_key_id=self.moto.access_key,
            aws_secret_access_key=self.moto.secret_key, batch_endpoint_url=fake.url,
            **{"batch_role_arn": ROLE, "max_retries": 0, **extra}))

    def vertex(self, fake: FakeVertex, **extra: Any) -> VertexProvider:
        return VertexProvider(VertexConfig(name="vertex", bucket=self.gcs_bucket, project_id="test-project",
                                           prefix=PREFIX, endpoint_url=self.gcs.api_root,
                                           api_endpoint=fake.url, **{"max_retries": 0, **extra}))

    def anthropic(self, fake: FakeAnthropic, **extra: Any) -> AnthropicProvider:
        return AnthropicProvider(AnthropicConfig(name="anthropic", api_base=fake.url, api_key=fake.api_key,
                                                 path=str(self.gw.workdir / "anthropic-batches"),
                                                 **{"max_retries": 0, **extra}))


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket = f"sg-test-{uuid.uuid4().hex[:16]}"
    s3_client(moto_s3).create_bucket(Bucket=bucket)
    gcs_bucket = asyncio.run(_gcs_bucket(fake_gcs))
    cfg = {"providers": [
        {"name": "bedrock", "type": "bedrock", "bucket": bucket, "region": moto_s3.region,
         "prefix": PREFIX, "endpoint_url": moto_s3.endpoint_url,
         "aws_access_key_id": moto_s3.access_key, "aws_secret_access_key": moto_s3.secret_key},
        {"name": "vertex", "type": "vertex", "bucket": gcs_bucket, "project_id": "test-project", "prefix": PREFIX,
         "endpoint_url": fake_gcs.api_root, "model": "gemini-2.5-flash"},
        {"name": "anthropic", "type": "anthropic", "api_base": "http://127.0.0.1:9", "api_key": "sk-ant-unused",
         "path": "./anthropic-batches", "model": "claude-sonnet-4-5"},
    ], "default_provider": "bedrock"}
    with GatewayProcess(tmp_path_factory.mktemp("runners-gw"), cfg) as gw:
        yield Env(gw, moto_s3, bucket, fake_gcs, gcs_bucket)


async def _gcs_bucket(gcs: FakeGCS) -> str:
    async with aiohttp.ClientSession() as session:
        return await gcs.create_bucket(session)


# ============================================================================ bedrock


@pytest.fixture
async def bedrock(env: Env) -> AsyncIterator[tuple[Env, FakeBedrock, BedrockProvider]]:
    with FakeBedrock(env.moto) as fake:
        provider = env.provider(fake)
        await provider.start()
        try:
            yield env, fake, provider
        finally:
            await provider.close()


@pytest.mark.parametrize("model", [CLAUDE, NOVA, LLAMA], ids=["claude", "nova", "llama"])
async def test_bedrock_submit_poll_results(bedrock, model: str) -> None:
    env, fake, provider = bedrock
    record = env.upload(batch_file(IDS), model)
    runner = provider.batch_runner()
    batch_id = f"batch_{uuid.uuid4().hex}"
    job = await runner.submit_batch(batch_id=batch_id, input_file=record, endpoint=CHAT, metadata={"k": "v"})

    created = fake.job(job["arn"])
    assert created.name == job_name(batch_id) and created.token == request_token(batch_id)
    assert created.role_arn == ROLE and created.model_id == model
    assert created.invocation_type == ("Converse" if model == LLAMA else "InvokeModel")
    assert created.input_uri == f"s3://{env.bucket}/{record.location['key']}"
    assert created.output_uri == f"s3://{env.bucket}/{PREFIX}batches/{batch_id}/"
    assert created.timeout_hours == 24
    # the id map rides beside the output, not in the job state
    assert job["ids_key"] == f"{PREFIX}batches/{batch_id}/{IDS_NAME}" and "ids" not in job
    assert orjson.loads(env.s3.get_object(Bucket=env.bucket, Key=job["ids_key"])["Body"].read()) == \
        record.location["ids"]

    progress = await wait_ended(runner, job)
    assert progress.status == "completed"
    assert (progress.request_counts.total, progress.request_counts.completed, progress.request_counts.failed) == \
        (len(IDS), len(IDS) - 1, 1)
    assert progress.has_output and progress.has_errors
    assert progress.timestamps["completed_at"] >= job["created"] - 1
    assert job["manifest"]["successRecordCount"] == len(IDS) - 1  # kept: the next poll needs no S3 read

    output = await collect(runner.open_results(job, "output"))
    errors = await collect(runner.open_results(job, "error"))
    ok, failed = rows(output), rows(errors)
    assert sorted(r["custom_id"] for r in ok) == sorted(i for i in IDS if not i.startswith("FAIL"))
    for r in ok:
        body = r["response"]["body"]
        assert r["response"]["status_code"] == 200 and r["error"] is None
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == f"echo: q{IDS.index(r['custom_id'])}"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["created"] == job["created"]
    [bad] = failed
    assert bad["custom_id"] == "FAIL-6"
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["message"].startswith("Malformed input request")
    assert await runner.results_size(job, "output") == len(output)
    assert await runner.results_size(job, "error") == len(errors)
    assert await collect(runner.open_results(job, "output")) == output  # the same bytes every pass


async def test_bedrock_responses_endpoint_and_plain_ids(bedrock) -> None:
    env, fake, provider = bedrock
    data = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                                  "body": {"model": "m", "input": f"q{i}"}}) + b"\n" for i in range(3))
    record = env.upload(data, CLAUDE)
    assert "ids" not in record.location  # every id is a valid recordId: no map
    runner = provider.batch_runner()
    job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                    endpoint="/v1/responses", metadata={})
    assert "ids_key" not in job
    assert (await wait_ended(runner, job)).status == "completed"
    ok = rows(await collect(runner.open_results(job, "output")))
    assert sorted(r["custom_id"] for r in ok) == ["r0", "r1", "r2"]
    assert {r["response"]["body"]["object"] for r in ok} == {"response"}
    assert await collect(runner.open_results(job, "error")) == b""


async def test_bedrock_cancel(env: Env) -> None:
    with FakeBedrock(env.moto, hold=True) as fake:
        provider = env.provider(fake)
        await provider.start()
        try:
            record = env.upload(batch_file(IDS[:2]), CLAUDE)
            runner = provider.batch_runner()
            job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                            endpoint=CHAT, metadata={})
            deadline = time.monotonic() + WAIT
            while (await runner.poll_batch(job)).status != "in_progress":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            progress = await runner.cancel_batch(job)
            assert progress.status in ("cancelling", "cancelled")
            assert any(m == "POST" and p.endswith("/stop") for m, p, _ in fake.requests)
            ended = await wait_ended(runner, job)
            assert ended.status == "cancelled" and "cancelled_at" in ended.timestamps
            assert (ended.request_counts.total, ended.request_counts.failed) == (2, 2)  # never run
            assert not ended.has_output and ended.has_errors
            assert await collect(runner.open_results(job, "output")) == b""
            unrun = rows(await collect(runner.open_results(job, "error")))
            assert sorted(r["custom_id"] for r in unrun) == sorted(IDS[:2])
            assert {r["error"]["code"] for r in unrun} == {"batch_cancelled"}
            assert {r["response"] for r in unrun} == {None}
            again = await runner.cancel_batch(job)  # ended already: Bedrock refuses, the status stands
            assert again.status == "cancelled"
        finally:
            await provider.close()


def test_only_the_translating_types_run_batches() -> None:
    from proxy.providers.configs import OpenAIConfig
    from proxy.providers.openai import OpenAIProvider

    assert OpenAIProvider(OpenAIConfig(name="o", api_key="k")).batch_runner() is None  # the base default
    for provider in (BedrockProvider(BedrockConfig(name="b", bucket="bkt", region="us-east-1")),
                     VertexProvider(VertexConfig(name="v", bucket="bkt", project_id="p")),
                     AnthropicProvider(AnthropicConfig(name="a", api_key="k", path="/nonexistent"))):
        runner = provider.batch_runner()
        assert runner is not None and runner is provider.batch_runner()  # one per provider


async def test_bedrock_expired_job_lists_what_never_ran(env: Env) -> None:
    with FakeBedrock(env.moto, expire_after=3) as fake:
        provider = env.provider(fake)
        await provider.start()
        try:
            record = env.upload(batch_file(IDS), CLAUDE)
            runner = provider.batch_runner()
            job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                            endpoint=CHAT, metadata={})
            ended = await wait_ended(runner, job)
            assert ended.status == "expired" and "expired_at" in ended.timestamps
            counts = ended.request_counts
            assert (counts.total, counts.completed, counts.failed) == (len(IDS), 3, len(IDS) - 3)
            assert ended.has_output and ended.has_errors
            ok = rows(await collect(runner.open_results(job, "output")))
            assert sorted(r["custom_id"] for r in ok) == sorted(IDS[:3])
            errors = await collect(runner.open_results(job, "error"))
            failed = rows(errors)
            assert sorted(r["custom_id"] for r in failed) == sorted(IDS[3:])  # exactly as uploaded
            assert {r["error"]["code"] for r in failed} == {"batch_expired"}
            assert await runner.results_size(job, "error") == len(errors)
            assert len({r["id"] for r in failed + ok}) == len(IDS)
        finally:
            await provider.close()


async def test_bedrock_refusals(bedrock) -> None:
    env, fake, provider = bedrock
    record = env.upload(batch_file(["a"]), CLAUDE)
    runner = provider.batch_runner()
    with pytest.raises(GatewayError) as info:
        await runner.submit_batch(batch_id="batch_x", input_file=record, endpoint="/v1/embeddings", metadata={})
    assert (info.value.status, info.value.param) == (400, "endpoint")
    not_batch = FileRecord(id="file-x", tenant="t", provider="bedrock", filename="a", purpose="user_data", bytes=1,
                           created_at=0, location={"bucket": env.bucket, "key": "k"})
    with pytest.raises(GatewayError) as info:
        await runner.submit_batch(batch_id="batch_x", input_file=not_batch, endpoint=CHAT, metadata={})
    assert (info.value.status, info.value.param) == (400, "input_file_id")
    unconfigured = env.provider(fake, batch_role_arn=None)
    await unconfigured.start()
    try:
        with pytest.raises(GatewayError) as info:
            await unconfigured.batch_runner().submit_batch(batch_id="batch_x", input_file=record, endpoint=CHAT,
                                                           metadata={})
        assert info.value.status == 400 and "batch_role_arn" in info.value.message
    finally:
        await unconfigured.close()
    assert not fake.jobs  # nothing was created upstream


async def test_bedrock_job_that_fails_and_unknown_job(bedrock) -> None:
    env, fake, provider = bedrock
    record = env.upload(batch_file(["a"]), CLAUDE)
    env.s3.delete_object(Bucket=env.bucket, Key=record.location["key"])  # Bedrock cannot read the input
    runner = provider.batch_runner()
    job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record, endpoint=CHAT,
                                    metadata={})
    progress = await wait_ended(runner, job)
    assert progress.status == "failed"
    [error] = progress.errors
    assert error["code"] == "bedrock_job_failed" and "s3://" not in error["message"]
    assert fake.job(job["arn"]).message.startswith("Unable to read the input data from s3://")  # scrubbed
    assert not progress.has_output
    with pytest.raises(GatewayError) as info:
        await runner.poll_batch({**job, "arn": job["arn"][:-12] + "zzzzzzzzzzzz"})
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("code", "status", "error_code", "retryable"),
    [
        ("ThrottlingException", 429, "rate_limit_exceeded", True),
        ("ServiceQuotaExceededException", 429, "upstream_quota_exceeded", False),
        ("AccessDeniedException", 502, "upstream_auth_failed", False),
        ("InternalServerException", 502, "upstream_error", True),
        ("ValidationException", 400, "invalid_batch", False),
        ("ConflictException", 409, "conflict", False),
    ],
)
async def test_bedrock_errors_in_openai_words(bedrock, code: str, status: int, error_code: str,
                                              retryable: bool) -> None:
    env, fake, provider = bedrock
    record = env.upload(batch_file(["a"]), CLAUDE)
    fake.fail_next(code, f"no: the job s3://{env.bucket}/x cannot run", times=5)  # outlasts botocore's retries
    with pytest.raises(GatewayError) as info:
        await provider.batch_runner().submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                                   endpoint=CHAT, metadata={})
    err = info.value
    assert (err.status, err.code, err.retryable) == (status, error_code, retryable)
    assert env.bucket not in err.message and ROLE not in err.message
    assert not fake.jobs


async def test_bedrock_create_is_idempotent_per_batch(bedrock) -> None:
    env, fake, provider = bedrock
    record = env.upload(batch_file(["a"]), CLAUDE)
    runner = provider.batch_runner()
    batch_id = f"batch_{uuid.uuid4().hex}"
    first = await runner.submit_batch(batch_id=batch_id, input_file=record, endpoint=CHAT, metadata={})
    again = await runner.submit_batch(batch_id=batch_id, input_file=record, endpoint=CHAT, metadata={})
    assert first["arn"] == again["arn"] and len(fake.jobs) == 1


# ============================================================================ vertex


@pytest.fixture
async def vertex(env: Env) -> AsyncIterator[tuple[Env, FakeVertex, VertexProvider]]:
    with FakeVertex(env.gcs) as fake:
        provider = env.vertex(fake)
        await provider.start()
        try:
            yield env, fake, provider
        finally:
            await provider.close()


async def test_vertex_submit_poll_results(vertex) -> None:
    env, fake, provider = vertex
    record = env.upload(batch_file(IDS), provider="vertex")
    assert record.location["ids"]  # some ids are not label values
    runner = provider.batch_runner()
    batch_id = f"batch_{uuid.uuid4().hex}"
    job = await runner.submit_batch(batch_id=batch_id, input_file=record, endpoint=CHAT, metadata={})

    [created] = fake.jobs.values()
    assert job["name"] == created.name
    assert created.model == "publishers/google/models/gemini-2.5-flash"
    assert created.input_uri == f"gs://{env.gcs_bucket}/{record.location['name']}"
    assert created.output_prefix == f"gs://{env.gcs_bucket}/{PREFIX}batches/{batch_id}/"
    assert job["ids_key"] == f"{PREFIX}batches/{batch_id}/sluicegate-ids.json"
    method, path, _, auth = fake.requests[0]
    assert (method, path, auth) == ("POST", "/v1/projects/test-project/locations/us-central1/batchPredictionJobs",
                                    None)  # no token against an emulator

    progress = await wait_ended(runner, job)
    assert progress.status == "completed"
    assert (progress.request_counts.total, progress.request_counts.completed, progress.request_counts.failed) == \
        (len(IDS), len(IDS) - 1, 1)
    assert progress.has_output and progress.has_errors
    assert {"in_progress_at", "completed_at"} <= progress.timestamps.keys()
    assert job["output_dir"].startswith(f"gs://{env.gcs_bucket}/{PREFIX}batches/{batch_id}/prediction-model-")

    output = await collect(runner.open_results(job, "output"))
    errors = await collect(runner.open_results(job, "error"))
    ok, failed = rows(output), rows(errors)
    assert sorted(r["custom_id"] for r in ok) == sorted(i for i in IDS if not i.startswith("FAIL"))
    for r in ok:
        body = r["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "gemini-2.5-flash"
        assert body["choices"][0]["message"]["content"] == f"echo: q{IDS.index(r['custom_id'])}"
    [bad] = failed
    assert bad["custom_id"] == "FAIL-6" and bad["response"] is None
    assert bad["error"]["message"].startswith("Bad Request")
    assert await runner.results_size(job, "output") == len(output)
    assert await runner.results_size(job, "error") == len(errors)


async def test_vertex_job_that_fails(vertex) -> None:
    env, fake, provider = vertex
    record = env.upload(batch_file(["a"]), "gemini-2.5-flash", provider="vertex")
    async with aiohttp.ClientSession() as session:   # Vertex AI cannot read the input
        async with session.delete(f"{env.gcs.api_root}/storage/v1/b/{env.gcs_bucket}/o/"
                                  f"{quote(record.location['name'], safe='')}") as resp:
            assert resp.status in (200, 204)   # fake-gcs-server answers 200
    runner = provider.batch_runner()
    job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record, endpoint=CHAT,
                                    metadata={})
    progress = await wait_ended(runner, job)
    assert progress.status == "failed" and "failed_at" in progress.timestamps
    [error] = progress.errors
    assert error["code"] == "vertex_job_failed" and "gs://" not in error["message"]
    assert error["message"].startswith("Vertex AI: Failed to read the input file <storage location>")
    [created] = fake.jobs.values()
    assert created.error is not None and "gs://" in created.error["message"]   # scrubbed, not absent
    assert not progress.has_output and not progress.has_errors


async def test_vertex_cancel_and_refusals(env: Env) -> None:
    with FakeVertex(env.gcs, hold=True) as fake:
        provider = env.vertex(fake)
        await provider.start()
        try:
            record = env.upload(batch_file(IDS[:2]), provider="vertex")
            runner = provider.batch_runner()
            job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                            endpoint=CHAT, metadata={})
            deadline = time.monotonic() + WAIT
            while (await runner.poll_batch(job)).status != "in_progress":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert (await runner.cancel_batch(job)).status in ("cancelling", "cancelled")
            ended = await wait_ended(runner, job)
            assert ended.status == "cancelled" and not ended.has_output and ended.has_errors
            assert (ended.request_counts.total, ended.request_counts.failed) == (2, 2)
            assert await collect(runner.open_results(job, "output")) == b""
            unrun = rows(await collect(runner.open_results(job, "error")))
            assert sorted(r["custom_id"] for r in unrun) == sorted(IDS[:2])
            assert {r["error"]["code"] for r in unrun} == {"batch_cancelled"}
            assert (await runner.cancel_batch(job)).status == "cancelled"  # ended: FAILED_PRECONDITION, ignored

            with pytest.raises(GatewayError) as info:
                await runner.poll_batch({**job, "name": job["name"].rpartition("/")[0] + "/42"})
            assert info.value.status == 404
            no_model = dataclasses.replace(record, location={**record.location, "model": None})
            with pytest.raises(GatewayError) as info:
                await runner.submit_batch(batch_id="batch_y", input_file=no_model, endpoint=CHAT, metadata={})
            assert info.value.code == "missing_model"
            assert len(fake.jobs) == 1
        finally:
            await provider.close()


# ============================================================================ anthropic


@pytest.fixture
async def anthropic(env: Env, tmp_path) -> AsyncIterator[tuple[Env, FakeAnthropic, AnthropicProvider]]:
    with FakeAnthropic(data_dir=tmp_path / "fake-anthropic") as fake:
        provider = env.anthropic(fake)
        await provider.start()
        try:
            yield env, fake, provider
        finally:
            await provider.close()


async def test_anthropic_submit_poll_results(anthropic) -> None:
    env, fake, provider = anthropic
    record = env.upload(batch_file(IDS), provider="anthropic")
    runner = provider.batch_runner()
    batch_id = f"batch_{uuid.uuid4().hex}"
    job = await runner.submit_batch(batch_id=batch_id, input_file=record, endpoint=CHAT, metadata={})

    [batch] = fake.batches.values()
    assert job["anthropic_id"] == batch.id
    sent = [r["custom_id"] for r in batch.requests]
    assert len(sent) == len(IDS) and "has space" not in sent  # carried ids only
    assert {r["params"]["model"] for r in batch.requests} == {"gpt-4o-mini"}  # the rows' own model first
    assert {job["ids"][c] for c in sent if c in job["ids"]} == {"has space", "ü/ñ?", "x" * 70}

    progress = await wait_ended(runner, job)
    assert progress.status == "completed"
    assert (progress.request_counts.total, progress.request_counts.completed, progress.request_counts.failed) == \
        (len(IDS), len(IDS) - 1, 1)
    assert progress.has_output and progress.has_errors and "completed_at" in progress.timestamps
    assert job["results_url"].startswith(fake.url)

    output = await collect(runner.open_results(job, "output"))
    errors = await collect(runner.open_results(job, "error"))
    ok, failed = rows(output), rows(errors)
    assert sorted(r["custom_id"] for r in ok) == sorted(i for i in IDS if not i.startswith("FAIL"))
    for r in ok:
        body = r["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
        assert body["choices"][0]["message"]["content"] == f"echo: q{IDS.index(r['custom_id'])}"
    [bad] = failed
    assert bad["custom_id"] == "FAIL-6" and bad["response"]["status_code"] == 400
    assert await runner.results_size(job, "output") == len(output)
    assert await runner.results_size(job, "error") == len(errors)
    # the key went only to the API's own origin
    assert all(r.headers["x-api-key"] == fake.api_key for r in fake.requests)


async def test_anthropic_cancel(env: Env, tmp_path) -> None:
    with FakeAnthropic(data_dir=tmp_path / "fake-anthropic", hold_batches=True) as fake:
        provider = env.anthropic(fake)
        await provider.start()
        try:
            record = env.upload(batch_file(IDS[:3]), provider="anthropic")
            runner = provider.batch_runner()
            job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                            endpoint=CHAT, metadata={})
            assert (await runner.poll_batch(job)).status == "in_progress"
            cancelling = await runner.cancel_batch(job)
            assert cancelling.status in ("cancelling", "cancelled") and "cancelling_at" in cancelling.timestamps
            ended = await wait_ended(runner, job)
            assert ended.status == "cancelled"
            assert (ended.request_counts.completed, ended.request_counts.failed) == (0, 3)
            assert not ended.has_output and ended.has_errors
            failed = rows(await collect(runner.open_results(job, "error")))
            assert sorted(r["custom_id"] for r in failed) == sorted(IDS[:3])
            assert {r["error"]["code"] for r in failed} == {"batch_cancelled"}
            assert (await runner.cancel_batch(job)).status == "cancelled"  # ended: Anthropic refuses, ignored
        finally:
            await provider.close()


async def test_anthropic_results_elsewhere_are_refused(anthropic) -> None:
    env, fake, provider = anthropic
    job = {"batch_id": "batch_z", "anthropic_id": "msgbatch_x", "results_url": "http://127.0.0.1:9/results"}
    with pytest.raises(GatewayError) as info:
        await collect(provider.batch_runner().open_results(job, "output"))
    assert info.value.status == 502 and not fake.requests


# ============================================================================ memory

BIG_RECORDS = 200
BIG_TEXT = 1 << 20  # each answer: 1 MiB of text → a ~200 MiB .jsonl.out
BUDGET = 64 << 20


def big_responder(job: Any, model_input: dict[str, Any]) -> dict[str, Any]:
    text = model_input["messages"][-1]["content"][0]["text"]
    return {"modelOutput": {"id": "msg_bdrk_1", "type": "message", "role": "assistant", "model": "claude",
                            "content": [{"type": "text", "text": (text + " ") * (BIG_TEXT // (len(text) + 1))}],
                            "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 9}}}


async def test_bedrock_200mib_output_streams_in_flat_memory(env: Env) -> None:
    import gc

    import psutil

    me = psutil.Process()
    with FakeBedrock(env.moto, responder=big_responder) as fake:
        provider = env.provider(fake)
        await provider.start()
        try:
            record = env.upload(batch_file([f"row-{i}" for i in range(BIG_RECORDS)]), CLAUDE)
            runner = provider.batch_runner()
            job = await runner.submit_batch(batch_id=f"batch_{uuid.uuid4().hex}", input_file=record,
                                            endpoint=CHAT, metadata={})
            assert (await wait_ended(runner, job)).status == "completed"
            out_key = f"{job['prefix']}{job['arn'].rpartition('/')[2]}/{job['input_name']}.out"
            assert env.s3.head_object(Bucket=env.bucket, Key=out_key)["ContentLength"] > 200 * 10**6
            gc.collect()
            idle = peak = me.memory_info().rss
            size = rows_seen = 0
            async for chunk in runner.open_results(job, "output"):
                size += len(chunk)
                rows_seen += chunk.count(b"\n")
                peak = max(peak, me.memory_info().rss)
            assert rows_seen == BIG_RECORDS and size > 200 * 10**6
            assert peak - idle < BUDGET, f"open_results raised RSS by {(peak - idle) >> 20} MiB"
        finally:
            await provider.close()
