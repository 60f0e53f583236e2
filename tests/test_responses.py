"""Responses API through the gateway: JSON and SSE pass-through, routing by id, tenancy, faults."""
from __future__ import annotations

import signal
import threading
import time

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client, passthrough_config

OPENAI = {"x-tfy-provider-name": "my-openai"}


def test_create_json_model_prefix_and_untouched_fields(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    fields = dict(
        instructions="Be brief.",
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Describe"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}]}],
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}},
                "strict": False}],
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        reasoning={"effort": "low"}, metadata={"k": "v"}, store=True, temperature=0.2,
    )
    r = c.responses.create(model="my-openai/gpt-4o", **fields)
    assert r.id.startswith("resp_") and r.output_text.startswith("echo:")
    sent = fake_openai.requests.filter("POST", "/v1/responses")[-1].json
    assert sent["model"] == "gpt-4o"  # prefix stripped
    for key, value in fields.items():
        assert sent[key] == value, key
    # The JSON body is the upstream's plus "provider".
    raw = httpx.post(gw.base_url + "/responses", json={"model": "gpt-4o", "input": "hi"}, headers=OPENAI)
    body = raw.json()
    assert body.pop("provider") == "openai"
    assert body == fake_openai.responses[body["id"]].snapshot()
    assert raw.headers["Content-Type"].startswith("application/json")
    # previous_response_id chaining passes through.
    r2 = c.responses.create(model="my-openai/gpt-4o", input="again", previous_response_id=r.id)
    assert fake_openai.requests.filter("POST", "/v1/responses")[-1].json["previous_response_id"] == r.id
    assert r2.id != r.id


def test_routing_header_litellm_and_default(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai, default_provider="my-openai"))
    c = client(gw)
    assert c.responses.create(model="gpt-4o", input="a").id  # default provider
    assert c.responses.create(model="gpt-4o", input="b", extra_headers={"custom-llm-provider": "openai"}).id
    assert c.responses.create(model="org/model-with-slash", input="c", extra_headers=OPENAI).id
    assert fake_openai.requests.filter("POST", "/v1/responses")[-1].json["model"] == "org/model-with-slash"


