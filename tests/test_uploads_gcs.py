"""The Uploads API on the GCS-backed types (fake-gcs-server): parts wait on the gateway's disk and
``complete`` streams them through files.create's path into the provider's resumable session
(``gcs``: stored as sent; ``vertex``: a ``batch`` file translated across parts)."""
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
    }
    with GatewayProcess(tmp_path_factory.mktemp("uploads-gcs-gw"), cfg) as g:
        yield g, fake_gcs, bucket


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
    spool = g.workdir / "sluicegate-data" / "uploads"
    assert not spool.exists() or list(spool.iterdir()) == []


def test_vertex_batch_upload_translated_like_a_single_upload(gw) -> None:
    from tests.test_bedrock_files import batch_line

    g, _gcs, _bucket = gw
    c = client(g, default_headers={"x-tfy-provider-name": "vertex"})
    lines = b"".join(batch_line(f"r{i}") for i in range(100))
    single = c.files.create(file=("in.jsonl", lines), purpose="batch")
    up = c.uploads.upload_file_chunked(file=lines, filename="in.jsonl", bytes=len(lines),
                                       mime_type="application/jsonl", purpose="batch", part_size=999)
    assert c.files.content(up.file.id).content == c.files.content(single.id).content
