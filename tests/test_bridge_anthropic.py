"""The Responses API on Anthropic through the bridge: the real openai SDK, a running gateway, and
the faithful Messages fake (tests/fakes/anthropic_upstream.py FakeMessages)."""
from __future__ import annotations

import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types.responses import Response

from tests.bridge_cases import TEXT_STREAM_HEAD, TEXT_STREAM_TAIL, TOOLS, poll
from tests.conftest import client
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import wait_until

MODEL = "claude/claude-sonnet-4-5"


@pytest.fixture
def fake(tmp_path: Path):
    with FakeAnthropic(data_dir=tmp_path / "fake-anthropic") as f:
        yield f


def config(fake: FakeAnthropic, **extra: object) -> dict:
    p = {"name": "claude", "type": "anthropic", "api_base": fake.url, "api_key": fake.api_key,
         "path": "./anthropic-batches", "max_retries": 0, "timeouts": {"connect": "2s", "read": "5s"}}
    cfg: dict = {"providers": [{"name": "local", "type": "local", "path": "./files"}, p], "default_provider": "local"}
    cfg.update(extra)
    return cfg


def sent(fake: FakeAnthropic) -> dict:
    return fake.requests.filter("POST", "/v1/messages")[-1].json


def test_text_json_and_stored(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    r = c.responses.create(model=MODEL, input="hello there", instructions="Be brief.", max_output_tokens=50,
                           temperature=0.5, top_p=0.9, metadata={"k": "v"}, extra_body={"stop": ["END"]})
    assert r.id.startswith("resp_") and r.status == "completed" and r.output_text == "echo: hello there"
    assert r.model == "claude-sonnet-4-5" and r.metadata == {"k": "v"}
    assert r.usage.input_tokens == 2 and r.usage.output_tokens == 4 and r.usage.total_tokens == 6
    assert sent(fake) == {"model": "claude-sonnet-4-5", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
                          "stop_sequences": ["END"], "system": [{"type": "text", "text": "Be brief."}],
                          "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]}
    raw = httpx.get(f"{gw.base_url}/responses/{r.id}").json()   # no header: the id routes itself
    assert raw["provider"] == "anthropic"
    Response.model_validate(raw)
    assert c.responses.retrieve(r.id) == r
    items = c.responses.input_items.list(r.id)
    assert [(i.type, i.role, i.content[0].type, i.content[0].text) for i in items.data] == [
        ("message", "user", "input_text", "hello there")]
    assert c.responses.delete(r.id) is None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_stream_order_and_first_event_before_the_second_delta(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    # message_start, ping, content_block_start, delta 1 go out; the fake holds delta 2 until released
    release = fake.messages.hold_before(4)
    types, held = [], None
    with c.responses.stream(model=MODEL, input="one two three four five") as s:
        for event in s:
            types.append(event.type)
            if event.type == "response.output_text.delta" and held is None:
                held = len(fake.messages.sent_events)   # what the fake had sent when the client got it
                release.set()
        final = s.get_final_response()
    assert held == 4, "the first delta reached the client only after the fake sent its second"
    assert final.output_text == "echo: one two three four five" and final.status == "completed"
    assert types[:4] == TEXT_STREAM_HEAD
    assert types[-4:] == TEXT_STREAM_TAIL
    assert types.count("response.output_text.delta") == 6
    assert c.responses.retrieve(final.id).output_text == final.output_text


def tool_then_answer(body: dict) -> list[dict]:
    """Claude as a tool user: a tool call first, then an answer that quotes the tool's result."""
    last = body["messages"][-1]["content"]
    results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] if isinstance(last, list) else []
    if results:
        return [{"type": "text", "text": f"It is {results[0]['content']}."}]
    return [{"type": "thinking", "thinking": "I should look it up.", "signature": "sig_abc123"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_across_two_turns(start_gateway, fake, stream):
    gw = start_gateway(config(fake))
    c = client(gw)
    fake.messages.reply = tool_then_answer
    kw = dict(model=MODEL, tools=TOOLS, tool_choice="auto", parallel_tool_calls=False, reasoning={"effort": "low"})
    if stream:
        with c.responses.stream(input="Weather in Paris?", **kw) as s:
            types = [e.type for e in s]
            r1 = s.get_final_response()
        assert "response.function_call_arguments.delta" in types and "response.reasoning_text.delta" in types
    else:
        r1 = c.responses.create(input="Weather in Paris?", **kw)
    first = sent(fake)
    assert first["tools"] == [{"name": "get_weather", "description": "Weather of a city", "strict": True,
                               "input_schema": TOOLS[0]["parameters"]}]
    assert first["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048} and first["max_tokens"] == 4096 + 2048
    reasoning, text, call = r1.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "I should look it up."
    assert reasoning.encrypted_content == "sig_abc123"
    assert text.content[0].text == "Let me check."
    assert call.type == "function_call" and call.call_id == "toolu_01A" and call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}'
    # the second turn sends only the tool output; the gateway rebuilds the rest
    r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=TOOLS,
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert r2.output_text == "It is sunny." and r2.previous_response_id == r1.id
    second = sent(fake)
    assert second["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should look it up.", "signature": "sig_abc123"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"}]}]
    items = c.responses.input_items.list(r2.id, order="asc")
    assert [i.type for i in items.data] == ["function_call_output"] and items.data[0].call_id == "toolu_01A"


def test_images_files_and_structured_output(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    pdf = c.files.create(file=("doc.pdf", b"%PDF-1.4 tiny"), purpose="user_data",
                         extra_headers={"x-tfy-provider-name": "claude"})
    anthropic_id = next(iter(fake.files))
    png = "iVBORw0KGgo="
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    r = c.responses.create(model=MODEL, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Describe"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "auto"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        {"type": "input_file", "file_id": pdf.id}]}],
        text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}})
    assert r.output_text == '{"answer":"echo: Describe"}'
    body = sent(fake)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "file", "file_id": anthropic_id}}]
    assert r.text.format.type == "json_schema"
    # the stored history keeps the gateway's file id; the next turn resolves it again
    c.responses.create(model=MODEL, input="and again?", previous_response_id=r.id)
    assert sent(fake)["messages"][0]["content"][3]["source"]["file_id"] == anthropic_id
    items = c.responses.input_items.list(r.id)
    assert items.data[0].content[3].file_id == pdf.id


UNSUPPORTED = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format.type"),
    ({"temperature": 1.5}, "temperature"),
    ({"truncation": "auto"}, "truncation"),
    ({"prompt_cache_key": "k"}, "prompt_cache_key"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/bmp;base64,AAAA"}]}]},
     "input[0].content[0].image_url"),
    ({"include": ["message.output_text.logprobs"]}, "include[0]"),
    ({"reasoning": {"effort": "low"}, "max_output_tokens": 500}, "max_output_tokens"),
]


