"""The Batches API through the real OpenAI SDK and a running gateway, on the providers whose
batches the gateway runs: bedrock (moto_server + FakeBedrock), vertex (fake-gcs-server +
FakeVertex) and anthropic (FakeAnthropic's Message Batches).

upload (``purpose=batch``) → ``batches.create`` → ``batches.retrieve`` until it ends (bounded)
→ ``files.content`` of its output and error files: OpenAI batch-output rows with every
``custom_id`` exactly as uploaded and real ``chat.completion`` (or ``response``) bodies; the
files' ``bytes`` are their content's length; ``batches.list`` pages; ``batches.cancel`` (also
of an ended batch); another tenant gets 404 on the batch and its files; a restart between
create and retrieve loses nothing. The runners themselves are tested in
tests/test_batch_runners.py (whose upload helpers and constants are used here).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types import Batch

from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.bedrock_control import FakeBedrock
from tests.fakes.vertex_batches import FakeVertex
from tests.gateway_proc import GatewayProcess
from tests.test_batch_runners import CHAT, CLAUDE, IDS, PREFIX, ROLE, _gcs_bucket, batch_file, rows, s3_client

KEYS = {"TEAM_A_KEY": "sk-team-a", "TEAM_B_KEY": "sk-team-b"}
AUTH = {"keys": [{"key": "os.environ/TEAM_A_KEY", "tenant": "team-a"},
                 {"key": "os.environ/TEAM_B_KEY", "tenant": "team-b"}]}
PROVIDERS = ["bedrock", "vertex", "anthropic"]
WAIT = 30.0  # seconds a batch may take to end on a loaded machine (the gateway polls once a second)
OK_IDS = sorted(i for i in IDS if not i.startswith("FAIL"))


class Env:
    """One gateway with the three gateway-run providers, each on its fakes (module scope)."""

    def __init__(self, gw: GatewayProcess, fakes: dict[str, Any]) -> None:
        self.gw, self.fakes = gw, fakes

    def upload(self, c: openai.OpenAI, provider: str, data: bytes) -> str:
        headers = {"x-tfy-provider-name": provider}
        if provider == "bedrock":
            headers["x-tfy-provider-model"] = CLAUDE
        return c.files.create(file=("requests.jsonl", data), purpose="batch", extra_headers=headers).id

    def hold(self, provider: str, on: bool) -> None:
        """Keep the provider's new jobs running until cancelled (or let them run)."""
        fake = self.fakes[provider]
        if provider == "anthropic":
            fake.hold_batches = on
        else:
            fake.hold = on


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket = f"sg-test-{uuid.uuid4().hex[:16]}"
    s3_client(moto_s3).create_bucket(Bucket=bucket)
    gcs_bucket = asyncio.run(_gcs_bucket(fake_gcs))
    with ExitStack() as stack:
        bedrock = stack.enter_context(FakeBedrock(moto_s3))
        vertex = stack.enter_context(FakeVertex(fake_gcs))
        anthropic = stack.enter_context(FakeAnthropic(data_dir=tmp_path_factory.mktemp("fake-anthropic")))
        cfg = {"auth": AUTH, "default_provider": "bedrock", "providers": [
            {"name": "bedrock", "type": "bedrock", "bucket": bucket, "region": moto_s3.region, "prefix": PREFIX,
             "endpoint_url": moto_s3.endpoint_url, "aws_access_key_id": moto_s3.access_key,
             "aws_secret_access_key": moto_s3.secret_key, "batch_role_arn": ROLE, "batch_endpoint_url": bedrock.url},
            {"name": "vertex", "type": "vertex", "bucket": gcs_bucket, "project_id": "test-project", "prefix": PREFIX,
             "endpoint_url": fake_gcs.api_root, "model": "gemini-2.5-flash", "batch_endpoint_url": vertex.url},
            {"name": "anthropic", "type": "anthropic", "api_base": anthropic.url, "api_key": anthropic.api_key,
             "path": "./anthropic-batches", "model": "claude-sonnet-4-5"},
        ]}
        gw = stack.enter_context(GatewayProcess(tmp_path_factory.mktemp("batches-run-gw"), cfg, env=KEYS))
        yield Env(gw, {"bedrock": bedrock, "vertex": vertex, "anthropic": anthropic})


