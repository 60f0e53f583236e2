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
from collections.abc import Callable, Iterator
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
from tests.fakes.bedrock_control import FakeBedrock, default_responder
from tests.fakes.vertex_batches import FakeVertex
from tests.gateway_proc import GatewayProcess
from tests.test_batch_runners import (BIG_RECORDS, BUDGET, CHAT, CLAUDE, IDS, PREFIX, ROLE, _gcs_bucket, batch_file,
                                      big_responder, rows, s3_client, stored)

KEYS = {"TEAM_A_KEY": "sk-team-a", "TEAM_B_KEY": "sk-team-b", "TEAM_C_KEY": "sk-team-c"}
AUTH = {"keys": [{"key": "os.environ/TEAM_A_KEY", "tenant": "team-a"},
                 {"key": "os.environ/TEAM_B_KEY", "tenant": "team-b"},
                 {"key": "os.environ/TEAM_C_KEY", "tenant": "team-c"}]}  # team-c: the listing's own
PROVIDERS = ["bedrock", "vertex", "anthropic"]
WAIT = 30.0  # seconds a batch may take to end on a loaded machine (the gateway polls once a second)
OK_IDS = sorted(i for i in IDS if not i.startswith("FAIL"))


class Env:
    """One gateway with the three gateway-run providers, each on its fakes (module scope)."""

    def __init__(self, gw: GatewayProcess, fakes: dict[str, Any], moto: MotoS3) -> None:
        self.gw, self.fakes, self.moto = gw, fakes, moto
        assert gw.config is not None
        self.config: dict[str, Any] = gw.config

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
             "endpoint_url": fake_gcs.api_root, "model": "gemini-2.5-flash", "api_endpoint": vertex.url},
            {"name": "anthropic", "type": "anthropic", "api_base": anthropic.url, "api_key": anthropic.api_key,
             "path": "./anthropic-batches", "model": "claude-sonnet-4-5"},
        ]}
        gw = stack.enter_context(GatewayProcess(tmp_path_factory.mktemp("batches-run-gw"), cfg, env=KEYS))
        yield Env(gw, {"bedrock": bedrock, "vertex": vertex, "anthropic": anthropic}, moto_s3)


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
                               metadata={"run": provider},
                               output_expires_after={"anchor": "created_at", "seconds": 7200})
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
        assert meta.filename == f"{created.id}_{'output' if file_id == done.output_file_id else 'error'}.jsonl"
        assert meta.expires_at == meta.created_at + 7200 and meta.created_at >= created.created_at
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


def responses_file(n: int) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                                  "body": {"model": "gpt-4o-mini", "input": f"q{i}", "max_output_tokens": 16}}) + b"\n"
                    for i in range(n))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_responses_batch_gives_response_objects(env: Env, provider: str) -> None:
    a = client(env.gw, "sk-team-a")
    created = a.batches.create(input_file_id=env.upload(a, provider, responses_file(3)), endpoint="/v1/responses",
                               completion_window="24h")
    done = wait_ended(a, created.id)
    assert done.status == "completed" and done.endpoint == "/v1/responses" and done.error_file_id is None
    output = content(a, done.output_file_id)
    check_output(output, "/v1/responses", ["r0", "r1", "r2"])
    assert a.files.retrieve(done.output_file_id).bytes == len(output)


def ended_jobs(env: Env, provider: str) -> int:
    fake = env.fakes[provider]
    if provider == "bedrock":
        return sum(j.end_time is not None for j in list(fake.jobs.values()))
    if provider == "vertex":
        return sum(j.end_time is not None for j in list(fake.jobs.values()))
    return sum(b.processing_status == "ended" for b in list(fake.batches.values()))


