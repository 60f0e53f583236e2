"""The Uploads API on the S3-backed types (moto_server): parts wait on the gateway's disk and
``complete`` streams them through files.create's path into the provider's S3 multipart upload
(``s3``: stored as sent; ``bedrock``: a ``batch`` file translated line by line across parts)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import client
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.support import db_rows
from tests.test_bedrock_files import batch_line, bedrock_provider, keys, new_bucket, object_bytes, pending_uploads, s3_client
from tests.test_s3_files import s3_provider
from tests.test_uploads import payload

MiB = 1 << 20


class Env:
    def __init__(self, gw: GatewayProcess, moto: MotoS3, bucket: str) -> None:
        self.gw, self.moto, self.bucket = gw, moto, bucket
        self.s3 = s3_client(moto)
        self.c = client(gw)

    def spooled_parts(self) -> list[str]:
        root = self.gw.workdir / "sluicegate-data" / "uploads"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def env(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    bucket = new_bucket(s3_client(moto_s3))
    cfg: dict[str, Any] = {
        "providers": [s3_provider("s3", bucket, moto_s3, prefix="s3/"),
                      bedrock_provider("bedrock", bucket, moto_s3, prefix="bedrock/",
                                       model="anthropic.claude-3-haiku-20240307-v1:0")],
        "default_provider": "s3",
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("uploads-s3-gw"), cfg)
    with gw:
        yield Env(gw, moto_s3, bucket)


def test_s3_upload_in_parts_is_one_multipart_object(env: Env, tmp_path) -> None:
    data = payload(11 * MiB + 5)  # more than two of the sink's 5 MiB S3 parts
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    up = env.c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="user_data",
                                           part_size=3 * MiB)
    f = up.file
    assert up.status == "completed" and f is not None and f.bytes == len(data)
    sha = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(env.c.files.content(f.id).content).hexdigest() == sha
    [key] = [k for k in keys(env.s3, env.bucket, "s3/") if f.id in k]
    assert hashlib.sha256(object_bytes(env.s3, env.bucket, key)).hexdigest() == sha
    assert pending_uploads(env.s3, env.bucket) == [] and env.spooled_parts() == []
    assert db_rows(env.gw, "SELECT COUNT(*) FROM upload_parts") == [(0,)]
    env.c.files.delete(f.id)
    assert [k for k in keys(env.s3, env.bucket) if f.id in k] == []


def test_bedrock_batch_upload_translated_like_a_single_upload(env: Env) -> None:
    lines = b"".join(batch_line(f"r{i}") for i in range(200))
    c = client(env.gw, default_headers={"x-tfy-provider-name": "bedrock"})
    single = c.files.create(file=("in.jsonl", lines), purpose="batch")
    up = c.uploads.upload_file_chunked(file=lines, filename="in.jsonl", bytes=len(lines),
                                       mime_type="application/jsonl", purpose="batch", part_size=777)
    assert up.status == "completed"
    # The same translated rows as files.create stores (parts cut lines anywhere).
    assert c.files.content(up.file.id).content == c.files.content(single.id).content
    assert up.file.bytes == single.bytes
    # A bad line in a later part: refused with its line number in the whole file, nothing stored.
    bad = lines + b'{"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    before = keys(env.s3, env.bucket, "bedrock/")
    u = c.uploads.create(bytes=len(bad), filename="in.jsonl", mime_type="application/jsonl", purpose="batch")
    ids = [c.uploads.parts.create(u.id, data=bad[i:i + 5000]).id for i in range(0, len(bad), 5000)]
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(u.id, part_ids=ids)
    assert "line 201" in e.value.body["message"]
    assert keys(env.s3, env.bucket, "bedrock/") == before and pending_uploads(env.s3, env.bucket) == []
    c.uploads.cancel(u.id)
    assert env.spooled_parts() == []


def test_256mib_upload_in_64mib_parts_to_s3_flat_memory(env: Env, tmp_path) -> None:
    """Parts spooled to disk and streamed from it into the S3 multipart upload: gateway RSS
    stays flat (tests/test_memory.py's budget; the 1 GiB of issue 11 runs in bench/uploads.py)."""
    from tests.fakes.bigfile import make_big_file
    from tests.test_memory import BUDGET

    size = 256 * MiB
    src = tmp_path / "big.bin"
    digest = make_big_file(src, size)
    c = client(env.gw, timeout=300)
    idle = env.gw.rss()
    env.gw.reset_peak_rss()
    up = c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="user_data",
                                       part_size=64 * MiB)
    peak = env.gw.peak_rss()
    assert up.file.bytes == size
    [key] = [k for k in keys(env.s3, env.bucket, "s3/") if up.file.id in k]
    body = env.s3.get_object(Bucket=env.bucket, Key=key)["Body"]
    h = hashlib.sha256()
    while chunk := body.read(1 << 20):
        h.update(chunk)
    assert h.hexdigest() == digest
    assert peak - idle < BUDGET, f"the upload raised peak RSS by {(peak - idle) >> 20} MiB"
    c.files.delete(up.file.id)
