"""The Uploads API on the S3-backed types (moto_server): each part is an object
``{prefix}uploads/<upload_id>/<part_id>`` in the bucket while the upload is pending (never on the
gateway's disk), and ``complete`` assembles them inside S3 (``UploadPartCopy``) into the object
files.create would have made; a ``batch`` file is read back from the part objects through
files.create's path instead (``bedrock``: translated line by line across parts). Complete and
cancel leave no part object behind."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import client
from tests.emulator_s3 import MotoS3, moto_s3  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.support import db_rows, wait_until
from tests.test_bedrock_files import batch_line, bedrock_provider, keys, new_bucket, object_bytes, pending_uploads, s3_client
from tests.test_s3_files import s3_provider
from tests.test_uploads import payload

MiB = 1 << 20


class Env:
    def __init__(self, gw: GatewayProcess, moto: MotoS3, bucket: str) -> None:
        self.gw, self.moto, self.bucket = gw, moto, bucket
        self.s3 = s3_client(moto)
        self.c = client(gw)

    def part_objects(self, prefix: str, upload_id: str = "") -> list[str]:
        return keys(self.s3, self.bucket, f"{prefix}uploads/{upload_id}")

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
        "server": {"expiry_sweep_interval": "1s"},
        "limits": {"max_upload_size": 2 << 30},  # an Upload may exceed max_file_size (the 1 GiB test)
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("uploads-s3-gw"), cfg)
    with gw:
        yield Env(gw, moto_s3, bucket)


def test_s3_parts_are_bucket_objects_composed_into_the_file(env: Env, tmp_path) -> None:
    data = payload(11 * MiB + 5)  # parts of 3 MiB: below S3's 5 MiB part minimum, so coalesced
    sha = hashlib.sha256(data).hexdigest()
    up = env.c.uploads.create(bytes=len(data), filename="big.bin", mime_type="application/octet-stream",
                              purpose="user_data")
    ids = [env.c.uploads.parts.create(up.id, data=data[i:i + 3 * MiB]).id for i in range(0, len(data), 3 * MiB)]
    # Pending: the parts are objects in the bucket, one per part, nothing on the gateway's disk.
    assert sorted(k.rsplit("/", 1)[1] for k in env.part_objects("s3/", up.id)) == sorted(ids)
    assert env.spooled_parts() == []
    with pytest.raises(openai.BadRequestError) as e:  # a wrong md5: nothing composed, still pending
        env.c.uploads.complete(up.id, part_ids=ids, md5="0" * 32)
    assert e.value.body["code"] == "md5_mismatch" and len(env.part_objects("s3/", up.id)) == len(ids)
    done = env.c.uploads.complete(up.id, part_ids=ids, md5=hashlib.md5(data).hexdigest())
    f = done.file
    assert done.status == "completed" and f is not None and f.bytes == len(data)
    assert hashlib.sha256(env.c.files.content(f.id).content).hexdigest() == sha
    [key] = [k for k in keys(env.s3, env.bucket, "s3/") if f.id in k]
    assert key == f"s3/default/{f.id}/big.bin"   # where files.create puts a file
    assert hashlib.sha256(object_bytes(env.s3, env.bucket, key)).hexdigest() == sha
    assert env.part_objects("s3/") == [] and pending_uploads(env.s3, env.bucket) == []
    assert db_rows(env.gw, "SELECT COUNT(*) FROM upload_parts") == [(0,)]
    env.c.files.delete(f.id)
    assert [k for k in keys(env.s3, env.bucket) if f.id in k] == []


def test_s3_upload_file_chunked_and_cancel_leave_no_part_object(env: Env, tmp_path) -> None:
    data = payload(6 * MiB + 1)
    src = tmp_path / "chunked.bin"
    src.write_bytes(data)
    up = env.c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="user_data",
                                           part_size=2 * MiB)
    assert hashlib.sha256(env.c.files.content(up.file.id).content).digest() == hashlib.sha256(data).digest()
    u = env.c.uploads.create(bytes=10, filename="x.bin", mime_type="application/octet-stream", purpose="user_data")
    env.c.uploads.parts.create(u.id, data=b"01234")
    assert len(env.part_objects("s3/", u.id)) == 1
    assert env.c.uploads.cancel(u.id).status == "cancelled"
    assert env.part_objects("s3/") == [] and pending_uploads(env.s3, env.bucket) == []
    env.c.files.delete(up.file.id)


def test_expiry_removes_parts_in_the_bucket_each_was_written_to(env: Env) -> None:
    """The sweeper has no request to choose a bucket: it deletes each part by its recorded
    bucket (here one a header chose, not the configured one)."""
    other = new_bucket(env.s3)
    c = client(env.gw, default_headers={"x-tfy-provider-name": "bedrock", "x-tfy-aws-s3-bucket": other})
    up = c.uploads.create(bytes=10, filename="x.bin", mime_type="application/octet-stream", purpose="user_data")
    c.uploads.parts.create(up.id, data=b"01234")
    assert len(keys(env.s3, other, f"bedrock/uploads/{up.id}/")) == 1 and env.part_objects("bedrock/") == []
    db_rows(env.gw, "UPDATE uploads SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, up.id))
    assert wait_until(lambda: db_rows(env.gw, "SELECT status FROM uploads WHERE id = ?", (up.id,)) == [("expired",)],
                      timeout=30)
    assert wait_until(lambda: keys(env.s3, other, "bedrock/uploads/") == [], timeout=30)
    assert db_rows(env.gw, "SELECT COUNT(*) FROM upload_parts WHERE upload_id = ?", (up.id,)) == [(0,)]


def test_sweeps_keep_a_pending_uploads_parts_and_remove_leftovers(env: Env) -> None:
    """A part still streaming is an S3 multipart upload under ``{prefix}uploads/<upload id>/``:
    the upload's reservation owns it, so the janitor's sweep of unowned multipart uploads
    (every second here; moto dates every multipart upload 2010, so all look stale) keeps it
    while the upload is pending and aborts it once the upload is cancelled. The uploads sweep
    removes part objects no live upload owns, and keeps a pending upload's."""
    def open_ids() -> set[str]:
        return {u["UploadId"] for u in pending_uploads(env.s3, env.bucket)}

    up = env.c.uploads.create(bytes=10, filename="x.bin", mime_type="application/octet-stream", purpose="user_data")
    part = env.c.uploads.parts.create(up.id, data=b"01234")
    # A part object stored by a process that died before recording it: no upload owns it.
    env.s3.put_object(Bucket=env.bucket, Key="s3/uploads/upload_gone/part_y", Body=b"left")
    owned = env.s3.create_multipart_upload(Bucket=env.bucket, Key=f"s3/uploads/{up.id}/part_streaming")["UploadId"]
    stray = env.s3.create_multipart_upload(Bucket=env.bucket, Key="s3/uploads/upload_gone/part_x")["UploadId"]
    assert wait_until(lambda: stray not in open_ids(), timeout=30)   # a sweep ran
    assert wait_until(lambda: env.part_objects("s3/", "upload_gone/") == [], timeout=30)
    assert owned in open_ids() and env.part_objects("s3/", up.id) == [f"s3/uploads/{up.id}/{part.id}"]
    env.c.uploads.cancel(up.id)
    assert wait_until(lambda: owned not in open_ids(), timeout=30)


