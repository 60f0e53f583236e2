"""The bedrock provider: files in Amazon S3, through the real openai SDK against the gateway as a
process, whose bedrock providers point at the real moto_server.

Most tests share one gateway (auth on, two tenants). Tests that must see an empty bucket
afterwards send their upload to a fresh bucket with ``x-tfy-aws-s3-bucket``. The bucket is
inspected with a plain (synchronous) botocore client, not with the code under test.
"""
from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx2 as httpx
import openai
import orjson
import pytest
from botocore.exceptions import ConnectTimeoutError, NoCredentialsError, ReadTimeoutError

from proxy.providers.configs import BedrockConfig
from proxy.errors import GatewayError
from proxy.providers.bedrock import (
    BUCKET_HEADER,
    MODEL_HEADER,
    REGION_HEADER,
    BedrockProvider,
    bucket_name_problem,
)
from proxy.providers.object_store import Target
from proxy.providers.s3_storage import MIN_PART_SIZE, S3NotFound, S3StorageError
from proxy.store.base import FileRecord
from tests.conftest import client
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.fakes.bigfile import make_big_file
from tests.gateway_proc import GatewayProcess
from tests.support import expire_now, location, raw_upload, store_rows, wait_until

MiB = 1 << 20
KEY_A, KEY_B = "sk-team-a", "sk-team-b"
PREFIX = "sluice/"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
BEDROCK = {"x-tfy-provider-name": "bedrock"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "2+2?"}],
        "max_tokens": 16, "temperature": 0.2}


# -- moto helpers (a plain botocore client, not the code under test) ----------------------------


def s3_client(moto: MotoS3, region: str | None = None) -> Any:
    return botocore.session.get_session().create_client(
        "s3", region_name=region or moto.region, endpoint_url=moto.endpoint_url,
        aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)


def new_bucket(s3: Any) -> str:
    name = f"sg-test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


