"""The Responses emitter (sans-IO): neutral events → OpenAI's event sequence and Response object,
checked against openai-python's own models (strict validation) and its stream accumulator."""
from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.bridge import events as ev
from proxy.bridge.emitter import Emitter, EmitterError, response_object, sse, whole

EVENT = TypeAdapter(ResponseStreamEvent)
REQUEST = {"model": "claude-x", "input": "hi", "instructions": "Be brief.", "metadata": {"k": "v"},
           "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}],
           "max_output_tokens": 100}
USAGE = ev.Usage(input_tokens=12, output_tokens=5, cached_tokens=3, cache_write_tokens=2, reasoning_tokens=1)


def run(events: list[ev.Event]) -> tuple[Emitter, list[dict[str, Any]]]:
    em = Emitter(response_object(REQUEST, response_id="resp_test1", model="claude-x", provider_type="anthropic",
                                 created_at=1700000000))
    out = em.start()
    for e in events:
        out += em.feed(e)
    return em, out


TEXT = [ev.TextStart(0), ev.TextDelta(0, "Hel"), ev.TextDelta(0, "lo"), ev.ItemDone(0), ev.Finish("completed", USAGE)]
TOOL = [ev.ReasoningStart(0), ev.ReasoningDelta(0, "think"), ev.ReasoningDelta(0, "", signature="sig=="),
        ev.ItemDone(0), ev.TextStart(1), ev.TextDelta(1, "Let me look."), ev.ItemDone(1),
        ev.ToolCallStart(2, "toolu_1", "get_weather"), ev.ToolArgsDelta(2, '{"city":'), ev.ToolArgsDelta(2, '"Paris"}'),
        ev.ItemDone(2), ev.Finish("completed", USAGE)]


@pytest.mark.parametrize("events, types", [
    (TEXT, ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
            "response.content_part.done", "response.output_item.done", "response.completed"]),
    (TOOL, ["response.created", "response.in_progress",
            "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
            "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
            "response.output_item.added", "response.content_part.added", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.delta", "response.function_call_arguments.done",
            "response.output_item.done", "response.completed"]),
    ([ev.TextStart(0), ev.TextDelta(0, "cut"), ev.Finish("incomplete", USAGE, "max_output_tokens")],
     ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.output_text.done", "response.content_part.done",
      "response.output_item.done", "response.incomplete"]),
    ([ev.TextStart(0), ev.TextDelta(0, "x"), ev.Failure("server_error", "overloaded")],
     ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.failed"]),
])
def test_event_sequence_and_shapes(events, types):
    em, out = run(events)
    assert [e["type"] for e in out] == types
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert em.events == out and em.finished
    for e in out:
        EVENT.validate_python(orjson.loads(orjson.dumps(e)))   # strict: the SDK's own models
    final = Response.model_validate(out[-1]["response"])
    assert final.id == "resp_test1" and final.model == "claude-x"
    assert out[-1]["response"]["provider"] == "anthropic"
    assert final.instructions == "Be brief." and final.metadata == {"k": "v"} and final.max_output_tokens == 100
    # output items keep one id from added to done and in the final object
    added = {e["output_index"]: e["item"]["id"] for e in out if e["type"] == "response.output_item.added"}
    assert [item.id for item in final.output] == [added[i] for i in sorted(added)]


def test_final_objects():
    em, out = run(TOOL)
    r = out[-1]["response"]
    assert r["status"] == "completed" and r["error"] is None
    reasoning, message, call = r["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think"}]
    assert reasoning["encrypted_content"] == "sig==" and reasoning["summary"] == []
    assert message["content"][0]["text"] == "Let me look." and message["status"] == "completed"
    assert call == {"id": call["id"], "type": "function_call", "status": "completed", "call_id": "toolu_1",
                    "name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert call["id"].startswith("fc_") and message["id"].startswith("msg_") and reasoning["id"].startswith("rs_")
    assert r["usage"] == {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
                          "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 17}
    # the created event's snapshot is not changed by what came later
    assert out[0]["response"]["output"] == [] and out[0]["response"]["status"] == "in_progress"
    assert em.response == r


def test_failure_and_incomplete_objects():
    em, out = run([ev.TextStart(0), ev.TextDelta(0, "x"), ev.Failure("rate_limit_exceeded", "slow down")])
    r = out[-1]["response"]
    assert r["status"] == "failed" and r["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    assert r["output"][0]["status"] == "incomplete" and r["output"][0]["content"][0]["text"] == "x"
    assert em.fail("server_error", "again") == []   # once finished, nothing more
    _, out = run([ev.Finish("incomplete", USAGE, "content_filter")])
    assert out[-1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_sdk_accumulator_accepts_the_stream():
    """openai.lib.streaming.responses' state machine (what ``responses.stream()`` and
    ``get_final_response()`` run) over the parsed events."""
    for events in (TEXT, TOOL):
        _, out = run(events)
        state = ResponseStreamState(input_tools=REQUEST["tools"], text_format=openai.omit)
        for e in out:
            state.handle_event(EVENT.validate_python(orjson.loads(sse(e).split(b"data: ", 1)[1])))
        final = state._completed_response
        assert final is not None and final.status == "completed"
        if events is TEXT:
            assert final.output_text == "Hello"


@pytest.mark.parametrize("events", [
    [ev.TextDelta(0, "x")],                               # delta before start
    [ev.TextStart(0), ev.TextStart(0)],                   # started twice
    [ev.TextStart(0), ev.ToolArgsDelta(0, "{")],          # wrong kind
    [ev.TextStart(0), ev.ItemDone(0), ev.ItemDone(0)],    # ended twice
    [ev.ItemDone(3)],
    [ev.Finish("completed", USAGE), ev.TextStart(0)],     # after the end
])
def test_contract_violations_raise(events):
    with pytest.raises(EmitterError):
        run(events)


def test_sse_framing_and_whole():
    frame = sse({"type": "response.output_text.delta", "sequence_number": 4, "delta": "a\nb"})
    assert frame.startswith(b"event: response.output_text.delta\ndata: {") and frame.endswith(b"}\n\n")
    assert frame.count(b"\n") == 3   # one data line: the newline in the text is escaped
    em = whole(response_object(REQUEST, response_id="resp_w", model="m", provider_type="anthropic"), TEXT)
    assert em.response["status"] == "completed" and em.response["output"][0]["content"][0]["text"] == "Hello"
    em = whole(response_object(REQUEST, response_id="resp_w", model="m", provider_type="anthropic"), TEXT[:3])
    assert em.response["status"] == "failed"
