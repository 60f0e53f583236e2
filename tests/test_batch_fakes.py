"""The batch fakes answer what their real clients can read (tests/fakes/README.md): the Bedrock
fake through aiobotocore's ``bedrock`` client, whose parser checks every shape against
botocore's service model; the Message Batches fake and the Vertex fake over plain HTTP."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from proxy.providers.anthropic_batches import _requests_body
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.bedrock_control import FakeBedrock
from tests.fakes.vertex_batches import FakeVertex
from tests.support import wait_until

ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"


def create_args(name: str, **extra: Any) -> dict[str, Any]:
    return {"jobName": name, "roleArn": ROLE, "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://no-such-bucket/in/a.jsonl"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://no-such-bucket/out/"}}, **extra}


async def test_bedrock_fake_speaks_the_service_model(moto_s3: MotoS3) -> None:  # noqa: F811
    with FakeBedrock(moto_s3, hold=True) as fake:
        async with get_session().create_client(
                "bedrock", region_name="us-east-1", endpoint_url=fake.url,
                aws_access_key_id=moto_s3.access_key, aws_secret_access_key=moto_s3.secret_key) as client:
            a = await client.create_model_invocation_job(**create_args("job-a", clientRequestToken="tok1"))
            again = await client.create_model_invocation_job(**create_args("job-a", clientRequestToken="tok1"))
            assert a["jobArn"] == again["jobArn"]
            b = await client.create_model_invocation_job(**create_args("job-b", modelInvocationType="Converse"))
            with pytest.raises(ClientError) as info:
                await client.create_model_invocation_job(**create_args("job-a"))
            assert info.value.response["Error"]["Code"] == "ConflictException"
            with pytest.raises(ClientError) as info:
                await client.create_model_invocation_job(**create_args("bad_name"))
            assert info.value.response["Error"]["Code"] == "ValidationException"

            got = await client.get_model_invocation_job(jobIdentifier=a["jobArn"])
            assert got["jobName"] == "job-a" and got["status"] in ("Submitted", "Validating", "Scheduled",
                                                                   "InProgress")
            assert got["submitTime"].tzinfo is not None  # an ISO 8601 timestamp botocore parsed
            by_id = await client.get_model_invocation_job(jobIdentifier=a["jobArn"].rpartition("/")[2])
            assert by_id["jobArn"] == a["jobArn"]

            page = await client.list_model_invocation_jobs(maxResults=1)
            assert [s["jobArn"] for s in page["invocationJobSummaries"]] == [b["jobArn"]]  # newest first
            rest = await client.list_model_invocation_jobs(maxResults=1, nextToken=page["nextToken"])
            assert [s["jobArn"] for s in rest["invocationJobSummaries"]] == [a["jobArn"]] and "nextToken" not in rest
            named = await client.list_model_invocation_jobs(nameContains="job-b")
            assert [s["jobName"] for s in named["invocationJobSummaries"]] == ["job-b"]

            await client.stop_model_invocation_job(jobIdentifier=a["jobArn"])
            deadline = time.monotonic() + 20
            while (await client.get_model_invocation_job(jobIdentifier=a["jobArn"]))["status"] != "Stopped":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            with pytest.raises(ClientError) as info:
                await client.stop_model_invocation_job(jobIdentifier=a["jobArn"])
            assert info.value.response["Error"]["Code"] == "ValidationException"
            with pytest.raises(ClientError) as info:
                await client.get_model_invocation_job(jobIdentifier="zzzzzzzzzzzz")
            assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
            fake.release()

        async with aiohttp.ClientSession() as session:  # unsigned
            async with session.get(f"{fake.url}/model-invocation-jobs") as resp:
                assert resp.status == 403
                assert resp.headers["x-amzn-ErrorType"] == "UnrecognizedClientException"


async def test_message_batches_fake(tmp_path) -> None:
    with FakeAnthropic(data_dir=tmp_path) as fake:
        headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}  # no files beta needed
        async with aiohttp.ClientSession(headers=headers) as session:
            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                async with session.request(method, fake.url + path, json=body) as resp:
                    return resp.status, await resp.json(content_type=None)

            status, err = await call("POST", "/v1/messages/batches", {"requests": [
                {"custom_id": "a b", "params": {"model": "m", "max_tokens": 5, "messages": []}}]})
            assert status == 400 and err["error"]["type"] == "invalid_request_error"
            status, batch = await call("POST", "/v1/messages/batches", {"requests": [
                {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [
                    {"role": "user", "content": "hi"}]}}]})
            assert status == 200 and batch["processing_status"] == "in_progress"
            assert batch["request_counts"]["processing"] == 1 and batch["results_url"] is None
            assert fake.wait_until(lambda: fake.batches[batch["id"]].processing_status == "ended")
            _, ended = await call("GET", f"/v1/messages/batches/{batch['id']}")
            assert ended["request_counts"]["succeeded"] == 1 and ended["ended_at"]
            async with session.get(ended["results_url"]) as resp:
                [line] = (await resp.read()).splitlines()
            assert orjson.loads(line)["result"]["message"]["content"][0]["text"] == "echo: hi"
            status, _ = await call("POST", f"/v1/messages/batches/{batch['id']}/cancel")
            assert status == 400
            _, listed = await call("GET", "/v1/messages/batches?limit=1")
            assert [b["id"] for b in listed["data"]] == [batch["id"]] and listed["has_more"] is False
            _, deleted = await call("DELETE", f"/v1/messages/batches/{batch['id']}")
            assert deleted == {"id": batch["id"], "type": "message_batch_deleted"}


async def test_vertex_fake_refusals_and_list(fake_gcs: FakeGCS) -> None:  # noqa: F811
    with FakeVertex(fake_gcs) as fake:
        base = f"{fake.url}/v1/projects/test-project/locations/us-central1/batchPredictionJobs"
        job = {"displayName": "j", "model": "publishers/google/models/gemini-2.5-flash",
               "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://b/in.jsonl"]}},
               "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://b/out/"}}}
        async with aiohttp.ClientSession() as session:
            async with session.post(base, json={**job, "model": "gemini"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"
            async with session.post(base.replace("test-project", "other"), json=job) as resp:
                assert resp.status == 403
            async with session.post(base, json=job) as resp:
                created = await resp.json()
            assert created["state"] == "JOB_STATE_QUEUED" and "/batchPredictionJobs/" in created["name"]
            assert wait_until(lambda: fake.jobs[created["name"].rpartition("/")[2]].state == "JOB_STATE_FAILED")
            async with session.get(f"{fake.url}/v1/{created['name']}") as resp:
                failed = await resp.json()
            assert failed["error"]["code"] == 5  # the input object does not exist
            async with session.get(base, params={"pageSize": "1"}) as resp:
                listed = await resp.json()
            assert [j["name"] for j in listed["batchPredictionJobs"]] == [created["name"]]
            async with session.post(f"{fake.url}/v1/{created['name']}:cancel") as resp:
                assert resp.status == 400 and (await resp.json())["error"]["status"] == "FAILED_PRECONDITION"


async def collect(chunks: Any) -> bytes:
    return b"".join([c async for c in chunks])


@pytest.mark.parametrize("tail", [b"\n", b""], ids=["final-eol", "no-final-eol"])
async def test_requests_body_streams_every_row(tmp_path, tail: bytes) -> None:
    """Message Batches' JSON body from the kept rows, read 256 KiB at a time: rows that straddle
    a read boundary, a file without its last newline, all arrive, each once."""
    rows = [{"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 1,
                                              "messages": [{"role": "user", "content": "x" * (i * 997 % 70_000)}]}}
            for i in range(40)]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + tail)
    assert path.stat().st_size > 2 * (256 << 10)
    assert orjson.loads(await collect(_requests_body(str(path)))) == {"requests": rows}
    one = tmp_path / "one.jsonl"
    one.write_bytes(orjson.dumps(rows[0]) + tail)
    assert orjson.loads(await collect(_requests_body(str(one)))) == {"requests": rows[:1]}