def pending_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def batch_line(custom_id: str, body: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": body or CHAT}) + b"\n"


# -- the shared gateway --------------------------------------------------------------------------


class Env:
    def __init__(self, gw: GatewayProcess, moto: MotoS3, bucket: str) -> None:
        self.gw, self.moto, self.bucket = gw, moto, bucket
        self.s3 = s3_client(moto)
        self.a = client(gw, KEY_A)
        self.b = client(gw, KEY_B)

    def fresh_bucket(self) -> str:
        return new_bucket(self.s3)


def bedrock_provider(name: str, bucket: str, moto: MotoS3, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "bedrock", "bucket": bucket, "region": moto.region,
            "endpoint_url": moto.endpoint_url, "aws_access_key_id": moto.access_key,
            "aws_secret_access_key": moto.secret_key, **extra}


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket = new_bucket(s3_client(moto_s3))
    cfg = {
        "auth": {"keys": [{"key": KEY_A, "tenant": "team-a"}, {"key": KEY_B, "tenant": "team-b"}]},
        "server": {"expiry_sweep_interval": "200ms"},
        "providers": [
            bedrock_provider("bedrock", bucket, moto_s3, prefix=PREFIX),
            bedrock_provider("bedrock-nova", bucket, moto_s3, prefix=PREFIX, model=NOVA),
            bedrock_provider("bedrock-small", bucket, moto_s3, max_file_size="12MiB"),
            bedrock_provider("bedrock-bigparts", bucket, moto_s3, upload_chunk_size="6MiB"),
            bedrock_provider("bedrock-nowhere", bucket, MotoS3("http://127.0.0.1:9"),
                             timeouts={"connect": "1s", "read": "2s"}, max_retries=0),  # nothing listens
            {"name": "local", "type": "local", "path": "./files"},
        ],
        "default_provider": "bedrock",
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("bedrock-gw"), cfg)
    with gw:
        yield Env(gw, moto_s3, bucket)


# -- the five operations ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1_500_000, 11 * MiB + 3], ids=["single-put", "multipart"])
def test_five_operations_store_in_s3_with_metadata(env: Env, size: int) -> None:
    c = env.a
    content = os.urandom(size)
    f = c.files.create(file=("my report (v2).bin", content), purpose="user_data")
    assert isinstance(f, openai.types.FileObject)
    assert f.id.startswith("file-")
    assert (f.bytes, f.filename, f.purpose, f.status) == (size, "my report (v2).bin", "user_data", "processed")
    assert abs(f.created_at - time.time()) < 60

    key = f"{PREFIX}team-a/{f.id}/my_report_v2_.bin"
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [key]
    head = env.s3.head_object(Bucket=env.bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ContentType"] == "application/octet-stream"
    assert head["Metadata"] == {"file-id": f.id, "purpose": "user_data", "tenant": "team-a"}
    assert location(env.gw, f.id) == {"bucket": env.bucket, "key": key, "region": env.moto.region,
                                      "etag": head["ETag"]}
    assert pending_uploads(env.s3, env.bucket) == []

    assert c.files.retrieve(f.id) == f
    assert f.id in [x.id for x in c.files.list()]
    assert [x.id for x in c.files.list(purpose="user_data")][:1] == [f.id]
    got = c.files.content(f.id)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(content).hexdigest()
    assert got.response.headers["content-length"] == str(size)

    deleted = c.files.delete(f.id)
    assert isinstance(deleted, openai.types.FileDeleted) and deleted.deleted and deleted.id == f.id
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    for call in (c.files.retrieve, c.files.content, c.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in c.files.list()]


def test_upload_chunk_size_sets_the_part_size(env: Env) -> None:
    data = os.urandom(11 * MiB)
    for provider, parts in (("bedrock", 3), ("bedrock-bigparts", 2)):  # 5 MiB parts, 6 MiB parts
        f = env.a.files.create(file=("p.bin", data), purpose="assistants",
                               extra_headers={"x-tfy-provider-name": provider})
        loc = location(env.gw, f.id)
        assert loc is not None and loc["etag"].strip('"').endswith(f"-{parts}"), loc
        assert env.a.files.content(f.id).content == data
        assert env.a.files.delete(f.id).deleted


def test_list_by_provider_header(env: Env) -> None:
    c = env.a
    mine = c.files.create(file=("s3.txt", b"in s3"), purpose="assistants", extra_headers=BEDROCK)
    nova = c.files.create(file=("nova.txt", b"in s3 too"), purpose="assistants",
                          extra_headers={"x-tfy-provider-name": "bedrock-nova"})
    disk = c.files.create(file=("disk.txt", b"on disk"), purpose="assistants",
                          extra_headers={"x-tfy-provider-name": "local"})
    listed = [x.id for x in c.files.list(extra_headers=BEDROCK)]
    assert mine.id in listed and nova.id not in listed and disk.id not in listed
    assert [x.id for x in c.files.list(extra_headers={"x-tfy-provider-name": "bedrock-nova"})] == [nova.id]
    everything = [x.id for x in c.files.list()]
    assert {mine.id, nova.id, disk.id} <= set(everything)
    for f in (mine, nova, disk):
        assert c.files.delete(f.id).deleted


def test_object_removed_behind_the_gateway(env: Env) -> None:
    c = env.a
    f = c.files.create(file=("gone.txt", b"soon gone"), purpose="assistants")
    [key] = keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/")
    env.s3.delete_object(Bucket=env.bucket, Key=key)
    for call in (c.files.retrieve, c.files.content):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert c.files.delete(f.id).deleted  # already gone upstream: the row goes too
    assert location(env.gw, f.id) is None


def test_empty_file_and_raw_bytes_name(env: Env) -> None:
    f = env.a.files.create(file=io.BytesIO(b""), purpose="assistants")
    assert f.bytes == 0 and f.filename == "upload"
    assert env.a.files.content(f.id).content == b""
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [f"{PREFIX}team-a/{f.id}/upload"]


# -- batch files -----------------------------------------------------------------------------


def test_batch_file_is_stored_as_claude_records(env: Env) -> None:
    c = env.a
    lines = [batch_line("request-1"), batch_line("abc123"),
             batch_line("request-3", {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                                                {"role": "assistant", "content": "hello"},
                                                                {"role": "user", "content": "bye"}]})]
    raw = b"".join(lines)
    f = c.files.create(file=("requests.jsonl", raw), purpose="batch", extra_headers={MODEL_HEADER: CLAUDE})
    assert isinstance(f, openai.types.FileObject)
    assert f.purpose == "batch" and f.filename == "requests.jsonl"
    key = f"{PREFIX}team-a/{f.id}/requests.jsonl"
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [key]
    head = env.s3.head_object(Bucket=env.bucket, Key=key)
    assert head["ContentType"] == "application/jsonl"
    assert head["Metadata"] == {"file-id": f.id, "purpose": "batch", "tenant": "team-a"}
    assert f.bytes == head["ContentLength"] != len(raw)  # bytes = what is stored: the translated rows

    stored = c.files.content(f.id).content
    assert stored == object_bytes(env.s3, env.bucket, key) and len(stored) == f.bytes
    rows = [orjson.loads(line) for line in stored.splitlines()]
    assert [set(r) for r in rows] == [{"recordId", "modelInput"}] * 3
    # "request-1" is not alphanumeric: rewritten to R + line number; "abc123" is kept.
    assert [r["recordId"] for r in rows] == ["R0000000001", "abc123", "R0000000003"]
    first = rows[0]["modelInput"]
    assert first["anthropic_version"] == "bedrock-2023-05-31"
    assert first["max_tokens"] == 16 and first["temperature"] == 0.2
    assert first["system"] == "Be brief."
    assert first["messages"][0]["role"] == "user"
    assert "model" not in first
    assert [m["role"] for m in rows[2]["modelInput"]["messages"]] == ["user", "assistant", "user"]
    assert location(env.gw, f.id) == {
        "bucket": env.bucket, "key": key, "region": env.moto.region, "etag": head["ETag"],
        "model": CLAUDE, "invocation_type": "InvokeModel",
        "ids": {"R0000000001": "request-1", "R0000000003": "request-3"},
        "batch_url": "/v1/chat/completions",  # the lines' endpoint, which batches.create checks
    }
    assert [x.id for x in c.files.list(purpose="batch")][:1] == [f.id]
    assert c.files.delete(f.id).deleted
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == []


def test_batch_for_nova_uses_the_configured_model_and_ends_in_jsonl(env: Env) -> None:
    c = env.a
    # The filename check is batch_jsonl's (case-insensitive); the key always ends in a lowercase
    # ".jsonl" (Bedrock reads only *.jsonl inputs).
    f = c.files.create(file=("Req.JSONL", batch_line("a1") + batch_line("b2")), purpose="batch",
                       extra_headers={"x-tfy-provider-name": "bedrock-nova"})
    loc = location(env.gw, f.id)
    assert loc is not None and loc["model"] == NOVA and loc["invocation_type"] == "InvokeModel"
    assert "ids" not in loc  # both ids are alphanumeric: carried unchanged
    assert loc["key"] == f"{PREFIX}team-a/{f.id}/Req.jsonl"
    rows = [orjson.loads(line) for line in c.files.content(f.id).content.splitlines()]
    assert [r["recordId"] for r in rows] == ["a1", "b2"]
    body = rows[0]["modelInput"]
    assert body["schemaVersion"] == "messages-v1"
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "2+2?"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 16, "temperature": 0.2}
    # A Llama model from the header wins over the configured Nova and needs a Converse job.
    g = c.files.create(file=("l.jsonl", batch_line("x")), purpose="batch",
                       extra_headers={"x-tfy-provider-name": "bedrock-nova",
                                      MODEL_HEADER: "us.meta.llama3-1-8b-instruct-v1:0"})
    assert location(env.gw, g.id)["invocation_type"] == "Converse"  # type: ignore[index]