def jobs(env: Env, provider: str) -> int:
    fake = env.fakes[provider]
    return len(fake.batches if provider == "anthropic" else fake.jobs)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_refused_before_anything_runs(env: Env, provider: str) -> None:
    a = client(env.gw, "sk-team-a")
    input_id = env.upload(a, provider, batch_file(IDS[:1]))
    before = jobs(env, provider)
    for change, param, code in (({"endpoint": "/v1/embeddings"}, "endpoint", "unsupported_value"),
                                ({"endpoint": "/v1/nope"}, "endpoint", "invalid_value"),
                                ({"completion_window": "48h"}, "completion_window", "invalid_value"),
                                ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value")):
        with pytest.raises(openai.BadRequestError) as e:
            a.batches.create(**{"input_file_id": input_id, "endpoint": CHAT, "completion_window": "24h", **change})
        assert (e.value.body["param"], e.value.body["code"]) == (param, code)  # type: ignore[index]
        assert e.value.response.headers["x-should-retry"] == "false"
    user_file = a.files.create(file=("notes.jsonl", b"{}\n"), purpose="user_data",
                               extra_headers={"x-tfy-provider-name": provider}).id if provider != "anthropic" else None
    if user_file is not None:
        with pytest.raises(openai.BadRequestError) as e:
            a.batches.create(input_file_id=user_file, endpoint=CHAT, completion_window="24h")
        assert e.value.body["param"] == "input_file_id"  # type: ignore[index]
    # An endpoint other than the one the requests name.
    responses_id = env.upload(a, provider, responses_file(1))
    for file_id, endpoint in ((input_id, "/v1/responses"), (responses_id, CHAT)):
        with pytest.raises(openai.BadRequestError) as e:
            a.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
        assert (e.value.body["param"], e.value.body["code"]) == ("endpoint", "invalid_value")  # type: ignore[index]
    assert jobs(env, provider) == before  # nothing was created upstream


def test_list_pages_and_refreshes(env: Env) -> None:
    c = client(env.gw, "sk-team-c")
    ids = [c.batches.create(input_file_id=env.upload(c, provider, batch_file(IDS)), endpoint=CHAT,
                            completion_window="24h").id for provider in PROVIDERS + ["bedrock"]]
    deadline = time.monotonic() + WAIT
    while any(ended_jobs(env, p) < jobs(env, p) for p in PROVIDERS):  # the jobs end upstream, unobserved
        assert time.monotonic() < deadline, "the jobs did not end"
        time.sleep(0.05)
    first = c.batches.list(limit=3)
    assert [x.id for x in first.data] == ids[:0:-1] and first.has_more
    rest = c.batches.list(limit=3, after=first.data[-1].id)
    assert [x.id for x in rest.data] == [ids[0]] and not rest.has_more
    assert [x.id for x in c.batches.list()] == ids[::-1]  # auto-pagination: every batch
    # The listing polled each batch: they ended, and their files are this tenant's.
    for listed in first.data + rest.data:
        assert listed.status == "completed" and listed.output_file_id and listed.error_file_id
        check_output(content(c, listed.output_file_id))
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.list(limit=0)
    assert e.value.body["param"] == "limit"  # type: ignore[index]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel(env: Env, provider: str) -> None:
    a = client(env.gw, "sk-team-a")
    env.hold(provider, True)  # the job runs until it is cancelled
    try:
        input_id = env.upload(a, provider, batch_file(IDS[:3]))
        created = a.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    finally:
        env.hold(provider, False)
    cancelling = a.batches.cancel(created.id)
    assert cancelling.id == created.id and cancelling.status in ("cancelling", "cancelled")
    done = wait_ended(a, created.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (0, 3)
    assert done.output_file_id is None and done.error_file_id
    errors = content(a, done.error_file_id)
    failed = rows(errors)
    assert sorted(r["custom_id"] for r in failed) == sorted(IDS[:3])
    assert {r["error"]["code"] for r in failed} == {"batch_cancelled"}
    assert a.files.retrieve(done.error_file_id).bytes == len(errors)
    assert a.batches.cancel(created.id).status == "cancelled"  # again: its state, no error
    with pytest.raises(openai.NotFoundError):
        client(env.gw, "sk-team-b").batches.cancel(created.id)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_after_the_job_ended_unseen(env: Env, provider: str) -> None:
    """The job ended upstream since the gateway last looked: cancel answers how it ended."""
    a = client(env.gw, "sk-team-a")
    created = a.batches.create(input_file_id=env.upload(a, provider, batch_file(IDS)), endpoint=CHAT,
                               completion_window="24h")
    deadline = time.monotonic() + WAIT
    while ended_jobs(env, provider) < jobs(env, provider):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
    ended = a.batches.cancel(created.id)
    assert ended.status == "completed" and ended.output_file_id and ended.error_file_id
    check_output(content(a, ended.output_file_id))


def test_restart_between_create_and_retrieve_loses_nothing(env: Env) -> None:
    a = client(env.gw, "sk-team-a")
    created = {p: a.batches.create(input_file_id=env.upload(a, p, batch_file(IDS)), endpoint=CHAT,
                                   completion_window="24h", metadata={"p": p}) for p in PROVIDERS}
    env.gw.stop()
    env.gw.start()
    a, b = client(env.gw, "sk-team-a"), client(env.gw, "sk-team-b")
    done = {p: wait_ended(a, batch.id) for p, batch in created.items()}
    for p, batch in done.items():
        assert batch.status == "completed" and batch.metadata == {"p": p} and batch.output_file_id
        with pytest.raises(openai.NotFoundError):
            b.batches.retrieve(batch.id)
    outputs = {p: content(a, batch.output_file_id) for p, batch in done.items()}
    env.gw.stop()
    env.gw.start()  # what the polls learnt (manifest, output directory, results_url) is in the store
    a, b = client(env.gw, "sk-team-a"), client(env.gw, "sk-team-b")
    for p, batch in done.items():
        assert content(a, batch.output_file_id) == outputs[p]
        check_output(outputs[p])
        check_failed(p, content(a, batch.error_file_id))
        assert a.files.retrieve(batch.output_file_id).bytes == len(outputs[p])
        with pytest.raises(openai.NotFoundError):
            b.files.content(batch.output_file_id)


def test_200mib_bedrock_output_through_files_content_in_flat_memory(env: Env) -> None:
    """The gateway's whole path for a ~200 MiB output: the counting pass when the batch ends
    (its ``bytes``) and the download, each streamed from S3 row by row."""
    a = client(env.gw, "sk-team-a", timeout=300)
    fake = env.fakes["bedrock"]
    fake.responder = big_responder  # every answer ~1 MiB of text
    try:
        created = a.batches.create(input_file_id=env.upload(a, "bedrock", batch_file([f"row-{i}" for i in
                                                                                      range(BIG_RECORDS)])),
                                   endpoint=CHAT, completion_window="24h")
        deadline = time.monotonic() + 4 * WAIT
        while ended_jobs(env, "bedrock") < jobs(env, "bedrock"):  # the fake writes ~200 MiB to moto
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.1)
    finally:
        fake.responder = default_responder
    idle = env.gw.rss()
    env.gw.reset_peak_rss()
    done = wait_ended(a, created.id)
    assert done.status == "completed" and done.output_file_id and done.error_file_id is None
    size = lines = 0
    with a.files.with_streaming_response.content(done.output_file_id) as resp:
        assert int(resp.headers["content-length"]) == a.files.retrieve(done.output_file_id).bytes
        for chunk in resp.iter_bytes(1 << 20):
            size += len(chunk)
            lines += chunk.count(b"\n")
    peak = env.gw.peak_rss()
    assert lines == BIG_RECORDS and size == a.files.retrieve(done.output_file_id).bytes > 200 * 10**6
    assert peak - idle < BUDGET, f"the batch's end and its download raised peak RSS by {(peak - idle) >> 20} MiB"


def test_two_replicas_serve_one_batch(env: Env, start_gateway: Callable[..., GatewayProcess], pg_url: str) -> None:
    """Two replicas on one PostgreSQL store: a batch created through one is polled, ended and
    read through the other, for its tenant only."""
    cfg = {**env.config, "store": {"url": pg_url, "pool_max": 4}}
    one, two = start_gateway(cfg, env=KEYS), start_gateway(cfg, env=KEYS)
    a1, a2, b2 = client(one, "sk-team-a"), client(two, "sk-team-a"), client(two, "sk-team-b")
    for provider in PROVIDERS:
        created = a1.batches.create(input_file_id=env.upload(a1, provider, batch_file(IDS)), endpoint=CHAT,
                                    completion_window="24h")
        done = wait_ended(a2, created.id)
        assert done.status == "completed" and done.output_file_id
        assert a1.batches.retrieve(created.id).to_dict() == done.to_dict()
        output = content(a1, done.output_file_id)
        check_output(output)
        assert content(a2, done.output_file_id) == output == content(a1, done.output_file_id)
        with pytest.raises(openai.NotFoundError):
            b2.files.content(done.output_file_id)
    assert len(a2.batches.list().data) == len(PROVIDERS)


def wait_job_ended(env: Env, provider: str) -> None:
    deadline = time.monotonic() + WAIT
    while ended_jobs(env, provider) < jobs(env, provider):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)


