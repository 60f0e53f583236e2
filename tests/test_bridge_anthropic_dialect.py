"""The Anthropic Messages dialect, sans-IO: request tables, answer decoding, and the SSE decoder
fed a stream split at every byte (through the same SSE parser the I/O layer uses)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.bridge import events as ev
from proxy.bridge.anthropic import DEFAULT_MAX_TOKENS, AnthropicDialect
from proxy.bridge.emitter import response_object, whole
from proxy.bridge.items import canonical_input
from proxy.errors import GatewayError
from proxy.transforms.sse import SSEParser
from tests.fakes.anthropic_upstream import FakeMessages

D = AnthropicDialect()


def build(history: list[dict[str, Any]] | None = None, **request: Any) -> dict[str, Any]:
    request.setdefault("input", "hi")
    request["input"] = canonical_input(request["input"])
    return D.build_call(request, history or [], "claude-x", stream=False).body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


@pytest.mark.parametrize("request_fields, expected", [
    ({}, {"max_tokens": DEFAULT_MAX_TOKENS, "messages": [user("hi")]}),
    ({"instructions": "Sys", "input": [{"role": "developer", "content": "Dev"}, {"role": "user", "content": "q"}]},
     {"system": [{"type": "text", "text": "Sys"}, {"type": "text", "text": "Dev"}], "messages": [user("q")]}),
    ({"max_output_tokens": 9, "temperature": 0, "top_p": 1, "stop": "X"},
     {"max_tokens": 9, "temperature": 0, "top_p": 1, "stop_sequences": ["X"]}),
    ({"tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    ({"tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    ({"tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False},
     {"tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True}}),
    ({"tools": [{"type": "function", "name": "f"}]},
     {"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]}),
    ({"reasoning": {"effort": "high"}, "max_output_tokens": 5000},
     {"thinking": {"type": "enabled", "budget_tokens": 4999}, "max_tokens": 5000}),
    ({"reasoning": {"effort": "medium"}}, {"thinking": {"type": "enabled", "budget_tokens": 8192},
                                           "max_tokens": DEFAULT_MAX_TOKENS + 8192}),
    ({"reasoning": {"effort": "none"}}, {"max_tokens": DEFAULT_MAX_TOKENS}),
    ({"text": {"format": {"type": "text"}}}, {}),
    ({"user": "u1"}, {"metadata": {"user_id": "u1"}}),
    ({"metadata": {"a": "b"}, "store": False, "include": ["reasoning.encrypted_content"],
      "truncation": "disabled", "service_tier": "auto", "stream_options": {"include_obfuscation": False}}, {}),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
                                              "filename": "a.pdf"}]}]},
     {"messages": [{"role": "user", "content": [{"type": "document", "title": "a.pdf", "source": {
         "type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]}),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     {"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}),
])
def test_request_table(request_fields, expected):
    body = build(**request_fields)
    base = {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS, "messages": [user("hi")]}
    assert body == {**base, **expected}


def test_history_merges_roles_and_puts_tool_results_first():
    history = canonical_input([
        {"role": "user", "content": "a"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}],
         "encrypted_content": "sig_1"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "redacted:DATA"},
        {"role": "assistant", "content": "b"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": ""},
    ])
    body = build(history, input=[{"role": "user", "content": "and"},
                                 {"type": "function_call_output", "call_id": "c1", "output": "r1"},
                                 {"type": "function_call_output", "call_id": "c2",
                                  "output": [{"type": "input_text", "text": "r2"}]}])
    assert body["messages"] == [
        user("a"),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "sig_1"},
            {"type": "redacted_thinking", "data": "DATA"},
            {"type": "text", "text": "b"},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "c2", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "r2"}]},
            {"type": "text", "text": "and"}]}]


@pytest.mark.parametrize("request_fields, param", [
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"top_p": 2}, "top_p"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"reasoning": {"summary": "detailed"}}, "reasoning.summary"),
    ({"stop": [""]}, "stop"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].encrypted_content"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0].arguments"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input[0].content[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x", "detail": "high"}]}]},
     "input[0].content[0].detail"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": 5}, "input"),
])
def test_refusals_name_the_field(request_fields, param):
    with pytest.raises(GatewayError) as info:
        build(**request_fields)
    assert info.value.status == 400 and info.value.param == param, info.value.message


def test_empty_assistant_text_does_not_go_back():
    history = canonical_input([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
                               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}])
    assert build(history, input=[{"type": "function_call_output", "call_id": "c1", "output": "x"}])["messages"][1] == {
        "role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]}


def test_history_errors_name_previous_response_id():
    with pytest.raises(GatewayError) as info:
        build([{"type": "web_search_call", "id": "ws_1"}])
    assert info.value.param == "previous_response_id.type"


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
           "content": [{"type": "thinking", "thinking": "hmm so", "signature": "sig_9"},
                       {"type": "redacted_thinking", "data": "XYZ"},
                       {"type": "text", "text": "Calling the tool now."},
                       {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Paris", "n": 1}}],
           "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 4,
                     "cache_creation_input_tokens": 2}}


def final(events: list[ev.Event]) -> dict[str, Any]:
    return whole(response_object({}, response_id="resp_1", model="m", provider_type="anthropic"), events).response


def test_whole_answer_and_usage():
    r = final(D.decode_whole(MESSAGE))
    thinking, redacted, text, call = r["output"]
    assert thinking["content"][0]["text"] == "hmm so" and thinking["encrypted_content"] == "sig_9"
    assert redacted["encrypted_content"] == "redacted:XYZ" and redacted["content"][0]["text"] == ""
    assert text["content"][0]["text"] == "Calling the tool now."
    assert (call["call_id"], call["name"], orjson.loads(call["arguments"])) == ("toolu_1", "f", {"city": "Paris", "n": 1})
    assert r["usage"]["input_tokens"] == 16 and r["usage"]["input_tokens_details"] == {
        "cached_tokens": 4, "cache_write_tokens": 2}
    assert r["status"] == "completed"
    # the round trip: what came out goes back to Anthropic as it came
    history = canonical_input(r["output"])
    assert build(history)["messages"][0]["content"] == [
        {"type": "thinking", "thinking": "hmm so", "signature": "sig_9"},
        {"type": "redacted_thinking", "data": "XYZ"},
        {"type": "text", "text": "Calling the tool now."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Paris", "n": 1}}]


@pytest.mark.parametrize("stop, status, reason", [
    ("end_turn", "completed", None), ("stop_sequence", "completed", None), ("max_tokens", "incomplete", "max_output_tokens"),
    ("refusal", "incomplete", "content_filter"), ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
])
def test_stop_reasons(stop, status, reason):
    r = final(D.decode_whole({**MESSAGE, "stop_reason": stop}))
    assert r["status"] == status and (r["incomplete_details"] or {}).get("reason") == reason


def sse_bytes(message: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in FakeMessages.stream_events(message))


def decode_stream(raw: bytes, step: int) -> list[ev.Event]:
    parser, decoder, out = SSEParser(), D.stream_decoder(), []
    for i in range(0, len(raw), step):
        for sse in parser.feed(raw[i:i + step]):
            out += decoder.feed(orjson.loads(sse.data))
    return out


def test_stream_split_at_every_byte_gives_the_whole_answer():
    raw = sse_bytes(MESSAGE)
    at_once = decode_stream(raw, len(raw))
    assert decode_stream(raw, 1) == at_once
    for cut in range(1, len(raw)):    # every two-piece split
        parser, decoder, out = SSEParser(), D.stream_decoder(), []
        for piece in (raw[:cut], raw[cut:]):
            for sse in parser.feed(piece):
                out += decoder.feed(orjson.loads(sse.data))
        assert out == at_once, cut
    streamed, whole_answer = final(at_once), final(D.decode_whole(MESSAGE))
    for r in (streamed, whole_answer):
        for item in r["output"]:
            item.pop("id")
    assert streamed["output"] == whole_answer["output"] and streamed["usage"] == whole_answer["usage"]


def test_stream_error_frame_and_unknown_block():
    decoder = D.stream_decoder()
    assert list(decoder.feed({"type": "ping"})) == []
    (failure,) = decoder.feed({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    assert failure == ev.Failure("rate_limit_exceeded", "The provider failed: slow")
    (failure,) = decoder.feed({"type": "content_block_start", "index": 0,
                               "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search"}})
    assert isinstance(failure, ev.Failure) and "server_tool_use" in failure.message
    (failure,) = D.decode_whole({**MESSAGE, "content": [{"type": "server_tool_use", "id": "s"}]})
    assert isinstance(failure, ev.Failure) and "server_tool_use" in failure.message
    assert final(D.decode_whole({**MESSAGE, "content": [{"type": "text", "text": "a"}, {"type": "mystery"}]}))[
        "status"] == "failed"