def wait_ended(c: openai.OpenAI, batch_id: str) -> Batch:
    deadline = time.monotonic() + WAIT
    seen = []
    while True:
        batch = c.batches.retrieve(batch_id)
        seen.append(batch.status)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"the batch did not end within {WAIT}s: {seen}"
        time.sleep(0.2)


def content(c: openai.OpenAI, file_id: str) -> bytes:
    return c.files.content(file_id).content


def check_output(output: bytes, endpoint: str = CHAT, ids: list[str] = OK_IDS) -> None:
    """The output file's rows: one per request that ran, the client's custom_ids, real bodies."""
    ok = rows(output)
    assert sorted(r["custom_id"] for r in ok) == sorted(ids)  # exactly as the client wrote them
    assert len({r["id"] for r in ok}) == len(ok)
    for r in ok:
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]
        body = r["response"]["body"]
        answer = f"echo: q{IDS.index(r['custom_id']) if r['custom_id'] in IDS else r['custom_id'][1:]}"
        if endpoint == CHAT:
            assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
            [choice] = body["choices"]
            assert choice["message"] == {"role": "assistant", "content": answer, "refusal": None, "annotations": []}
            assert choice["finish_reason"] == "stop"
            assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
        else:
            assert body["object"] == "response" and body["status"] == "completed"
            [message] = [item for item in body["output"] if item["type"] == "message"]
            assert [part["text"] for part in message["content"] if part["type"] == "output_text"] == [answer]


def check_failed(provider: str, errors: bytes) -> None:
    """The error file's one row: the request whose model call failed (``FAIL`` in its text)."""
    [bad] = rows(errors)
    assert bad["custom_id"] == "FAIL-6" and bad["id"].startswith("batch_req_")
    if provider == "vertex":  # Vertex gives a status text per failed row, no HTTP answer
        assert bad["response"] is None and "the fake was told to FAIL" in bad["error"]["message"]
    else:  # Bedrock's errorCode 400, Anthropic's errored result: the provider's answer, in OpenAI's words
        assert bad["error"] is None and bad["response"]["status_code"] == 400
        assert "the fake was told to FAIL" in bad["response"]["body"]["error"]["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upload_batch_results(env: Env, provider: str) -> None:
    a, b = client(env.gw, "sk-team-a"), client(env.gw, "sk-team-b")
    input_id = env.upload(a, provider, batch_file(IDS))
    # No routing header: the recorded input file routes the batch to its provider.
    created = a.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h",
                               metadata={"run": provider})
    assert created.id.startswith("batch_") and created.input_file_id == input_id
    assert created.status in ("validating", "in_progress") and created.metadata == {"run": provider}
    assert created.endpoint == CHAT and created.completion_window == "24h"
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.output_file_id is None and created.error_file_id is None

    done = wait_ended(a, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == \
        (len(IDS), len(IDS) - 1, 1)
    assert done.completed_at and done.metadata == {"run": provider}
    assert done.output_file_id and done.error_file_id

    output, errors = content(a, done.output_file_id), content(a, done.error_file_id)
    check_output(output)
    check_failed(provider, errors)
    for file_id, data in ((done.output_file_id, output), (done.error_file_id, errors)):
        meta = a.files.retrieve(file_id)
        assert meta.purpose == "batch_output" and meta.bytes == len(data)
        assert content(a, file_id) == data  # the same bytes every time
    assert {done.output_file_id, done.error_file_id} <= {f.id for f in a.files.list()}

    # Anyone else: 404 on the batch and its files, and the batch is no cursor of theirs.
    for call in (lambda: b.batches.retrieve(created.id), lambda: b.batches.cancel(created.id),
                 lambda: b.files.content(done.output_file_id), lambda: b.files.content(done.error_file_id),
                 lambda: b.files.retrieve(done.output_file_id), lambda: b.files.retrieve(done.error_file_id),
                 lambda: b.files.delete(done.output_file_id), lambda: b.files.content(input_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError) as e:
        b.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    assert e.value.body["param"] == "input_file_id"  # type: ignore[index]
    assert created.id not in {x.id for x in b.batches.list()}
    assert b.batches.list(after=created.id).data == []
    assert done.output_file_id not in {f.id for f in b.files.list()}

    # Cancelling a batch that has ended is no error: its state comes back.
    again = a.batches.cancel(created.id)
    assert again.status == "completed" and again.output_file_id == done.output_file_id
    assert a.batches.retrieve(created.id).to_dict() == done.to_dict()  # ended: final, no more polls