def test_stream_passes_events_as_they_arrive(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    fake_openai.stream_delay = 0.15
    t0 = time.monotonic()
    arrivals = []
    types = []
    with c.responses.create(model="my-openai/gpt-4o", input="one two three four", stream=True) as stream:
        for event in stream:
            arrivals.append(time.monotonic() - t0)
            types.append(event.type)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    total = arrivals[-1]
    assert len(arrivals) >= 8 and total > 1.0
    # The first event reached the client long before the upstream sent the last one.
    assert arrivals[0] < 0.5 * total, arrivals
    fake_openai.stream_delay = 0
    # The SDK's stream helper works through the gateway.
    with c.responses.stream(model="my-openai/gpt-4o", input="hello there") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert final.output_text == text and final.status == "completed"
    lines = gw.access_log(until=lambda ls: any(line["id"] == final.id for line in ls))
    (line,) = [line for line in lines if line["id"] == final.id]
    assert line["model"] == "gpt-4o" and line["provider"] == "my-openai"
    assert line["input_tokens"] > 0 and line["output_tokens"] > 0


def test_retrieve_delete_cancel_input_items_route_by_id(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    r = c.responses.create(model="my-openai/gpt-4o", input="hi there")
    got = c.responses.retrieve(r.id, include=["message.output_text.logprobs", "reasoning.encrypted_content"])
    assert got.id == r.id
    rec = fake_openai.requests.filter("GET", f"/v1/responses/{r.id}")[-1]
    assert rec.query.getall("include[]") == ["message.output_text.logprobs", "reasoning.encrypted_content"]
    items = c.responses.input_items.list(r.id)
    assert items.data and items.data[0].id
    # stream=True with starting_after replays what follows
    events = list(c.responses.retrieve(r.id, stream=True, starting_after=2))
    assert events[0].sequence_number == 3 and events[-1].type == "response.completed"
    # cancel: only background responses
    bg = c.responses.create(model="my-openai/gpt-4o", input="long job", background=True)
    assert bg.status in ("queued", "in_progress")
    assert c.responses.cancel(bg.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.responses.cancel(r.id)
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_tenancy_on_every_operation(start_gateway, fake_openai):
    keys = {"A_KEY": "sk-a", "B_KEY": "sk-b"}
    auth = {"keys": [{"key": "os.environ/A_KEY", "tenant": "a"}, {"key": "os.environ/B_KEY", "tenant": "b"}]}
    gw = start_gateway(passthrough_config(fake_openai, auth=auth), env=keys)
    a, b = client(gw, "sk-a"), client(gw, "sk-b")
    r = a.responses.create(model="my-openai/gpt-4o", input="mine", background=True)
    with a.responses.create(model="my-openai/gpt-4o", input="streamed", stream=True) as s:
        streamed_id = next(iter(s)).response.id
        list(s)
    before = len(fake_openai.requests)
    for rid in (r.id, streamed_id):
        for call in (lambda: b.responses.retrieve(rid), lambda: b.responses.delete(rid),
                     lambda: b.responses.cancel(rid), lambda: b.responses.input_items.list(rid)):
            with pytest.raises(openai.NotFoundError):
                call()
    assert len(fake_openai.requests) == before
    assert a.responses.retrieve(streamed_id).id == streamed_id
    assert a.responses.retrieve(r.id, extra_headers=OPENAI).id == r.id


def test_client_disconnect_closes_upstream_stream(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    fake_openai.stream_delay = 0.3
    with httpx.stream("POST", gw.base_url + "/responses", headers=OPENAI,
                      json={"model": "gpt-4o", "input": "a b c d e f g h i j", "stream": True}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                break  # first event seen: hang up
    t0 = time.monotonic()
    assert fake_openai.wait_until(lambda: fake_openai.stream_client_disconnects == 1, timeout=3)
    assert time.monotonic() - t0 < 1.5
    assert fake_openai.streams_completed == 0


def test_upstream_drop_mid_stream_ends_with_error_event(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    fake_openai.drop_stream_after(3)
    events = list(client(gw).responses.create(model="my-openai/gpt-4o", input="x y z", stream=True))
    assert [e.sequence_number for e in events] == [0, 1, 2, 3]
    assert events[-1].type == "error" and events[-1].code == "upstream_error"
    assert "ended before" in events[-1].message or "broke" in events[-1].message


def test_stalled_upstream_stream_times_out_with_error_event(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))  # idle timeout 2s
    fake_openai.stream_delay = 3
    t0 = time.monotonic()
    events = list(client(gw).responses.create(model="my-openai/gpt-4o", input="slow", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "error"
    assert "sent no event" in events[-1].message
    assert time.monotonic() - t0 < 8


def test_bad_requests_rejected_before_upstream(start_gateway, fake_openai):
    cfg = passthrough_config(fake_openai, limits={"max_json_body": "64KiB"})
    gw = start_gateway(cfg)
    before = len(fake_openai.requests)
    r = httpx.post(gw.base_url + "/responses", content=b"{not json", headers={**OPENAI, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(gw.base_url + "/responses", json={"input": "no model"}, headers=OPENAI)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(gw.base_url + "/responses", json={"model": "nope/gpt-4o", "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_provider"
    r = httpx.post(gw.base_url + "/responses", json={"model": "gpt-4o", "input": "x" * (70 << 10)}, headers=OPENAI)
    assert r.status_code == 413
    assert len(fake_openai.requests) == before


def test_upstream_errors_on_create_not_retried(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    fake_openai.fail_next(429, headers={"Retry-After": "7"}, path="/v1/responses")
    with pytest.raises(openai.RateLimitError) as e:
        c.responses.create(model="my-openai/gpt-4o", input="x")
    assert e.value.response.headers["Retry-After"] == "7"
    fake_openai.fail_next(500, path="/v1/responses")
    with pytest.raises(openai.InternalServerError) as e:
        c.responses.create(model="my-openai/gpt-4o", input="x")
    assert e.value.status_code == 502
    assert len(fake_openai.requests.filter("POST", "/v1/responses")) == 2
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model="my-openai/gpt-4o", input="x", previous_response_id="resp_unknown")


def test_azure_responses(start_gateway, fake_azure):
    gw = start_gateway(passthrough_config(fake_azure=fake_azure, azure_api_version="2025-04-01-preview"))
    c = client(gw)
    r = c.responses.create(model="my-azure/gpt-4o", input="hello azure")
    sent = fake_azure.requests.filter("POST", "/openai/responses")[-1]
    assert sent.json["model"] == "my-gpt4o-deployment"
    assert sent.query["api-version"] == "2025-04-01-preview" and sent.headers["api-key"] == "azure-upstream-key"
    raw = httpx.get(f"{gw.base_url}/responses/{r.id}")
    assert raw.json()["provider"] == "azure"
    with c.responses.stream(model="my-azure/gpt-4o", input="stream me") as s:
        final = s.get_final_response()
    assert final.status == "completed"
    assert c.responses.input_items.list(r.id).data
    c.responses.delete(r.id)


def test_wrong_types_of_fields_the_gateway_acts_on_are_a_400(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))
    before = len(fake_openai.requests)
    for field, value in [("stream", 1), ("stream", "yes"), ("stream", "false"), ("background", "true"),
                         ("store", 1), ("input", 42), ("previous_response_id", 5)]:
        with pytest.raises(openai.BadRequestError) as e:
            client(gw).responses.create(model="my-openai/gpt-4o", input="x", extra_body={field: value})
        assert e.value.body["param"] == field and e.value.body["code"] == "invalid_type", (field, value)
        assert e.value.response.headers["x-should-retry"] == "false"
    assert len(fake_openai.requests) == before


def test_unsupported_provider_names_the_providers_that_serve_responses(start_gateway, fake_openai):
    gw = start_gateway(passthrough_config(fake_openai))  # default_provider: local
    with pytest.raises(openai.BadRequestError) as e:
        client(gw).responses.create(model="gpt-4o", input="x")
    assert e.value.body["code"] == "unsupported_operation"
    assert e.value.body["message"] == ("Provider 'local' (type local) does not support responses.create. "
                                       "Configured providers that do: my-openai (openai).")


def test_response_record_survives_sigkill_right_after_the_end(start_gateway, fake_openai):
    """The record is committed before the client has the end of the response (JSON and SSE):
    the gateway killed at once afterwards still routes the id after a restart. A record lost
    would show as a 404: the default provider (local) knows no unseen response ids."""
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)

    def kill_and_restart() -> None:
        gw.signal(signal.SIGKILL)
        gw.proc.wait(10)
        gw._log.close()
        gw.start()

    for _ in range(3):  # each round must keep both; a write-behind store loses most
        json_id = c.responses.create(model="my-openai/gpt-4o", input="remember me").id
        kill_and_restart()
        with c.responses.create(model="my-openai/gpt-4o", input="and me", stream=True) as s:
            events = list(s)
        assert events[-1].type == "response.completed"
        sse_id = events[-1].response.id
        kill_and_restart()
        for rid in (json_id, sse_id):
            assert c.responses.retrieve(rid).id == rid


def test_store_false_leaves_no_record_store_true_does(start_gateway, fake_openai):
    """A ``store: false`` response can never be retrieved or continued upstream, so the gateway
    commits no owner record for it (one commit per request saved); the default records."""
    from tests.support import db_rows
    gw = start_gateway(passthrough_config(fake_openai))
    c = client(gw)
    kept = c.responses.create(model="my-openai/gpt-4o", input="keep")
    with c.responses.create(model="my-openai/gpt-4o", input="keep", stream=True) as s:
        kept_sse = [e for e in s][-1].response.id
    c.responses.create(model="my-openai/gpt-4o", input="forget", store=False)
    with c.responses.create(model="my-openai/gpt-4o", input="forget", stream=True, store=False) as s:
        assert [e for e in s][-1].type == "response.completed"
    ids = {r[0] for r in db_rows(gw, "SELECT id FROM responses")}
    assert ids == {kept.id, kept_sse}
