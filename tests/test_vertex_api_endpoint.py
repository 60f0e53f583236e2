"""The ``vertex`` type's one key for the Vertex AI API, ``api_endpoint``: batch jobs and the
Responses bridge's ``generateContent`` both go to it, through a running gateway and the real
OpenAI SDK. Its deprecated name ``batch_endpoint_url`` does the same, with one warning at
start-up. One host serves both APIs, as Vertex AI's does: a front that sends each path to its
fake (FakeVertex for ``batchPredictionJobs``, FakeGemini for ``publishers/google/models``)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.config import check_config_main
from tests.conftest import client
from tests.emulator_gcs import FakeGCS, fake_gcs  # noqa: F401  (fixture)
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.threaded import ThreadedServer
from tests.fakes.vertex_batches import FakeVertex
from tests.gateway_proc import GatewayProcess
from tests.test_batch_runners import CHAT, IDS, PREFIX, _gcs_bucket, batch_file

WAIT = 30.0  # seconds a batch may take to end on a loaded machine (the gateway polls once a second)
DEPRECATED = "providers[0].batch_endpoint_url: deprecated name of api_endpoint; set api_endpoint instead"


class Front:
    """One Vertex AI host in front of the two fakes; records the paths it was asked for."""

    def __init__(self, batches: str, gemini: str) -> None:
        self.batches, self.gemini = batches, gemini
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.server = ThreadedServer(app)

    async def _forward(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        upstream = self.gemini if "/publishers/google/models/" in request.path else self.batches
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, upstream + request.path_qs, data=await request.read(),
                                       headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type)


@pytest.fixture(scope="module")
def front(fake_gcs: FakeGCS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Front, str]]:  # noqa: F811
    bucket = asyncio.run(_gcs_bucket(fake_gcs))
    with FakeVertex(fake_gcs) as vertex, \
            FakeGemini(token=None, data_dir=tmp_path_factory.mktemp("fake-gemini")) as gemini:  # emulator: no token
        f = Front(vertex.url, gemini.url)
        with f.server:
            yield f, bucket


@pytest.mark.parametrize("key", ["api_endpoint", "batch_endpoint_url"])
def test_one_key_is_the_host_of_batch_jobs_and_of_the_bridge(
        key: str, front: tuple[Front, str], fake_gcs: FakeGCS,  # noqa: F811
        start_gateway: Callable[..., GatewayProcess]) -> None:
    f, bucket = front
    gw = start_gateway({"providers": [
        {"name": "vertex", "type": "vertex", "bucket": bucket, "project_id": "test-project", "prefix": PREFIX,
         "endpoint_url": fake_gcs.api_root, "model": "gemini-2.5-flash", key: f.server.url, "max_retries": 0}]})
    c = client(gw)
    f.paths.clear()

    # a batch job, submitted and polled at the key's host
    input_id = c.files.create(file=("requests.jsonl", batch_file(IDS)), purpose="batch").id
    created = c.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    deadline = time.monotonic() + WAIT
    while (batch := c.batches.retrieve(created.id)).status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, f"the batch did not end within {WAIT}s: {batch.status}"
        time.sleep(0.2)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.total == len(IDS)

    # a Responses turn, generateContent at the same host
    r = c.responses.create(model="vertex/gemini-2.5-flash", input="hello")
    assert r.status == "completed" and r.output_text == "Hello from the fake Gemini."

    base = "/v1/projects/test-project/locations/us-central1/"
    assert f.paths[0] == base + "batchPredictionJobs"
    assert f.paths[-1] == base + "publishers/google/models/gemini-2.5-flash:generateContent"

    # the deprecated name: one warning, at start-up (the log line of the starting process)
    warnings = [line for line in gw.log().splitlines() if "batch_endpoint_url" in line]
    assert len(warnings) == (0 if key == "api_endpoint" else 1) and all(DEPRECATED in w for w in warnings), warnings


def test_check_config_warns_of_the_deprecated_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n- {name: vx, type: vertex, bucket: b, project_id: p,"
                    " batch_endpoint_url: 'http://127.0.0.1:9'}\n")
    assert check_config_main(str(path)) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {DEPRECATED}"]
