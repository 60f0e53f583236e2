"""The Responses API on Anthropic through the bridge: the real openai SDK, a running gateway, and
the faithful Messages fake (tests/fakes/anthropic_upstream.py FakeMessages)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types.responses import Response

from tests.conftest import client
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import wait_until

MODEL = "claude/claude-sonnet-4-5"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
          "strict": True}]


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
    fake.messages.stream_delay = 0.15
    arrivals, types = [], []
    with c.responses.stream(model=MODEL, input="one two three four five") as s:
        for event in s:
            arrivals.append(time.monotonic())
            types.append(event.type)
        final = s.get_final_response()
    assert final.output_text == "echo: one two three four five" and final.status == "completed"
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert types.count("response.output_text.delta") == 6
    sent_at = fake.messages.sent_events
    first_delta = types.index("response.output_text.delta")
    # message_start, ping, content_block_start, delta 1, delta 2 ... : the client had the first text
    # delta before the fake wrote its second one
    assert arrivals[first_delta] < sent_at[4], (arrivals[first_delta], sent_at)
    assert arrivals[0] < sent_at[4]
    assert c.responses.retrieve(final.id).output_text == final.output_text
