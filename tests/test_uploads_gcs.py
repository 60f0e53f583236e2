"""The Uploads API on the GCS-backed types (fake-gcs-server): each part is an object
``{prefix}uploads/<upload_id>/<part_id>`` in the bucket while the upload is pending (never on the
gateway's disk), and ``complete`` assembles them by GCS ``compose`` (rounds of 32) into the object
files.create would have made; a ``batch`` file is read back from the part objects through
files.create's path instead (``vertex``: translated across parts). Complete and cancel leave no
part object behind."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.gateway_proc import GatewayProcess
from tests.test_gcs_files import gcs_provider
from tests.test_uploads import payload
from tests.test_vertex_files import new_bucket, object_bytes, objects, vertex_provider

MiB = 1 << 20


@pytest.fixture(scope="module")
def gw(fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeGCS, str]]:  # noqa: F811
    bucket = new_bucket(fake_gcs)
    cfg: dict[str, Any] = {
        "providers": [gcs_provider("gcs", bucket, fake_gcs, prefix="gcs/"),
                      vertex_provider("vertex", bucket, fake_gcs, prefix="vertex/", model="gemini-2.0-flash-001")],
        "default_provider": "gcs",
        "server": {"expiry_sweep_interval": "1s"},
    }
    with GatewayProcess(tmp_path_factory.mktemp("uploads-gcs-gw"), cfg) as g:
        yield g, fake_gcs, bucket


def part_objects(gcs: FakeGCS, bucket: str, prefix: str, upload_id: str = "") -> list[str]:
    return sorted(o["name"] for o in objects(gcs, bucket, f"{prefix}uploads/{upload_id}"))


def no_spool(g: GatewayProcess) -> bool:
    spool = g.workdir / "sluicegate-data" / "uploads"
    return not spool.exists() or list(spool.iterdir()) == []


def test_gcs_parts_are_bucket_objects_composed_into_the_file(gw) -> None:
    g, gcs, bucket = gw
    c = client(g)
    data = payload(40 * 1000 + 7)  # 41 parts: more than one compose of 32 sources
    up = c.uploads.create(bytes=len(data), filename="big.bin", mime_type="application/octet-stream",
                          purpose="user_data")
    ids = [c.uploads.parts.create(up.id, data=data[i:i + 1000]).id for i in range(0, len(data), 1000)]
    assert len(ids) == 41
    assert [n.rsplit("/", 1)[1] for n in part_objects(gcs, bucket, "gcs/", up.id)] == sorted(ids)
    assert no_spool(g)
    done = c.uploads.complete(up.id, part_ids=ids)
    assert done.status == "completed" and done.file.bytes == len(data)
    assert hashlib.sha256(c.files.content(done.file.id).content).digest() == hashlib.sha256(data).digest()
    [name] = [o["name"] for o in objects(gcs, bucket, "gcs/") if done.file.id in o["name"]]
    assert name == f"gcs/default/{done.file.id}/big.bin"   # where files.create puts a file
    assert part_objects(gcs, bucket, "gcs/") == []          # parts and compose intermediates gone
    u = c.uploads.create(bytes=10, filename="x.bin", mime_type="application/octet-stream", purpose="user_data")
    c.uploads.parts.create(u.id, data=b"01234")
    assert len(part_objects(gcs, bucket, "gcs/", u.id)) == 1
    assert c.uploads.cancel(u.id).status == "cancelled"
    assert part_objects(gcs, bucket, "gcs/") == []
    c.files.delete(done.file.id)


def test_sweep_removes_part_objects_no_live_upload_owns(gw) -> None:
    import httpx2 as httpx

    from tests.support import wait_until

    g, gcs, bucket = gw
    c = client(g)
    up = c.uploads.create(bytes=10, filename="x.bin", mime_type="application/octet-stream", purpose="user_data")
    part = c.uploads.parts.create(up.id, data=b"01234")
    r = httpx.post(f"{gcs.api_root}/upload/storage/v1/b/{bucket}/o",
                   params={"uploadType": "media", "name": "gcs/uploads/upload_gone/part_y"}, content=b"left")
    assert r.status_code == 200, r.text
    assert wait_until(lambda: part_objects(gcs, bucket, "gcs/", "upload_gone/") == [], timeout=30)
    assert part_objects(gcs, bucket, "gcs/", up.id) == [f"gcs/uploads/{up.id}/{part.id}"]
    c.uploads.cancel(up.id)
    assert part_objects(gcs, bucket, "gcs/") == []


def test_gcs_upload_in_parts_is_one_object(gw, tmp_path) -> None:
    g, gcs, bucket = gw
    c = client(g)
    data = payload(9 * MiB + 3)  # more than one of the sink's 8 MiB resumable chunks
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    up = c.uploads.upload_file_chunked(file=src, mime_type="application/octet-stream", purpose="user_data",
                                       part_size=2 * MiB)
    assert up.status == "completed" and up.file.bytes == len(data)
    [name] = [o["name"] for o in objects(gcs, bucket, "gcs/") if up.file.id in o["name"]]
    assert hashlib.sha256(object_bytes(gcs, bucket, name)).digest() == hashlib.sha256(data).digest()
    assert c.files.content(up.file.id).content == data
    assert no_spool(g) and part_objects(gcs, bucket, "gcs/") == []


def test_vertex_batch_upload_translated_like_a_single_upload(gw) -> None:
    from tests.test_bedrock_files import batch_line

    g, gcs, bucket = gw
    c = client(g, default_headers={"x-tfy-provider-name": "vertex"})
    lines = b"".join(batch_line(f"r{i}") for i in range(100))
    single = c.files.create(file=("in.jsonl", lines), purpose="batch")
    up = c.uploads.upload_file_chunked(file=lines, filename="in.jsonl", bytes=len(lines),
                                       mime_type="application/jsonl", purpose="batch", part_size=999)
    assert c.files.content(up.file.id).content == c.files.content(single.id).content
    assert part_objects(gcs, bucket, "vertex/") == []
