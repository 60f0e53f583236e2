"""The exchange pipeline, in process (aiohttp's test server, no gateway): body kinds, the filters
around a fake operation, and every answer — an error too — through ``before_send``."""
from __future__ import annotations

import os

import orjson
import pytest

from filters.base import ChainFactory, Filter, Shared
from proxy.context import OperationContext
from proxy.errors import GatewayError
from proxy.exchange import Exchange
from proxy.pipeline import Body, Operation, Pipeline
from proxy.providers.local import LocalProvider
from proxy.responses_api import pipe_sse
from proxy.store.base import FileRecord

from .fakes import LOCAL, Recorder, config, providers

LIMIT = 1000


class Stamp(Filter):
    """A response filter: adds a header to every answer."""

    def on_response(self, ex: Exchange) -> None:
        ex.response_headers["x-stamp"] = str(ex.status)


class Refuse(Filter):
    async def on_request(self, ex: Exchange) -> None:
        if ex.request.headers.get("x-refuse"):
            raise GatewayError(401, "no key", code="missing_api_key")


async def echo(ctx: OperationContext) -> object:
    ex = ctx.ex
    return ctx.json_response(orjson.dumps({"json": ex.json_body, "raw": (ex.raw_body or b"").decode(),
                                           "boundary": (ctx.boundary or b"").decode()}), status=201)


async def fails(ctx: OperationContext) -> object:
    raise GatewayError(409, "busy", code="conflict", retryable=True)


async def crashes(ctx: OperationContext) -> object:
    raise ValueError("bug")


OPS = {
    "none": Operation(echo),
    "json": Operation(echo, Body.JSON),
    "responses.create": Operation(echo, Body.JSON),  # its body checks (proxy.body_checks) apply
    "multipart": Operation(echo, Body.MULTIPART),
    "fails": Operation(fails),
    "crashes": Operation(crashes),
}


@pytest.fixture
def log() -> list:
    return []


@pytest.fixture
async def call(aiohttp_raw_server, aiohttp_client, log):
    """``call(op, **request)``: run one exchange of ``op`` through a pipeline with a recording filter."""
    chains = ChainFactory([Shared(Refuse()), Shared(Recorder(log, "r")), Shared(Stamp())])
    pipeline = Pipeline(chains, store=None, limits=config(limits={"max_json_body": LIMIT}).limits,  # type: ignore[arg-type]
                        operations=OPS)
    server = await aiohttp_raw_server(lambda request: pipeline.handle(request, request.path.strip("/"), None))
    client = await aiohttp_client(server)

    async def run(op: str, method: str = "POST", **kw):
        resp = await client.request(method, f"/{op}", **kw)
        return resp.status, resp.headers, await resp.read()

    return run


def hooks(log: list) -> list[str]:
    return [e[1] for e in log]


async def test_operation_answer_goes_through_the_response_filters(call, log):
    status, headers, body = await call("none", method="GET")
    assert status == 201 and headers["x-stamp"] == "201"
    assert orjson.loads(body) == {"json": None, "raw": "", "boundary": ""}
    assert hooks(log) == ["on_request", "on_response", "on_exchange_end"]


async def test_json_body_is_read_and_parsed_before_the_request_filters(call, log):
    status, _, body = await call("json", data=b'{"model": "m", "input": "hi"}')
    assert status == 201
    assert orjson.loads(body)["json"] == {"model": "m", "input": "hi"}
    assert orjson.loads(body)["raw"] == '{"model": "m", "input": "hi"}'


@pytest.mark.parametrize("data,code", [(b"{nope", "invalid_json"), (b"[1]", "invalid_json"),
                                       (b'{"input": "x"}', "missing_required_parameter"),
                                       (b'{"model": "m", "stream": "yes"}', "invalid_type")])
async def test_bad_json_body_is_400_before_the_request_filters(call, log, data, code):
    status, headers, body = await call("responses.create", data=data)
    assert status == 400 and orjson.loads(body)["error"]["code"] == code
    assert hooks(log) == ["on_response", "on_exchange_end"] and headers["x-stamp"] == "400"


@pytest.mark.parametrize("size", [LIMIT + 1, 10 * LIMIT])
async def test_json_body_past_the_limit_is_413(call, size):
    body = b'{"model": "' + b"m" * (size - 13) + b'"}'
    assert len(body) == size
    status, _, out = await call("json", data=body)
    assert status == 413 and orjson.loads(out)["error"]["code"] == "request_too_large"