def test_batch_without_a_usable_model_is_400_and_stores_nothing(env: Env) -> None:
    bucket = env.fresh_bucket()
    raw = batch_line("r1")
    with pytest.raises(openai.BadRequestError) as e:  # no header, no configured model
        env.a.files.create(file=("b.jsonl", raw), purpose="batch", extra_headers={BUCKET_HEADER: bucket})
    assert (e.value.body["code"], e.value.body["param"]) == ("missing_model", MODEL_HEADER)
    assert MODEL_HEADER in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", raw), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket, MODEL_HEADER: "cohere.command-r-v1:0"})
    assert (e.value.body["code"], e.value.body["param"]) == ("unsupported_model", MODEL_HEADER)
    assert "cohere.command-r-v1:0" in e.value.body["message"]
    assert e.value.response.headers["x-should-retry"] == "false"
    # A big file is refused at the file part's start too: no byte reaches S3.
    with pytest.raises(openai.BadRequestError):
        env.a.files.create(file=("b.jsonl", raw * 200_000), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket, MODEL_HEADER: "mistral.mistral-large-2402-v1:0"})
    assert keys(env.s3, bucket) == [] and pending_uploads(env.s3, bucket) == []


def test_untranslatable_batch_line_is_400_and_leaves_no_upload(env: Env) -> None:
    bucket = env.fresh_bucket()
    rows = store_rows(env.gw)
    # Enough good lines (~12 MiB translated) that two 5 MiB parts are in S3 before line 3001.
    long_chat = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}
    good = b"".join(batch_line(f"r{i}", long_chat) for i in range(3000))
    bad = batch_line("r-bad", {**CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", good + bad + batch_line("r-last")), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket, MODEL_HEADER: CLAUDE})
    err = e.value.body
    assert err["code"] == "invalid_batch_file" and err["param"] == "file"
    assert "line 3001" in err["message"] and "body.messages[0].content[0].image_url.url" in err["message"], err
    assert e.value.response.headers["x-should-retry"] == "false"
    assert wait_until(lambda: pending_uploads(env.s3, bucket) == [])  # AbortMultipartUpload
    assert keys(env.s3, bucket) == []
    # The last line, unterminated, is translated at the end: still checked.
    n2 = batch_line("r-x", {**CHAT, "n": 2}).rstrip(b"\n")
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("b.jsonl", batch_line("r-y") + n2), purpose="batch",
                           extra_headers={BUCKET_HEADER: bucket, MODEL_HEADER: CLAUDE})
    assert "line 2" in e.value.body["message"] and "body.n" in e.value.body["message"]
    assert keys(env.s3, bucket) == [] and pending_uploads(env.s3, bucket) == []
    assert store_rows(env.gw) == rows


def _raw_upload(gw: GatewayProcess, parts: list[tuple[str, str | None, bytes]],
                headers: dict[str, str] | None = None) -> httpx.Response:
    return raw_upload(gw, parts, headers, api_key=KEY_A)


def test_late_purpose_batch_is_translated_like_purpose_first(env: Env) -> None:
    bucket = env.fresh_bucket()
    to_bucket = {BUCKET_HEADER: bucket, MODEL_HEADER: CLAUDE}
    raw = batch_line("request-1") + batch_line("abc123")
    first = env.a.files.create(file=("b.jsonl", raw), purpose="batch", extra_headers=to_bucket)
    # curl's order: the file is held until its purpose arrives, then streamed in as a batch file.
    r = _raw_upload(env.gw, [("file", "b.jsonl", raw), ("purpose", None, b"batch")], to_bucket)
    assert r.status_code == 200, r.text
    late = r.json()
    assert (late["purpose"], late["bytes"]) == ("batch", first.bytes)
    assert env.a.files.content(late["id"]).content == env.a.files.content(first.id).content
    loc_first, loc_late = location(env.gw, first.id), location(env.gw, late["id"])
    assert loc_first is not None and loc_late is not None
    assert {k: loc_late[k] for k in ("model", "invocation_type", "ids")} == \
        {k: loc_first[k] for k in ("model", "invocation_type", "ids")}
    head = env.s3.head_object(Bucket=bucket, Key=loc_late["key"])
    assert head["Metadata"]["purpose"] == "batch" and head["ContentType"] == "application/jsonl"
    assert loc_late["etag"] == head["ETag"]


def test_late_purpose_batch_needs_a_model_like_purpose_first(env: Env) -> None:
    bucket = env.fresh_bucket()
    r = _raw_upload(env.gw, [("file", "b.jsonl", batch_line("r1")), ("purpose", None, b"batch")],
                    {BUCKET_HEADER: bucket, MODEL_HEADER: "cohere.command-r-v1:0"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_model", r.text
    assert keys(env.s3, bucket) == [] and pending_uploads(env.s3, bucket) == []


def test_late_purpose_batch_with_a_bad_line_leaves_nothing(env: Env) -> None:
    bucket = env.fresh_bucket()
    rows = store_rows(env.gw)
    # ~12 MiB of good lines, so S3 has parts before the bad line (a duplicate custom_id) arrives.
    long_chat = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}
    good = b"".join(batch_line(f"r{i}", long_chat) for i in range(3000))
    bad = batch_line("r0")
    r = _raw_upload(env.gw, [("file", "b.jsonl", good + bad), ("purpose", None, b"batch")],
                    {BUCKET_HEADER: bucket, MODEL_HEADER: CLAUDE})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_batch_file", r.text
    assert "line 3001" in r.json()["error"]["message"]
    assert keys(env.s3, bucket) == [] and pending_uploads(env.s3, bucket) == []
    assert store_rows(env.gw) == rows


def test_late_purpose_other_than_batch_is_stored_as_sent(env: Env) -> None:
    bucket = env.fresh_bucket()
    r = _raw_upload(env.gw, [("file", "n.txt", b"notes"), ("purpose", None, b"user_data")], {BUCKET_HEADER: bucket})
    assert r.status_code == 200, r.text
    [key] = keys(env.s3, bucket)
    head = env.s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["purpose"] == "user_data"
    assert location(env.gw, r.json()["id"])["etag"] == head["ETag"]  # type: ignore[index]
    assert env.a.files.content(r.json()["id"]).content == b"notes"


# -- per-request overrides -------------------------------------------------------------------


def test_bucket_header_puts_the_object_into_another_bucket(env: Env) -> None:
    other = env.fresh_bucket()
    f = env.a.files.create(file=("o.txt", b"elsewhere"), purpose="user_data", extra_headers={BUCKET_HEADER: other})
    assert keys(env.s3, other) == [f"{PREFIX}team-a/{f.id}/o.txt"]
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == []
    assert location(env.gw, f.id)["bucket"] == other  # type: ignore[index]
    # The id finds its bucket by itself.
    assert env.a.files.retrieve(f.id).id == f.id
    assert env.a.files.content(f.id).content == b"elsewhere"
    assert env.a.files.delete(f.id).deleted
    assert keys(env.s3, other) == []


def test_region_header_is_recorded_and_followed(env: Env) -> None:
    f = env.a.files.create(file=("r.txt", b"regional"), purpose="user_data",
                           extra_headers={REGION_HEADER: "eu-west-1"})
    loc = location(env.gw, f.id)
    assert loc is not None and loc["region"] == "eu-west-1"
    assert object_bytes(env.s3, loc["bucket"], loc["key"]) == b"regional"
    assert env.a.files.retrieve(f.id).id == f.id
    assert env.a.files.content(f.id).content == b"regional"
    assert env.a.files.delete(f.id).deleted
    assert keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == []


@pytest.mark.parametrize("header,value,code", [
    (BUCKET_HEADER, "Bad_Bucket", "invalid_bucket_name"),
    (BUCKET_HEADER, "ab", "invalid_bucket_name"),
    (BUCKET_HEADER, "192.168.1.1", "invalid_bucket_name"),
    (BUCKET_HEADER, "my..bucket", "invalid_bucket_name"),
    (REGION_HEADER, "us east 1", "invalid_region"),
    (MODEL_HEADER, "claude haiku", "invalid_model"),
])
def test_invalid_override_headers_are_400(env: Env, header: str, value: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data", extra_headers={header: value})
    assert (e.value.body["code"], e.value.body["param"]) == (code, header)


def test_missing_bucket_from_header_is_404(env: Env) -> None:
    for size in (10, 6 * MiB):  # PutObject, and CreateMultipartUpload
        with pytest.raises(openai.NotFoundError) as e:
            env.a.files.create(file=("x.txt", b"x" * size), purpose="user_data",
                               extra_headers={BUCKET_HEADER: f"no-such-{uuid.uuid4().hex[:8]}"})
        assert e.value.body["code"] == "bucket_not_found" and e.value.body["param"] == BUCKET_HEADER


def test_unreachable_s3_is_502_without_details(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("x.txt", b"x"), purpose="user_data",
                           extra_headers={"x-tfy-provider-name": "bedrock-nowhere"})
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable", e.value.body
    assert e.value.response.headers["x-should-retry"] == "true"
    assert "127.0.0.1" not in e.value.body["message"] and "testing" not in e.value.body["message"]
    assert "testing" not in env.gw.log()  # the provider's keys never reach a log line


# -- aborted uploads leave nothing -----------------------------------------------------------


def test_client_disconnect_mid_upload_leaves_nothing(env: Env) -> None:
    bucket = env.fresh_bucket()
    rows = store_rows(env.gw)
    head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n{BUCKET_HEADER}: {bucket}\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {40 * MiB}\r\n\r\n"
            '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            '--zz\r\nContent-Disposition: form-data; name="file"; filename="p.bin"\r\n\r\n').encode()
    with socket.create_connection(("127.0.0.1", env.gw.port)) as s:
        s.sendall(head + b"\2" * (12 * MiB))  # two full 5 MiB parts and some
        # The multipart upload is under way before the client goes.
        assert wait_until(lambda: len(pending_uploads(env.s3, bucket)) == 1)
    assert wait_until(lambda: pending_uploads(env.s3, bucket) == [])
    assert keys(env.s3, bucket) == []
    assert store_rows(env.gw) == rows
    assert "p.bin" not in [f.filename for f in env.a.files.list()]


def test_size_limit_mid_stream_leaves_nothing(env: Env) -> None:
    bucket = env.fresh_bucket()
    rows = store_rows(env.gw)
    headers = {"x-tfy-provider-name": "bedrock-small", BUCKET_HEADER: bucket,
               "Content-Type": "multipart/form-data; boundary=xx", "Authorization": f"Bearer {KEY_A}"}
    started = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the running count can stop it
        yield b'--xx\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
        for i in range(16 * 4):  # 16 MiB in 256 KiB pieces; the limit is 12 MiB
            if i == 44:  # 11 MiB sent: two parts are in S3
                started.append(wait_until(lambda: len(pending_uploads(env.s3, bucket)) == 1))
            yield b"\1" * (256 << 10)
        yield b"\r\n--xx--\r\n"

    r = httpx.post(env.gw.base_url + "/files", content=chunks(), headers=headers, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large", r.text
    assert started == [True]
    assert wait_until(lambda: pending_uploads(env.s3, bucket) == [])
    assert keys(env.s3, bucket) == []
    # With a Content-Length within the allowance for form fields the body is read until the
    # running count passes the limit.
    with pytest.raises(openai.APIStatusError) as e:
        env.a.files.create(file=("big.bin", b"\0" * (12 * MiB + 512 * 1024)), purpose="assistants",
                           extra_headers={"x-tfy-provider-name": "bedrock-small", BUCKET_HEADER: bucket})
    assert e.value.status_code == 413
    assert wait_until(lambda: pending_uploads(env.s3, bucket) == [])
    assert keys(env.s3, bucket) == []
    assert store_rows(env.gw) == rows


class StalledS3:
    """A loopback "S3" that holds the first ``ListMultipartUploads`` after :meth:`arm` unanswered
    until :meth:`release`, and closes every other connection at once: a provider pointed here
    holds the janitor in the middle of a pass, after it read the live reservations."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.listings = 0                       # ListMultipartUploads requests seen
        self.held: socket.socket | None = None
        self._armed = self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def arm(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._armed = False
        if self.held is not None:
            self.held.close()

    def close(self) -> None:
        self._stop = True
        self.release()
        self._thread.join(10)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    piece = conn.recv(4096)
                    if not piece:
                        break
                    head += piece
            except OSError:
                pass
            listing = b"?uploads" in head.split(b"\r\n", 1)[0]
            self.listings += listing
            if listing and self._armed and self.held is None:
                self.held = conn                # the janitor waits here
            else:
                conn.close()


def read_answer(conn: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: its status and body."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        piece = conn.recv(65536)
        assert piece, f"connection closed after {raw[:500]!r}"
        raw += piece
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = int(next(v for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.strip().lower() == "content-length"))
    while len(body) < length:
        piece = conn.recv(65536)
        assert piece, "connection closed mid-answer"
        body += piece
    return int(lines[0].split()[1]), body


def test_janitor_leaves_an_upload_begun_during_its_pass_alone(moto_s3: MotoS3, start_gateway) -> None:  # noqa: F811
    """The janitor reads the live reservations, then lists each provider's multipart uploads:
    one begun in between is listed without its owner. moto reports every upload as begun in
    2010 (so its age protects nothing), which made multipart uploads of this module fail under
    load with a 502 (moto's 500 to an UploadPart of the aborted upload). The upload must
    survive that pass and the next ones."""
    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    stalled = StalledS3()
    try:
        # Providers are swept in order: the stalled one holds a pass open before bedrock's turn.
        gw = start_gateway({"server": {"expiry_sweep_interval": "100ms"}, "providers": [
            bedrock_provider("bedrock-stalled", bucket, MotoS3(stalled.url), max_retries=0,
                             timeouts={"connect": "5s", "read": "60s"}),
            bedrock_provider("bedrock", bucket, moto_s3)], "default_provider": "bedrock"})
        stalled.arm()
        assert wait_until(lambda: stalled.held is not None, timeout=30)    # a pass has read the owners
        size = 11 * MiB
        head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
                f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {size + 200}\r\n\r\n"
                '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
                '--zz\r\nContent-Disposition: form-data; name="file"; filename="j.bin"\r\n\r\n').encode()
        tail = b"\r\n--zz--\r\n"
        pad = size + 200 - (len(head) - head.index(b"\r\n\r\n") - 4) - len(tail)  # the body's own length
        data = os.urandom(pad)
        with socket.create_connection(("127.0.0.1", gw.port)) as c:
            c.sendall(head + data[:6 * MiB])           # the multipart upload begins
            assert wait_until(lambda: len(pending_uploads(s3, bucket)) == 1, timeout=30)
            seen = stalled.listings
            stalled.release()                          # that pass now lists bedrock's uploads
            assert wait_until(lambda: stalled.listings >= seen + 3, timeout=30)  # and later passes too
            c.sendall(data[6 * MiB:] + tail)
            c.settimeout(60)
            status, body = read_answer(c)
        assert status == 200, body[:2000]
        f = orjson.loads(body)
        loc = location(gw, f["id"])
        assert loc is not None and object_bytes(s3, bucket, loc["key"]) == data
        assert pending_uploads(s3, bucket) == []
    finally:
        stalled.close()


# -- tenancy and expiry ----------------------------------------------------------------------


def test_another_tenants_id_is_404(env: Env) -> None:
    f = env.a.files.create(file=("mine.txt", b"team a only"), purpose="user_data")
    [key] = keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/")
    etag = env.s3.head_object(Bucket=env.bucket, Key=key)["ETag"]
    for call in (env.b.files.retrieve, env.b.files.content, env.b.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in env.b.files.list()]
    assert env.s3.head_object(Bucket=env.bucket, Key=key)["ETag"] == etag  # untouched
    assert env.a.files.content(f.id).content == b"team a only"
    g = env.b.files.create(file=("theirs.txt", b"b"), purpose="user_data")
    assert len(keys(env.s3, env.bucket, f"{PREFIX}team-b/{g.id}/")) == 1


def test_expired_file_is_removed_from_the_bucket(env: Env) -> None:
    f = env.a.files.create(file=("e.txt", b"expiring"), purpose="user_data",
                           expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    expire_now(env.gw, f.id)
    assert wait_until(lambda: keys(env.s3, env.bucket, f"{PREFIX}team-a/{f.id}/") == [])
    assert wait_until(lambda: location(env.gw, f.id) is None)


# -- units: naming rules, part size, error mapping, client cache ------------------------------


@pytest.mark.parametrize("name,ok", [
    ("my-bucket", True), ("abc", True), ("bucket.example.com", True), ("a" * 63, True),
    ("ab", False), ("a" * 64, False), ("My-Bucket", False), ("my_bucket", False), ("-bucket", False),
    ("bucket-", False), ("my..bucket", False), ("10.0.0.1", False), ("xn--bucket", False),
    ("sthree-b", False), ("b-s3alias", False), ("b--ol-s3", False),
])
def test_bucket_name_rules(name: str, ok: bool) -> None:
    assert (bucket_name_problem(name) is None) is ok


class _Ex:
    def __init__(self, size_limit: int | None) -> None:
        self.size_limit = size_limit


def test_part_size_keeps_uploads_within_10000_parts() -> None:
    p = _provider()
    assert p.part_size(_Ex(512 * MiB), batch=False) == MIN_PART_SIZE
    assert p.part_size(_Ex(None), batch=True) == MIN_PART_SIZE
    for limit in (50 << 30, 1 << 40):
        size = p.part_size(_Ex(limit), batch=False)
        assert size % MiB == 0 and -(-limit // size) <= 9_000
    assert _provider(upload_chunk_size=16 * MiB).part_size(_Ex(512 * MiB), batch=False) == 16 * MiB
    for bad in (MIN_PART_SIZE - 1, (5 << 30) + 1):
        with pytest.raises(ValueError, match="upload_chunk_size"):
            _provider(upload_chunk_size=bad)


def _provider(**extra: Any) -> BedrockProvider:
    return BedrockProvider(BedrockConfig(name="br", bucket="b", region="us-east-1", **extra))


def _wrapped(exc: S3StorageError, cause: BaseException) -> S3StorageError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("exc,status,code,retry", [
    (S3NotFound("S3 HeadObject failed: HTTP 404 404", code="404", status=404), 502, "upstream_error", False),
    (S3StorageError("S3 PutObject failed: HTTP 403 AccessDenied", code="AccessDenied", status=403),
     502, "upstream_auth_failed", False),
    (S3StorageError("S3 PutObject failed: HTTP 403 InvalidAccessKeyId", code="InvalidAccessKeyId", status=403),
     502, "upstream_auth_failed", False),
    (_wrapped(S3StorageError("S3 PutObject failed: NoCredentialsError"), NoCredentialsError()),
     502, "upstream_auth_failed", False),
    (S3StorageError("S3 UploadPart failed: HTTP 503 SlowDown", code="SlowDown", status=503),
     503, "upstream_throttled", True),
    (S3StorageError("S3 UploadPart failed: HTTP 429 TooManyRequests", code="TooManyRequests", status=429),
     429, "rate_limit_exceeded", True),
    (_wrapped(S3StorageError("S3 UploadPart failed: ReadTimeoutError"), ReadTimeoutError(endpoint_url="http://h")),
     504, "upstream_timeout", True),
    (_wrapped(S3StorageError("S3 PutObject failed: ConnectTimeoutError"),
              ConnectTimeoutError(endpoint_url="http://h")), 504, "upstream_timeout", True),
    (S3StorageError("S3 UploadPart failed: HTTP 400 RequestTimeout", code="RequestTimeout", status=400),
     504, "upstream_timeout", True),
    (S3StorageError("S3 CompleteMultipartUpload failed: HTTP 400 EntityTooSmall", code="EntityTooSmall",
                    status=400), 502, "upstream_error", False),
    (S3StorageError("S3 UploadPart failed: HTTP 500 InternalError", code="InternalError", status=500),
     502, "upstream_error", True),
    (S3StorageError("S3 PutObject failed: HTTP 404 NoSuchBucket", code="NoSuchBucket", status=404),
     502, "upstream_bucket_not_found", False),
    (S3StorageError("upload exceeds S3's 10000 parts; use a larger part_size"), 413, "file_too_large", False),
])
def test_s3_errors_become_openai_errors(exc: S3StorageError, status: int, code: str, retry: bool) -> None:
    err = _provider().s3_error(exc, "upload", target=Target("b", False, "us-east-1", None))
    assert isinstance(err, GatewayError)
    assert (err.status, err.code, err.retryable) == (status, code, retry), err
    if status in (429, 503):
        assert err.headers["Retry-After"]


def test_s3_not_found_for_a_file_is_404() -> None:
    p = _provider()
    for exc in (S3NotFound("S3 GetObject failed: HTTP 404 NoSuchKey", code="NoSuchKey", status=404),
                S3StorageError("S3 DeleteObject failed: HTTP 404 NoSuchBucket", code="NoSuchBucket", status=404)):
        err = p.s3_error(exc, "download", file_id="file-abc")
        assert (err.status, err.code, err.param) == (404, "file_not_found", "file_id")
    err = p.s3_error(S3StorageError("S3 PutObject failed: HTTP 404 NoSuchBucket", code="NoSuchBucket", status=404),
                     "upload", target=Target("other-bucket", True, "us-east-1", None))
    assert (err.status, err.code, err.param) == (404, "bucket_not_found", BUCKET_HEADER)


async def test_expire_file_deletes_and_region_clients_are_bounded(moto_s3: MotoS3) -> None:  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="t/file-x/a.txt", Body=b"a")
    p = _provider(endpoint_url=moto_s3.endpoint_url, aws_access_key_id=moto_s3.access_key,
                  aws_secret_access_key=moto_s3.secret_key)
    await p.start()
    try:
        rec = FileRecord(id="file-x", tenant="t", provider="br", filename="a.txt", purpose="user_data", bytes=1,
                         created_at=0, location={"bucket": bucket, "key": "t/file-x/a.txt", "region": "us-east-1"})
        await p.expire_file(rec)
        assert keys(s3, bucket) == []
        # Leases on many regions: idle clients beyond the cache size are closed, busy ones kept.
        regions = [f"eu-test-{i}" for i in range(12)]
        held = p.lease(regions[0])
        await held.acquire()
        for region in regions[1:]:
            async with p.lease(region) as c:
                assert c is not None
        assert len(p._clients) <= 8
        assert "us-east-1" in p._clients and regions[0] in p._clients
        await held.release()
        await held.release()  # idempotent
    finally:
        await p.close()
    assert p._clients == {}


# -- memory ------------------------------------------------------------------------------------

SIZE = 512 << 20
BUDGET = 64 << 20


def test_512mib_upload_to_s3_keeps_gateway_memory_flat(moto_s3: MotoS3, start_gateway, tmp_path) -> None:  # noqa: F811
    s3 = s3_client(moto_s3)
    bucket = new_bucket(s3)
    src = tmp_path / "big.bin"
    digest = make_big_file(src, SIZE)
    gw = start_gateway({"providers": [bedrock_provider("bedrock", bucket, moto_s3)]})
    c = client(gw, timeout=300)
    c.files.create(file=("warm.txt", b"warm up the S3 client"), purpose="assistants")
    idle = gw.rss()
    gw.reset_peak_rss()
    t0 = time.monotonic()
    with open(src, "rb") as fh:
        f = c.files.create(file=fh, purpose="assistants")
    upload_s = time.monotonic() - t0
    up_peak = gw.peak_rss()
    assert f.bytes == SIZE
    loc = location(gw, f.id)
    assert loc is not None
    assert s3.head_object(Bucket=bucket, Key=loc["key"])["ContentLength"] == SIZE
    assert pending_uploads(s3, bucket) == []

    gw.reset_peak_rss()
    h = hashlib.sha256()
    t0 = time.monotonic()
    with c.files.with_streaming_response.content(f.id) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            h.update(chunk)
    download_s = time.monotonic() - t0
    down_peak = gw.peak_rss()
    assert h.hexdigest() == digest
    print(f"\n512 MiB via bedrock/moto: upload {upload_s:.1f}s, peak RSS +{(up_peak - idle) / MiB:.1f} MiB; "
          f"download {download_s:.1f}s, peak RSS +{(down_peak - idle) / MiB:.1f} MiB")
    assert up_peak - idle < BUDGET, f"upload raised peak RSS by {(up_peak - idle) >> 20} MiB"
    assert down_peak - idle < BUDGET, f"download raised peak RSS by {(down_peak - idle) >> 20} MiB"
    c.files.delete(f.id)  # free moto's memory
