"""The one upstream contract (proxy/providers/upstream.py): one timeout model and one retry
policy, the same on the h1 pool (files.retrieve/list, responses) and on the aiohttp path
(files.content, files.create). ``timeouts.read`` is the longest gap between two reads, never a
deadline for the whole answer; ``timeouts.total`` is that deadline, when set.
"""
from __future__ import annotations

import asyncio
import io
import time

import openai
import orjson
import pytest
from aiohttp import web

from tests.conftest import client
from tests.fakes.threaded import ThreadedServer

READ = 1.5          # timeouts.read of every gateway here
STEP = 0.4          # a gap well within READ, even on a loaded machine
STEPS = 6           # ... repeated until the whole answer takes longer than READ


def _file(file_id: str) -> dict:
    return {"id": file_id, "object": "file", "bytes": 3, "created_at": 1, "filename": "a.txt",
            "purpose": "assistants", "status": "processed"}


class Trickle:
    """An upstream that answers in STEPS pieces, ``gap`` seconds apart (after a first ``delay``)."""

    def __init__(self) -> None:
        self.gap = STEP
        self.delay = 0.0
        self.hits = 0
        app = web.Application()
        app.router.add_get("/v1/files/{id}", self.retrieve)
        app.router.add_get("/v1/files/{id}/content", self.content)
        self.server = ThreadedServer(app)

    async def _trickle(self, request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
        self.hits += 1
        await asyncio.sleep(self.delay)
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        size = -(-len(body) // STEPS)
        for i in range(0, len(body), size):
            await resp.write(body[i:i + size])
            await asyncio.sleep(self.gap)
        await resp.write_eof()
        return resp

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        return await self._trickle(request, orjson.dumps(_file(request.match_info["id"])), "application/json")

    async def content(self, request: web.Request) -> web.StreamResponse:
        return await self._trickle(request, b"0123456789" * STEPS, "application/octet-stream")

    def __enter__(self) -> "Trickle":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


@pytest.fixture
def trickle():
    with Trickle() as t:
        yield t


def _config(url: str, **timeouts) -> dict:
    return {"providers": [{"name": "up", "type": "openai", "api_base": url + "/v1", "api_key": "sk-upstream-test",
                           "max_retries": 0, "timeouts": {"connect": "5s", "read": f"{READ}s", **timeouts}}],
            "default_provider": "up"}


# ------------------------------------------------------------------ timeouts.read: a gap, on every path


def test_slow_buffered_answer_with_short_gaps_succeeds(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url))
    t0 = time.monotonic()
    assert client(gw).files.retrieve("file-slow").id == "file-slow"
    assert time.monotonic() - t0 > READ  # the whole answer took longer than timeouts.read


def test_slow_download_with_short_gaps_succeeds(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url))
    t0 = time.monotonic()
    assert client(gw).files.content("file-slow").content == b"0123456789" * STEPS
    assert time.monotonic() - t0 > READ


def test_gap_longer_than_read_on_a_buffered_call_is_a_504(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url))
    trickle.delay = READ + 1.5
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.retrieve("file-stalled")
    assert e.value.status_code == 504 and e.value.response.json()["error"]["code"] == "upstream_timeout"


def test_gap_longer_than_read_before_a_download_is_a_504(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url))
    trickle.delay = READ + 1.5
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.content("file-stalled")
    assert e.value.status_code == 504 and e.value.response.json()["error"]["code"] == "upstream_timeout"


def test_gap_longer_than_read_mid_buffered_answer_is_a_504(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url))
    trickle.gap = READ + 1.5
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.retrieve("file-stalled")
    assert e.value.status_code == 504


def _stream(gw, words: int = STEPS):
    return list(client(gw).responses.create(model="gpt-4o", input=" ".join(["w"] * words), stream=True))


def test_slow_sse_stream_with_short_gaps_succeeds(start_gateway, fake_openai):
    gw = start_gateway(_config(fake_openai.url))
    fake_openai.stream_delay = STEP
    t0 = time.monotonic()
    events = _stream(gw)
    assert events[-1].type == "response.completed"
    assert time.monotonic() - t0 > READ


def test_gap_longer_than_read_on_an_sse_stream_is_a_stream_error(start_gateway, fake_openai):
    gw = start_gateway(_config(fake_openai.url))
    fake_openai.stream_delay = READ + 1.5
    events = _stream(gw)
    assert events[0].type == "response.created" and events[-1].type == "error"
    assert f"no data from the upstream for {READ:g} s" in events[-1].message


# ------------------------------------------------------------------ timeouts.total: the whole answer


def test_total_bounds_a_buffered_answer_whose_gaps_are_short(start_gateway, trickle):
    gw = start_gateway(_config(trickle.server.url, total="1s"))
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.retrieve("file-slow")
    assert e.value.status_code == 504


def test_total_bounds_an_sse_stream_whose_gaps_are_short(start_gateway, fake_openai):
    gw = start_gateway(_config(fake_openai.url, total="1s"))
    fake_openai.stream_delay = STEP
    events = _stream(gw, words=3 * STEPS)
    assert events[-1].type == "error" and "total timeout" in events[-1].message


# ------------------------------------------------------------------ one retry policy


def _retrying(url: str) -> dict:
    cfg = _config(url)
    cfg["providers"][0]["max_retries"] = 2
    return cfg


@pytest.mark.parametrize("path", ["retrieve", "content"])   # the h1 pool, the aiohttp path
def test_idempotent_call_retried_after_retry_after(start_gateway, fake_openai, path):
    f = fake_openai.add_file(b"abc", filename="a.txt", purpose="assistants")
    gw = start_gateway(_retrying(fake_openai.url))
    fake_openai.fail_next(503, headers={"Retry-After": "1"}, path=f"/v1/files/{f.id}")
    t0 = time.monotonic()
    if path == "retrieve":
        assert client(gw).files.retrieve(f.id).id == f.id
    else:
        assert client(gw).files.content(f.id).content == b"abc"
    assert time.monotonic() - t0 >= 1.0   # Retry-After honoured
    assert len(fake_openai.requests.filter("GET", f"/v1/files/{f.id}*")) == 2


@pytest.mark.parametrize("path", ["retrieve", "content"])
def test_connection_refused_is_retried_then_a_502(start_gateway, path):
    from tests.gateway_proc import free_port

    gw = start_gateway(_retrying(f"http://127.0.0.1:{free_port()}"))
    c = client(gw)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        c.files.retrieve("file-x") if path == "retrieve" else c.files.content("file-x")
    assert e.value.status_code == 502 and e.value.response.json()["error"]["code"] == "upstream_unreachable"
    assert time.monotonic() - t0 >= 0.5   # two backoffs (>= 0.19 s + 0.38 s): retried on both paths


def test_streamed_upload_is_never_retried(start_gateway, fake_openai):
    gw = start_gateway(_retrying(fake_openai.url))
    fake_openai.fail_next(503, path="/v1/files")
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.create(file=("a.txt", io.BytesIO(b"abc")), purpose="assistants")
    assert e.value.status_code == 502
    assert len(fake_openai.requests.filter("POST", "/v1/files")) == 1