async def test_json_body_past_the_limit_without_content_length_is_413(call):
    async def chunks():
        for _ in range(3):
            yield b" " * 400

    status, _, out = await call("json", data=chunks())
    assert status == 413 and orjson.loads(out)["error"]["code"] == "request_too_large"


async def test_multipart_boundary_is_checked_after_the_request_filters(call, log):
    status, _, body = await call("multipart", data=b"x", headers={"Content-Type": "text/plain"})
    assert status == 400 and orjson.loads(body)["error"]["code"] == "invalid_content_type"
    assert "multipart needs a multipart/form-data body" in orjson.loads(body)["error"]["message"]
    assert hooks(log) == ["on_request", "on_response", "on_exchange_end"]
    status, _, body = await call("multipart", data=b"x", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert status == 201 and orjson.loads(body)["boundary"] == "zz"


async def test_request_filter_refusal_is_the_answer_and_the_operation_does_not_run(call, log):
    status, headers, body = await call("multipart", headers={"x-refuse": "1"})
    assert status == 401 and orjson.loads(body)["error"]["code"] == "missing_api_key"
    assert hooks(log) == ["on_response", "on_exchange_end"] and headers["x-stamp"] == "401"


async def test_operation_error_is_an_openai_shaped_body_through_before_send(call, log):
    status, headers, body = await call("fails")
    assert status == 409
    assert orjson.loads(body) == {"error": {"message": "busy", "type": "invalid_request_error", "param": None,
                                            "code": "conflict"}}
    assert headers["x-should-retry"] == "true" and headers["x-stamp"] == "409"
    assert hooks(log) == ["on_request", "on_response", "on_exchange_end"]


async def test_unhandled_exception_is_a_retryable_500(call, log):
    status, headers, body = await call("crashes")
    assert status == 500 and orjson.loads(body)["error"]["code"] == "internal_error"
    assert headers["x-should-retry"] == "true" and headers["x-stamp"] == "500"
    assert hooks(log)[-1] == "on_exchange_end"


# -- response body chunks --------------------------------------------------------------------


class FakeUpstreamStream:
    """What pipe_sse reads of an upstream SSE response."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.status, self.headers, self.chunks, self.closed = 200, {"Content-Type": "text/event-stream"}, chunks, False

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        self.closed = True


SSE = [b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1"}}\n\n',
       b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1"}}\n\n']


async def serve(aiohttp_raw_server, aiohttp_client, chains: ChainFactory, op: Operation, store=None):
    pipeline = Pipeline(chains, store=store, limits=config().limits, operations={"op": op})
    server = await aiohttp_raw_server(lambda request: pipeline.handle(request, "op", "file-1"))
    return await aiohttp_client(server)


async def test_sse_chunks_reach_on_response_data_as_they_go_out(aiohttp_raw_server, aiohttp_client, log):
    cfg = config(providers=[LOCAL])
    provider = providers(cfg)["local"]
    upstream = FakeUpstreamStream(list(SSE))

    async def stream(ctx: OperationContext):
        ctx.ex.provider = provider
        return await pipe_sse(ctx, upstream, record=False)

    client = await serve(aiohttp_raw_server, aiohttp_client, ChainFactory([Shared(Recorder(log, "r"))]), Operation(stream))
    resp = await client.get("/")
    assert await resp.read() == b"".join(SSE)
    assert [e[2] for e in log if e[1] == "on_response_data"] == SSE
    assert upstream.closed


async def test_download_chunks_reach_on_response_data(aiohttp_raw_server, aiohttp_client, log, tmp_path):
    from proxy.files_api import DOWNLOAD_CHUNK, files_content

    cfg = config(providers=[{**LOCAL, "path": str(tmp_path)}])
    provider: LocalProvider = providers(cfg)["local"]
    await provider.start()
    content = os.urandom(DOWNLOAD_CHUNK + 10)
    (tmp_path / "file-1").write_bytes(content)

    class Route(Filter):
        async def on_request(self, ex: Exchange) -> None:
            ex.provider = provider
            ex.file_record = FileRecord(id="file-1", tenant="t", provider="local", filename="f", purpose="batch",
                                        bytes=len(content), created_at=0, location={"path": "file-1"})

    chains = ChainFactory([Shared(Route()), Shared(Recorder(log, "r"))])
    client = await serve(aiohttp_raw_server, aiohttp_client, chains, Operation(files_content))
    resp = await client.get("/")
    assert resp.status == 200 and await resp.read() == content
    assert b"".join(e[2] for e in log if e[1] == "on_response_data") == content
    assert len([e for e in log if e[1] == "on_response_data"]) == 2