def test_bedrock_expired_batch(env: Env) -> None:
    """A job that expired with some records run: those in the output file, the rest failed
    ``batch_expired`` in the error file, each with its own custom_id."""
    a = client(env.gw, "sk-team-a")
    fake = env.fakes["bedrock"]
    fake.expire_after = 3
    try:
        created = a.batches.create(input_file_id=env.upload(a, "bedrock", batch_file(IDS)), endpoint=CHAT,
                                   completion_window="24h")
        wait_job_ended(env, "bedrock")
    finally:
        fake.expire_after = None
    done = wait_ended(a, created.id)
    assert done.status == "expired" and done.expired_at and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == \
        (len(IDS), 3, len(IDS) - 3)
    ok, failed = rows(content(a, done.output_file_id)), rows(content(a, done.error_file_id))
    assert sorted(r["custom_id"] for r in ok) == sorted(IDS[:3])
    assert sorted(r["custom_id"] for r in failed) == sorted(IDS[3:])
    assert {r["error"]["code"] for r in failed} == {"batch_expired"}
    assert a.files.retrieve(done.error_file_id).bytes == len(content(a, done.error_file_id))


def test_bedrock_failed_job_and_refused_create(env: Env) -> None:
    a = client(env.gw, "sk-team-a")
    input_id = env.upload(a, "bedrock", batch_file(IDS[:1]))
    record = stored(env.gw, input_id)
    # A job Bedrock cannot run (its input is gone): failed, with its reason, and no files.
    s3_client(env.moto).delete_object(Bucket=record.location["bucket"], Key=record.location["key"])
    created = a.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    done = wait_ended(a, created.id)
    assert done.status == "failed" and done.failed_at and done.errors and done.errors.data
    [error] = done.errors.data
    assert error.code == "bedrock_job_failed" and "s3://" not in (error.message or "")
    assert done.output_file_id is None and done.error_file_id is None
    # Bedrock refuses the create: OpenAI's words, and no batch is recorded.
    fake = env.fakes["bedrock"]
    before = [x.id for x in a.batches.list()]
    fake.fail_next("ThrottlingException", "Too many requests", times=10)  # outlasts botocore's retries
    try:
        with pytest.raises(openai.RateLimitError) as e:
            a.batches.create(input_file_id=env.upload(a, "bedrock", batch_file(IDS[:1])), endpoint=CHAT,
                             completion_window="24h")
    finally:
        fake.clear_faults()
    assert e.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert e.value.response.headers["x-should-retry"] == "true"
    assert [x.id for x in a.batches.list()] == before