def test_unsupported_fields_are_400_naming_them(start_gateway, fake):
    gw = start_gateway(config(fake))   # one gateway for the whole table
    c = client(gw)
    for fields, param in UNSUPPORTED:
        body = {"model": MODEL, "input": "hi", **fields}
        for stream in (False, True):
            resp = httpx.post(gw.base_url + "/responses", json={**body, "stream": stream})
            assert resp.status_code == 400, (fields, resp.text)
            err = resp.json()["error"]
            assert err["param"] == param and err["type"] == "invalid_request_error", err
            assert resp.headers["x-should-retry"] == "false"
        with pytest.raises(openai.BadRequestError):
            c.responses.create(**body)
    assert fake.requests.filter("POST", "/v1/messages") == []


def test_provider_errors_and_mid_stream_failure(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    fake.fail_next(429, headers={"Retry-After": "3"}, path="/v1/messages")
    with pytest.raises(openai.RateLimitError):
        c.responses.create(model=MODEL, input="hi")
    fake.fail_next(400, body={"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "model: unknown model"}}, path="/v1/messages")
    with pytest.raises(openai.BadRequestError, match="unknown model"):
        c.responses.create(model=MODEL, input="hi", stream=True)
    # an error frame mid-stream: response.failed, stored as failed
    fake.messages.error_after(4)
    with c.responses.create(model=MODEL, input="a b c d e f", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error" and "Overloaded" in failed.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert c.responses.retrieve(failed.id).status == "failed"
    # the upstream dies mid-stream: response.failed too
    fake.messages.drop_after(5)
    with c.responses.create(model=MODEL, input="a b c d e f", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "The stream from provider 'claude' broke: H1ConnectionError."
    assert events[-2].type == "response.output_text.delta"
    # it dies before answering: a JSON 502, nothing stored
    fake.reset_next(path="/v1/messages")
    with pytest.raises(openai.InternalServerError):
        c.responses.create(model=MODEL, input="x")


def test_disconnect_closes_the_upstream_call(start_gateway, fake):
    gw = start_gateway(config(fake))
    fake.messages.stream_delay = 0.2
    words = " ".join(f"w{i}" for i in range(100))
    with httpx.stream("POST", gw.base_url + "/responses", json={"model": MODEL, "input": words, "stream": True},
                      timeout=10) as resp:
        for line in resp.iter_lines():
            if "output_text.delta" in line:
                break
    assert wait_until(lambda: fake.messages.stream_client_disconnects == 1, timeout=10)
    assert fake.messages.open_streams == 0 and fake.messages.streams_completed == 0


def test_tenancy_404_on_every_operation(start_gateway, fake):
    auth = {"keys": [{"key": "key-a", "tenant": "a"}, {"key": "key-b", "tenant": "b"}]}
    gw = start_gateway(config(fake, auth=auth))
    a, b = client(gw, api_key="key-a"), client(gw, api_key="key-b")
    r = a.responses.create(model=MODEL, input="mine")
    for call in (lambda: b.responses.retrieve(r.id), lambda: b.responses.retrieve(r.id, stream=True),
                 lambda: b.responses.delete(r.id), lambda: b.responses.cancel(r.id),
                 lambda: b.responses.input_items.list(r.id),
                 lambda: b.responses.create(model=MODEL, input="x", previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert a.responses.retrieve(r.id).id == r.id
    # store: false keeps nothing
    gone = a.responses.create(model=MODEL, input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(gone.id)
    with pytest.raises(openai.NotFoundError):   # an id the gateway never recorded (README: Tenancy)
        a.responses.create(model=MODEL, input="x", previous_response_id=gone.id)


def test_retrieve_stream_replays_the_stored_events(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    with c.responses.create(model=MODEL, input="replay me", stream=True) as s:
        live = [e.to_dict() for e in s]
    with c.responses.retrieve(live[0]["response"]["id"], stream=True) as s:
        replay = [e.to_dict() for e in s]
    assert replay == live
    with c.responses.retrieve(live[0]["response"]["id"], stream=True, starting_after=3) as s:
        assert [e.sequence_number for e in s] == list(range(4, len(live)))
    # a JSON turn replays too
    r = c.responses.create(model=MODEL, input="json turn")
    with c.responses.retrieve(r.id, stream=True) as s:
        events = list(s)
    assert events[0].type == "response.created" and events[-1].response.output_text == r.output_text


def test_hundred_turns_back_to_back_alternating_two_replicas(start_gateway, fake, pg_url):
    """Each turn is sent the instant the previous one ended, to the other gateway process (two
    replicas on one PostgreSQL): the state is there at once, everywhere."""
    cfg = config(fake, store={"url": pg_url, "pool_max": 4})
    clients = [client(start_gateway(cfg)), client(start_gateway(cfg))]
    previous = None
    for i in range(100):
        c = clients[i % 2]
        if i % 2:
            with c.responses.stream(model=MODEL, input=f"turn {i}", previous_response_id=previous) as s:
                r = s.get_final_response()
        else:
            r = c.responses.create(model=MODEL, input=f"turn {i}", previous_response_id=previous)
        assert r.output_text == f"echo: turn {i}" and r.previous_response_id == previous
        previous = r.id
    messages = sent(fake)["messages"]
    assert len(messages) == 199   # 100 user turns and 99 answers, in order
    assert [m["content"][0]["text"] for m in messages[:2]] == ["turn 0", "echo: turn 0"]
    assert [m["content"][0]["text"] for m in messages[-3:]] == ["turn 98", "echo: turn 98", "turn 99"]


def test_messages_404_and_413_are_not_file_errors(start_gateway, fake):
    gw = start_gateway(config(fake))
    fake.fail_next(404, body={"type": "error", "error": {"type": "not_found_error", "message": "model: claude-nope"}},
                   path="/v1/messages")
    resp = httpx.post(gw.base_url + "/responses", json={"model": "claude/claude-nope", "input": "hi"})
    assert resp.status_code == 404
    assert resp.json()["error"] == {"message": "model: claude-nope", "type": "invalid_request_error", "param": None,
                                    "code": "not_found"}
    fake.fail_next(413, path="/v1/messages")
    resp = httpx.post(gw.base_url + "/responses", json={"model": MODEL, "input": "hi", "stream": True})
    assert resp.status_code == 413 and resp.json()["error"]["param"] is None
    assert resp.json()["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------- background turns


def test_background_runs_and_retrieve_polls(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    release = fake.messages.hold_before(4)
    r = c.responses.create(model=MODEL, input="in the back", background=True)
    assert r.status == "queued" and r.background is True and r.output == []
    assert wait_until(lambda: fake.messages.open_streams == 1, timeout=10)
    assert c.responses.retrieve(r.id).status == "in_progress"
    with pytest.raises(openai.BadRequestError, match="still running"):
        c.responses.retrieve(r.id, stream=True)
    release.set()
    done = poll(c, r.id)
    with c.responses.retrieve(r.id, stream=True) as s:
        assert [e.type for e in s][-1] == "response.completed"
    assert done.status == "completed" and done.output_text == "echo: in the back" and done.usage.output_tokens == 5
    assert sent(fake)["stream"] is True
    assert c.responses.input_items.list(r.id).data[0].content[0].text == "in the back"
    # a follow-up builds on it
    r2 = c.responses.create(model=MODEL, input="next", previous_response_id=r.id)
    assert [m["content"][0]["text"] for m in sent(fake)["messages"]] == ["in the back", "echo: in the back", "next"]
    with pytest.raises(openai.BadRequestError):   # only background responses can be cancelled
        c.responses.cancel(r2.id)
    for bad in ({"store": False}, {"stream": True}):
        resp = httpx.post(gw.base_url + "/responses", json={"model": MODEL, "input": "x", "background": True, **bad})
        assert resp.status_code == 400 and resp.json()["error"]["param"] in ("background", "stream")


def test_background_cancel_closes_the_upstream_call(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    release = fake.messages.hold_before(4)
    r = c.responses.create(model=MODEL, input="long one", background=True)
    assert wait_until(lambda: fake.messages.open_streams == 1, timeout=10)
    cancelled = c.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    release.set()
    assert wait_until(lambda: fake.messages.stream_client_disconnects == 1, timeout=15)
    assert fake.messages.streams_completed == 0
    assert c.responses.retrieve(r.id).status == "cancelled"
    assert c.responses.cancel(r.id).status == "cancelled"    # again: unchanged


def test_background_concurrency_is_bounded(start_gateway, fake):
    gw = start_gateway(config(fake, limits={"background_concurrency": 1}))
    c = client(gw)
    release = fake.messages.hold_before(4)
    first = c.responses.create(model=MODEL, input="first", background=True)
    assert wait_until(lambda: fake.messages.open_streams == 1, timeout=10)
    second = c.responses.create(model=MODEL, input="second", background=True)
    time.sleep(0.5)   # the stimulus: time in which an unbounded gateway would start the second call
    assert c.responses.retrieve(second.id).status == "queued"
    assert len(fake.requests.filter("POST", "/v1/messages")) == 1
    release.set()
    assert poll(c, first.id).output_text == "echo: first"
    assert poll(c, second.id).output_text == "echo: second"


def test_restart_fails_in_flight_background_turns(start_gateway, fake, tmp_path):
    cfg = config(fake, store={"url": f"sqlite:///{tmp_path}/shared.db"})
    gw1, gw2 = start_gateway(cfg), start_gateway(cfg)
    release = fake.messages.hold_before(4)
    r = client(gw1).responses.create(model=MODEL, input="doomed", background=True)
    assert wait_until(lambda: fake.messages.open_streams == 1, timeout=10)
    assert client(gw2).responses.retrieve(r.id).status == "in_progress"   # its runner is alive
    gw1.proc.kill()
    gw1.proc.wait(timeout=10)
    failed = client(gw2).responses.retrieve(r.id)
    assert failed.status == "failed" and "stopped before it finished" in failed.error.message
    release.set()


def test_an_empty_text_block_does_not_break_the_next_turn(start_gateway, fake):
    gw = start_gateway(config(fake))
    c = client(gw)
    fake.messages.reply = lambda body: (
        [{"type": "text", "text": "done"}] if body["messages"][-1]["content"][0]["type"] == "tool_result" else
        [{"type": "text", "text": ""}, {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}])
    with c.responses.stream(model=MODEL, input="go", tools=TOOLS) as s:
        r1 = s.get_final_response()
    assert r1.output[0].content[0].text == "" and r1.output[1].call_id == "toolu_9"
    r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=TOOLS,
                            input=[{"type": "function_call_output", "call_id": "toolu_9", "output": "ok"}])
    assert r2.output_text == "done"