def test_bedrock_batch_upload_translated_like_a_single_upload(env: Env) -> None:
    lines = b"".join(batch_line(f"r{i}") for i in range(200))
    c = client(env.gw, default_headers={"x-tfy-provider-name": "bedrock"})
    single = c.files.create(file=("in.jsonl", lines), purpose="batch")
    up = c.uploads.upload_file_chunked(file=lines, filename="in.jsonl", bytes=len(lines),
                                       mime_type="application/jsonl", purpose="batch", part_size=777)
    assert up.status == "completed" and env.part_objects("bedrock/") == []
    # The same translated rows as files.create stores (parts cut lines anywhere).
    assert c.files.content(up.file.id).content == c.files.content(single.id).content
    assert up.file.bytes == single.bytes
    # A bad line in a later part: refused with its line number in the whole file, nothing stored.
    bad = lines + b'{"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    before = keys(env.s3, env.bucket, "bedrock/")
    u = c.uploads.create(bytes=len(bad), filename="in.jsonl", mime_type="application/jsonl", purpose="batch")
    ids = [c.uploads.parts.create(u.id, data=bad[i:i + 5000]).id for i in range(0, len(bad), 5000)]
    assert len(env.part_objects("bedrock/", u.id)) == len(ids)   # in the bucket, not on the disk
    with pytest.raises(openai.BadRequestError) as e:
        c.uploads.complete(u.id, part_ids=ids)
    assert "line 201" in e.value.body["message"]
    files_now = [k for k in keys(env.s3, env.bucket, "bedrock/") if "/uploads/" not in f"/{k}"]
    assert files_now == before and pending_uploads(env.s3, env.bucket) == []
    c.uploads.cancel(u.id)
    assert env.part_objects("bedrock/") == [] and env.spooled_parts() == []


def test_1gib_upload_in_64mib_parts_to_s3_flat_memory(env: Env, tmp_path) -> None:
    """Parts streamed into their objects and composed inside S3 (UploadPartCopy): 1 GiB in 64 MiB
    parts (issue 11) keeps gateway RSS growth under tests/test_memory.py's budget."""
    from tests.fakes.bigfile import make_big_file
    from tests.test_memory import BUDGET

    size = 1024 * MiB
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
