"""GET /openapi.json: the document is valid OpenAPI 3.1, lists exactly the operations the router
serves, and schemathesis, run against a live gateway with it, finds no 5xx and no answer
(status, content type, headers, body) that the document does not describe."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, response_headers_conformance,
                                                response_schema_conformance, status_code_conformance,
                                                unsupported_method)

from proxy.routes import _TABLE
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_proc import GatewayProcess

KEY = "sk-gw-team-a"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def _get_status(url: str) -> tuple[int, dict[str, str], bytes]:
    """Like _get, but an HTTP error status is returned, not raised."""
    try:
        return _get(url)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _config(fake: FakeOpenAI, *, default: str, auth: bool, base_path: str = "/v1") -> dict:
    cfg = {
        "server": {"base_path": base_path},
        "providers": [
            {"name": "local", "type": "local", "path": "./files"},
            {"name": "up", "type": "openai", "api_base": fake.url + "/v1", "api_key": fake.api_key,
             "max_retries": 0, "timeouts": {"connect": "5s", "read": "10s"}},
        ],
        "default_provider": default,
        "log_level": "warning",
    }
    if auth:
        cfg["auth"] = {"keys": [{"key": KEY, "tenant": "team-a"}]}
    return cfg


def test_document_is_served_without_a_key_and_is_valid_openapi(tmp_path: Path) -> None:
    with FakeOpenAI("openai", data_dir=tmp_path / "fake") as fake, \
            GatewayProcess(tmp_path / "gw", _config(fake, default="local", auth=True, base_path="/api/llm")) as gw:
        status, headers, body = _get(gw.url + "/openapi.json")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        doc = json.loads(body)
        validate_openapi(doc)
        assert doc["openapi"] == "3.1.0"
        assert [s["url"] for s in doc["servers"]] == ["/v1", "/api/llm"]
        # auth on: a key is required (no empty security requirement)
        assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
        # the document describes exactly what the router serves
        served = set()
        for seg, n, tail, method in _TABLE:
            ident = {"files": "{file_id}", "batches": "{batch_id}", "uploads": "{upload_id}"}.get(seg, "{response_id}")
            path = "/" + "/".join([seg, ident, tail or ""][: n + 1])
            served.add((path, method.lower()))
        documented = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
        assert documented == served
        # every documented error is the gateway's error shape with x-should-retry
        for name, resp in doc["components"]["responses"].items():
            assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            assert "x-should-retry" in resp["headers"], name
        # an undocumented method on a documented path: 405 saying what is allowed (RFC 9110)
        req = urllib.request.Request(gw.url + "/v1/files", method="PUT", headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 405 and err.value.headers["Allow"] == "GET, POST"
        # the same document under the configured base path's server actually answers
        status, _, body = _get(gw.url + "/api/llm/files", {"Authorization": f"Bearer {KEY}"})
        assert status == 200 and json.loads(body)["object"] == "list"


# -- schemathesis -------------------------------------------------------------------------------
# Two gateways: auth on with the local provider as default (Files on the gateway's disk; the
# Responses operations answer 400 unsupported unless a routing header names "up"), and auth off
# with the fake OpenAI upstream as default (pass-through Files, real Responses, SSE).

@pytest.fixture(scope="module", params=["local-auth", "openai-noauth"])
def live_gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, bool]]:
    tmp = tmp_path_factory.mktemp(request.param)
    auth = request.param == "local-auth"
    with FakeOpenAI("openai", data_dir=tmp / "fake") as fake:
        # an answer of the fake is never slower than this; schemathesis must not wait on it
        fake.stream_delay = 0.0
        gw = GatewayProcess(tmp / "gw", _config(fake, default="local" if auth else "up", auth=auth))
        with gw:
            yield gw, auth


@pytest.fixture(scope="module")
def api_schema(live_gateway: tuple[GatewayProcess, bool]):
    gw, auth = live_gateway
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    schema.config.update(base_url=gw.base_url, request_timeout=20)
    # Bounded: a few examples per operation (positive and negative), no shrinking; the whole
    # module stays well under a minute on a loaded 2-core machine.
    schema.config.generation.update(max_examples=12, modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    no_shrink=True, deterministic=True, database="none")
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")

# Not negative_data_rejection: responses.create forwards fields it does not act on unchanged, so
# whether e.g. temperature=5 is refused is the upstream's call (the fake accepts it), not the gateway's.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth, unsupported_method]


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_conforms_to_its_openapi_document(case, live_gateway) -> None:
    _gw, auth = live_gateway
    headers = {"Authorization": f"Bearer {KEY}"} if auth else None
    case.call_and_validate(headers=headers, checks=CHECKS)


# -- defects schemathesis found (each also pinned here through the SDK) -------------------------

def test_malformed_path_id_is_a_404_and_never_reaches_the_upstream(start_gateway, fake_openai) -> None:
    from tests.conftest import client, passthrough_config

    # auth off: ids the gateway never saw may reach the pass-through provider, so only the id's
    # shape stands between a client and the upstream request target
    gw = start_gateway(passthrough_config(fake_openai, default_provider="my-openai"))
    c = client(gw)
    for bad in ("file-a\x11b", "file-é", "file-a?purpose=batch", "file-a#x", "x" * 300):
        with pytest.raises(openai.NotFoundError) as err:
            c.files.retrieve(bad)
        assert err.value.body["param"] == "file_id"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(bad.replace("file", "resp"))
    assert not fake_openai.requests.filter(path="/v1/files/*")
    assert not fake_openai.requests.filter(path="/v1/responses/*")
    assert "unhandled error" not in gw.log()


def test_responses_query_reaches_the_upstream_as_the_client_encoded_it(start_gateway, fake_openai) -> None:
    from tests.conftest import client, passthrough_config

    gw = start_gateway(passthrough_config(fake_openai, default_provider="my-openai"))
    c = client(gw)
    r = c.responses.create(model="gpt-4o", input="hi")
    c.responses.input_items.list(r.id, after="msg_é\x11&limit=1", order="asc")  # was a 500
    sent = fake_openai.requests.filter("GET", f"/v1/responses/{r.id}/input_items")[-1]
    assert sent.query["after"] == "msg_é\x11&limit=1" and "limit" not in sent.query
    assert "unhandled error" not in gw.log()


def test_documented_answers_for_real_objects(tmp_path: Path) -> None:
    """Generated ids rarely exist, so the 200 bodies of the id operations are checked here on
    objects made through the SDK: File objects from both kinds of provider, content, deletes,
    a Response retrieved as JSON and replayed as SSE, its input items, a cancelled background
    response, a deleted response, a batch created, retrieved, listed and cancelled."""
    from tests.conftest import client

    with FakeOpenAI("openai", data_dir=tmp_path / "fake") as fake, \
            GatewayProcess(tmp_path / "gw", _config(fake, default="local", auth=True)) as gw:
        doc = schemathesis.openapi.from_url(gw.url + "/openapi.json")
        doc.config.update(base_url=gw.base_url, request_timeout=20)
        auth = {"Authorization": f"Bearer {KEY}"}
        checks = [c for c in CHECKS if c is not unsupported_method]  # that one judges generated methods only

        def call(path: str, method: str, **kw):  # type: ignore[no-untyped-def]
            case = doc[path][method].Case(**kw)
            resp = case.call_and_validate(headers=auth, checks=checks)
            assert resp.status_code == 200, (method, path, resp.text)
            return resp

        c = client(gw, api_key=KEY)
        up = {"x-tfy-provider-name": "up"}
        local_file = c.files.create(file=("a.txt", b"local bytes"), purpose="user_data")
        up_file = c.files.create(file=("b.jsonl", b'{"x": 1}\n'), purpose="user_data", extra_headers=up)
        call("/files", "GET", query={"limit": 5, "order": "asc"})
        for f in (local_file, up_file):
            ids = {"file_id": f.id}
            call("/files/{file_id}", "GET", path_parameters=ids)
            assert call("/files/{file_id}/content", "GET", path_parameters=ids).content in (b"local bytes", b'{"x": 1}\n')
            call("/files/{file_id}", "DELETE", path_parameters=ids)

        r = c.responses.create(model="up/gpt-4o", input=[{"role": "user", "content": "hello there"}])
        ids = {"response_id": r.id}
        call("/responses/{response_id}", "GET", path_parameters=ids, query={"include[]": ["message.output_text.logprobs"]})
        replay = call("/responses/{response_id}", "GET", path_parameters=ids, query={"stream": "true", "starting_after": 1})
        assert replay.headers["content-type"][0].startswith("text/event-stream") and b"response.completed" in replay.content
        items = call("/responses/{response_id}/input_items", "GET", path_parameters=ids, query={"limit": 10}).json()
        assert items["data"][0]["content"][0]["text"] == "hello there"
        call("/responses/{response_id}", "DELETE", path_parameters=ids)

        background = c.responses.create(model="up/gpt-4o", input="slow", background=True)
        cancelled = call("/responses/{response_id}/cancel", "POST", path_parameters={"response_id": background.id})
        assert cancelled.json()["status"] == "cancelled"

        streamed = call("/responses", "POST", body={"model": "up/gpt-4o", "input": "stream it", "stream": True},
                        media_type="application/json")
        assert b"response.completed" in streamed.content

        # a batch on the pass-through provider (routed by its input file), running for an hour
        fake.batches.duration = 3600.0
        line = b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o"}}\n'
        batch_input = c.files.create(file=("in.jsonl", line), purpose="batch", extra_headers=up)
        created = call("/batches", "POST", media_type="application/json", body={
            "input_file_id": batch_input.id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"k": "v"}}).json()
        ids = {"batch_id": created["id"]}
        assert call("/batches/{batch_id}", "GET", path_parameters=ids).json()["status"] == "in_progress"
        assert [b["id"] for b in call("/batches", "GET", query={"limit": 5}).json()["data"]] == [created["id"]]
        assert call("/batches/{batch_id}/cancel", "POST", path_parameters=ids).json()["status"] == "cancelling"


def test_retrieve_stream_flag_other_than_true_or_false_is_a_400(start_gateway, fake_openai) -> None:
    from tests.conftest import client, passthrough_config

    gw = start_gateway(passthrough_config(fake_openai, default_provider="my-openai"))
    c = client(gw)
    r = c.responses.create(model="gpt-4o", input="hi")
    before = len(fake_openai.requests)
    for value in ("1", "True", "yes"):
        with pytest.raises(openai.BadRequestError) as err:  # was a 502 for "1" and "True": SSE read as JSON
            c.responses.retrieve(r.id, extra_query={"stream": value})
        assert err.value.body["param"] == "stream"  # type: ignore[index]
    status, _, body = _get_status(f"{gw.base_url}/responses/{r.id}?stream=true&stream=false")
    assert status == 400 and json.loads(body)["error"]["param"] == "stream"
    assert len(fake_openai.requests) == before  # nothing went upstream
    assert c.responses.retrieve(r.id, extra_query={"stream": "false"}).id == r.id
