"""files.delete is a claim: of concurrent deletes of one id exactly one wins, across workers."""
from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import openai
import pytest

from tests.conftest import client, passthrough_config

OPENAI = {"x-tfy-provider-name": "my-openai"}
CONCURRENT = 8
TRIALS = 5


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.text = status, body.decode(errors="replace")

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.text)


def _fresh(method: str, url: str, barrier: threading.Barrier | None = None) -> Answer:
    # A new connection each time, so SO_REUSEPORT spreads the requests over the workers.
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.connect()
        if barrier is not None:
            barrier.wait(timeout=30)
        conn.request(method, parts.path)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read())
    finally:
        conn.close()


def test_concurrent_deletes_across_workers_have_one_winner(start_gateway):
    gw = start_gateway({"providers": [{"name": "local", "type": "local", "path": "./files"}]}, workers=2)
    c = client(gw)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        for trial in range(TRIALS):
            f = c.files.create(file=(f"t{trial}.txt", b"x" * 100), purpose="assistants")
            url = f"{gw.base_url}/files/{f.id}"
            # Let both workers cache the record first.
            assert all(r.status_code == 200 for r in pool.map(lambda _: _fresh("GET", url), range(CONCURRENT)))
            barrier = threading.Barrier(CONCURRENT)
            answers = list(pool.map(lambda _: _fresh("DELETE", url, barrier), range(CONCURRENT)))
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [200] + [404] * (CONCURRENT - 1), (trial, [r.text for r in answers])
            [won] = [r for r in answers if r.status_code == 200]
            assert won.json() == {"id": f.id, "object": "file", "deleted": True}
            assert {r.json()["error"]["code"] for r in answers if r.status_code == 404} == {"file_not_found"}
            # No worker serves the deleted record from its cache.
            for method, path in (("GET", url), ("GET", url + "/content"), ("DELETE", url)):
                assert {r.status_code for r in pool.map(lambda _: _fresh(method, path), range(4))} == {404}
    assert c.files.list().data == []
    assert sorted(p.name for p in (gw.workdir / "files").iterdir() if p.is_file()) == []


def test_failed_upstream_delete_keeps_the_file(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    f = c.files.create(file=("keep.txt", b"keep"), purpose="user_data", extra_headers=OPENAI)
    fake_openai.fail_next(500, times=3, path=f"/v1/files/{f.id}")  # every retry fails too
    with pytest.raises(openai.APIStatusError) as e:
        c.files.delete(f.id)
    assert e.value.status_code >= 500
    # The claim was undone: the file is still there, listed in its place, and a retry deletes it.
    assert c.files.retrieve(f.id).id == f.id and [x.id for x in c.files.list().data] == [f.id]
    assert f.id in fake_openai.files
    assert c.files.delete(f.id).deleted
    assert f.id not in fake_openai.files and c.files.list().data == []
    with pytest.raises(openai.NotFoundError):
        c.files.delete(f.id)
