"""The Bedrock Converse dialect (proxy/bridge/converse.py): request building (every 400), the
whole answer, the stream as botocore yields it — from bytes split at every boundary through
botocore's own event-stream decoder and parser — and the real aiobotocore ``bedrock-runtime``
client against the fake (tests/fakes/bedrock_runtime.py), which proves the fake's framing."""
from __future__ import annotations

import base64
import copy
from typing import Any, Iterator

import botocore.session
import orjson
import pytest
from aiobotocore.session import get_session
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser
from botocore.validate import ParamValidator

from proxy.bridge.converse import (REDACTED_PREFIX, ConverseDialect, ConverseStreamDecoder, call_converse,
                                   converse_stream_events, document_name)
from proxy.bridge.events import (Failure, Finish, ItemDone, ReasoningDelta, ReasoningStart, TextDelta, TextStart,
                                 ToolArgsDelta, ToolCallStart, Usage)
from proxy.bridge.request import StoredFile
from proxy.errors import GatewayError
from tests.fakes.bedrock_runtime import FakeBedrockRuntime, model_id_of
from tests.fakes.eventstream import event_frame, exception_frame
from tests.support import eventually

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET4 = "us.anthropic.claude-sonnet-4-20250514-v1:0"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
FILES = {
    "file-doc": StoredFile("s3://bkt/t/file-doc/report.pdf", "report.pdf", "application/pdf"),
    "file-img": StoredFile("s3://bkt/t/file-img/cat.png", "cat.png", "image/png"),
    "file-exe": StoredFile("s3://bkt/t/file-exe/run.exe", "run.exe", None),
    "file-gcs": StoredFile("gs://bkt/x/file-gcs/a.pdf", "a.pdf", "application/pdf"),
}
DIALECT = ConverseDialect().for_files(FILES)
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather now",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}]
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "18C"}

_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")


def build(request: dict[str, Any], history: list[dict[str, Any]] | None = None, model: str = CLAUDE,
          stream: bool = False) -> dict[str, Any]:
    call = DIALECT.build_call(request, history or [], model, stream=stream)
    assert call.operation == ("converse_stream" if stream else "converse")
    # What the real client would accept: botocore's own parameter validation of the operation.
    shape = _MODEL.operation_model("ConverseStream" if stream else "Converse").input_shape
    report = ParamValidator().validate(call.body, shape)
    assert not report.has_errors(), report.generate_report()
    return call.body


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


# ------------------------------------------------------------------------------ requests
BUILD_CASES = [
    ("string input", {"input": "Hi"}, [],
     {"modelId": CLAUDE, "messages": [{"role": "user", "content": [{"text": "Hi"}]}]}),
    ("instructions and developer messages become system, in order",
     {"instructions": "Be brief.", "input": [{"role": "developer", "content": "Use metric."},
                                             {"role": "user", "content": "Hi"}]}, [],
     {"system": [{"text": "Be brief."}, {"text": "Use metric."}]}),
    ("consecutive user messages merge; roles alternate",
     {"input": [{"role": "user", "content": "a"}, {"type": "message", "role": "user", "content": "b"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "d"}]}]}, [],
     {"messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                   {"role": "assistant", "content": [{"text": "c"}]},
                   {"role": "user", "content": [{"text": "d"}]}]}),
    ("data: URL image → bytes", {"input": [user({"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"})]},
     [], {"messages": [{"role": "user", "content": [
         {"image": {"format": "png", "source": {"bytes": b"\x89PNG\r\n\x1a\nfake"}}}]}]}),
    ("image/jpg data URL is jpeg", {"input": [user({"type": "input_image", "image_url": f"data:image/jpg;base64,{PNG}"})]},
     [], {"messages": [{"role": "user", "content": [
         {"image": {"format": "jpeg", "source": {"bytes": b"\x89PNG\r\n\x1a\nfake"}}}]}]}),
    ("s3:// image → s3Location", {"input": [user({"type": "input_image", "image_url": "s3://b/k/x.webp"})]}, [],
     {"messages": [{"role": "user", "content": [
         {"image": {"format": "webp", "source": {"s3Location": {"uri": "s3://b/k/x.webp"}}}}]}]}),
    ("input_file by gateway id → document in S3",
     {"input": [user({"type": "input_text", "text": "Sum up"}, {"type": "input_file", "file_id": "file-doc"})]}, [],
     {"messages": [{"role": "user", "content": [{"text": "Sum up"}, {"document": {
         "format": "pdf", "name": "report", "source": {"s3Location": {"uri": "s3://bkt/t/file-doc/report.pdf"}}}}]}]}),
    ("input_image by gateway id → image in S3", {"input": [user({"type": "input_image", "file_id": "file-img"})]}, [],
     {"messages": [{"role": "user", "content": [
         {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://bkt/t/file-img/cat.png"}}}}]}]}),
    ("function call and output keep their id; tools declared; choice auto",
     {"input": [user({"type": "input_text", "text": "Weather?"}), CALL, OUTPUT], "tools": TOOLS, "tool_choice": "auto"},
     [], {"messages": [
         {"role": "user", "content": [{"text": "Weather?"}]},
         {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                                                        "input": {"city": "Paris"}}}]},
         {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}}]}],
         "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather now", "inputSchema": {
             "json": TOOLS[0]["parameters"]}}}], "toolChoice": {"auto": {}}}}),
    ("history comes first, then input",
     {"input": [OUTPUT], "tools": TOOLS}, [{"role": "user", "content": "Weather?"}, CALL],
     {"messages": [
         {"role": "user", "content": [{"text": "Weather?"}]},
         {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                                                        "input": {"city": "Paris"}}}]},
         {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}}]}]}),
    ("tool output as parts", {"input": [CALL, {**OUTPUT, "output": [{"type": "input_text", "text": "18"},
                                                                     {"type": "input_text", "text": "C"}]}],
                              "tools": TOOLS}, [],
     {"messages": [
         {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                                                        "input": {"city": "Paris"}}}]},
         {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [
             {"text": "18"}, {"text": "C"}]}}]}]}),
    ("tool_choice required → any", {"input": "x", "tools": TOOLS, "tool_choice": "required"}, [],
     {"toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather now", "inputSchema": {
         "json": TOOLS[0]["parameters"]}}}], "toolChoice": {"any": {}}}}),
    ("tool_choice function → tool", {"input": "x", "tools": TOOLS,
                                     "tool_choice": {"type": "function", "name": "get_weather"}}, [],
     {"toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather now", "inputSchema": {
         "json": TOOLS[0]["parameters"]}}}], "toolChoice": {"tool": {"name": "get_weather"}}}}),
    ("a tool without parameters gets an empty object schema",
     {"input": "x", "tools": [{"type": "function", "name": "now"}]}, [],
     {"toolConfig": {"tools": [{"toolSpec": {"name": "now", "inputSchema": {
         "json": {"type": "object", "properties": {}}}}}]}}),
    ("inference settings", {"input": "x", "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": "END"},
     [], {"inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}}),
    ("json_schema → outputConfig with the schema as JSON text",
     {"input": "x", "text": {"format": {"type": "json_schema", "name": "city", "strict": True,
                                        "schema": {"type": "object", "properties": {"n": {"type": "string"}}}}}}, [],
     {"outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
         "schema": '{"type":"object","properties":{"n":{"type":"string"}}}', "name": "city"}}}}}),
    ("json_object → any JSON object", {"input": "x", "text": {"format": {"type": "json_object"}}}, [],
     {"outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
         "schema": '{"type":"object"}'}}}}}),
    ("text.format text is the default", {"input": "x", "text": {"format": {"type": "text"}, "verbosity": "medium"}},
     [], {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("metadata → requestMetadata", {"input": "x", "metadata": {"team": "search-1", "ticket": "A#12"}}, [],
     {"requestMetadata": {"team": "search-1", "ticket": "A#12"}}),
    ("reasoning history goes back with its signature",
     {"input": "next"}, [{"role": "user", "content": "q"},
                         {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
                          "encrypted_content": "sig-1"},
                         {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]}],
     {"messages": [{"role": "user", "content": [{"text": "q"}]},
                   {"role": "assistant", "content": [
                       {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig-1"}}},
                       {"text": "a"}]},
                   {"role": "user", "content": [{"text": "next"}]}]}),
    ("redacted reasoning goes back as bytes",
     {"input": "next"}, [{"role": "user", "content": "q"},
                         {"type": "reasoning", "summary": [], "encrypted_content": REDACTED_PREFIX + "AAEC"},
                         {"role": "assistant", "content": "a"}],
     {"messages": [{"role": "user", "content": [{"text": "q"}]},
                   {"role": "assistant", "content": [{"reasoningContent": {"redactedContent": b"\x00\x01\x02"}},
                                                     {"text": "a"}]},
                   {"role": "user", "content": [{"text": "next"}]}]}),
    ("reasoning without a signature does not go back; the turns around it merge",
     {"input": "next"}, [{"role": "user", "content": "q"},
                         {"type": "reasoning", "summary": [{"type": "summary_text", "text": "openai's"}]}],
     {"messages": [{"role": "user", "content": [{"text": "q"}, {"text": "next"}]}]}),
    ("an empty instruction says nothing", {"instructions": "", "input": [{"role": "system", "content": ""},
                                                                        {"role": "user", "content": "x"}]}, [],
     {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("bridge fields and nulls are not the dialect's business",
     {"input": "x", "model": "b/m", "stream": True, "store": False, "previous_response_id": "resp_1",
      "background": False, "temperature": None, "user": "u1", "include": ["reasoning.encrypted_content"],
      "parallel_tool_calls": True, "service_tier": "auto", "truncation": "disabled"}, [],
     {"modelId": CLAUDE, "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
]


@pytest.mark.parametrize("name,request_,history,expected", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_build_call(name: str, request_: dict[str, Any], history: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    body = build(request_, history)
    for key, value in expected.items():
        assert body[key] == value, key


def test_stream_call_is_converse_stream_with_the_same_body() -> None:
    assert build({"input": "x"}, stream=True) == build({"input": "x"})


def test_reasoning_effort_sets_claude_thinking_budget() -> None:
    body = build({"input": "x", "reasoning": {"effort": "medium", "summary": "auto"}}, model=SONNET4)
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 8192}}
    assert body["inferenceConfig"]["maxTokens"] == 8192 + 8192
    streamed = build({"input": "x", "reasoning": {"effort": "xhigh"}}, model=SONNET4, stream=True)
    assert (streamed["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            streamed["inferenceConfig"]["maxTokens"]) == (32768, 32768 + 8192)
    whole = build({"input": "x", "reasoning": {"effort": "xhigh"}}, model=SONNET4)  # no stream: ≤ 21,333 tokens
    assert (whole["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            whole["inferenceConfig"]["maxTokens"]) == (21333 - 1024, 21333)
    capped = build({"input": "x", "reasoning": {"effort": "xhigh"}, "max_output_tokens": 3000}, model=SONNET4)
    assert capped["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 2999
    assert capped["inferenceConfig"]["maxTokens"] == 3000
    for model in ("anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-opus-4-1-20250805-v1:0",
                  f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{SONNET4}"):
        assert "additionalModelRequestFields" in build({"input": "x", "reasoning": {"effort": "low"}}, model=model)
    assert "additionalModelRequestFields" not in build({"input": "x", "reasoning": {"effort": "none"}}, model=SONNET4)


def test_document_names_follow_bedrock_rules() -> None:
    assert document_name("Q3 report (final) [v2].pdf") == "Q3 report (final) [v2]"
    assert document_name("a__b  c.txt") == "a--b c"
    assert document_name("über.md") == "-ber"
    assert document_name(".pdf") == "-pdf"
    assert len(document_name("x" * 300 + ".txt")) == 200


# Each refused request and the param the 400 names.
REFUSED = [
    ({"input": "x", "top_logprobs": 2}, "top_logprobs"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "instructions": 3}, "instructions"),
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": 5}, "input"),
    ({"input": ["hi"]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [user({"type": "input_audio", "input_audio": {}})]}, "input[0].content[0].type"),
    ({"input": [user({"type": "input_text"})]}, "input[0].content[0].text"),
    ({"input": [user({"type": "input_image", "image_url": "https://example.com/cat.png"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": "data:image/png;base64,@@@"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": "data:image/png,plain"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": f"data:image/svg+xml;base64,{PNG}"})]},
     "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": "s3://b/k/photo"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"})]},
     "input[0].content[0].file_data"),
    ({"input": [user({"type": "input_file", "file_url": "https://example.com/a.pdf"})]}, "input[0].content[0].file_url"),
    ({"input": [user({"type": "input_file"})]}, "input[0].content[0].file_id"),
    ({"input": [user({"type": "input_file", "file_id": "file-exe"})]}, "input[0].content[0].file_id"),
    ({"input": [user({"type": "input_file", "file_id": "file-gcs"})]}, "input[0].content[0].file_id"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "s3://b/x.png"}]},
                user({"type": "input_text", "text": "x"})]}, "input[0].content[0]"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "s3://b/x.png"}]}]},
     "input[0].content[0]"),
    ({"input": [OUTPUT], "tools": TOOLS}, "input[0].call_id"),
    ({"input": [{**CALL, "arguments": "{nope"}, OUTPUT], "tools": TOOLS}, "input[0].arguments"),
    ({"input": [{**CALL, "arguments": "[1]"}, OUTPUT], "tools": TOOLS}, "input[0].arguments"),
    ({"input": [{**CALL, "arguments": {"city": "Paris"}}], "tools": TOOLS}, "input[0].arguments"),
    ({"input": [{**CALL, "call_id": "call 1"}, {**OUTPUT, "call_id": "call 1"}], "tools": TOOLS}, "input[0].call_id"),
    ({"input": [CALL, {**OUTPUT, "output": 3}], "tools": TOOLS}, "input[1].output"),
    ({"input": [CALL, {**OUTPUT, "output": [{"type": "output_text", "text": "x"}]}], "tools": TOOLS},
     "input[1].output[0].type"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 1.5}, "max_output_tokens"),
    ({"input": "x", "temperature": 1.5}, "temperature"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "top_p": 2}, "top_p"),
    ({"input": "x", "stop": 5}, "stop"),
    ({"input": "x", "stop": ["END", ""]}, "stop"),
    ({"input": "x", "tools": {"type": "function"}}, "tools"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "function", "name": "get weather"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "defer_loading": True}]}, "tools[0].defer_loading"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": "obj"}]}, "tools[0].parameters"),
    ({"input": "x", "tools": TOOLS, "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}},
     "tool_choice"),
    ({"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": [CALL, OUTPUT], "tools": TOOLS, "tool_choice": "none"}, "tool_choice"),
    ({"input": [CALL, OUTPUT]}, "tools"),
    ({"input": "x", "text": "json"}, "text"),
    ({"input": "x", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": "x", "text": {"verbosity": "low"}}, "text.verbosity"),
    ({"input": "x", "reasoning": {"effort": "high"}}, "reasoning.effort"),
    ({"input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
    ({"input": "x", "reasoning": {"summary": "auto"}}, "reasoning.summary"),
    ({"input": "x", "reasoning": {"effort": "low", "summary": "verbose"}}, "reasoning.summary"),
    ({"input": "x", "reasoning": {"effort": "low", "mode": "x"}}, "reasoning.mode"),
    ({"input": "x", "reasoning": "high"}, "reasoning"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata"),
    ({"input": "x", "metadata": {"k": "caf\u00e9"}}, "metadata.k"),
    ({"input": "x", "metadata": {"k?": "v"}}, "metadata"),
    ({"input": "x", "metadata": {"k": "v" * 257}}, "metadata.k"),
    ({"input": "x", "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"input": "x", "include": ["message.output_text.logprobs"]}, "include[0]"),
    ({"input": "x", "include": "all"}, "include"),
    ({"input": "x", "service_tier": "flex"}, "service_tier"),
    ({"input": "x", "truncation": "auto"}, "truncation"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": REDACTED_PREFIX + "@@"},
                {"role": "user", "content": "x"}]}, "input[0].encrypted_content"),
]
REFUSED_SONNET4 = [
    ({"input": "x", "reasoning": {"effort": "low"}, "temperature": 1}, "temperature"),
    ({"input": "x", "reasoning": {"effort": "low"}, "top_p": 0.95}, "top_p"),
    ({"input": "x", "reasoning": {"effort": "low"}, "tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "reasoning": {"effort": "low"}, "max_output_tokens": 1000}, "max_output_tokens"),
]


@pytest.mark.parametrize("request_,param", REFUSED, ids=[p for _, p in REFUSED])
def test_unsupported_is_a_400_naming_the_field(request_: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call(request_, [], CLAUDE, stream=False)
    assert (err.value.status, err.value.param) == (400, param), err.value.message
    assert err.value.message.startswith(param)


@pytest.mark.parametrize("request_,param", REFUSED_SONNET4, ids=[p for _, p in REFUSED_SONNET4])
def test_thinking_conflicts_are_400s(request_: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call(request_, [], SONNET4, stream=False)
    assert (err.value.status, err.value.param) == (400, param)


def test_unknown_file_id_is_a_404_naming_it() -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call({"input": [user({"type": "input_file", "file_id": "file-nope"})]}, [], CLAUDE, stream=False)
    assert (err.value.status, err.value.param) == (404, "input[0].content[0].file_id")
    with pytest.raises(GatewayError):  # the unbound dialect knows no files at all
        ConverseDialect().build_call({"input": [user({"type": "input_file", "file_id": "file-doc"})]}, [], CLAUDE,
                                     stream=False)


def test_bad_model_id_is_a_400() -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call({"input": "x"}, [], "bad model\n", stream=False)
    assert err.value.param == "model"


def test_history_errors_name_the_history_item() -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call({"input": "x"}, [{"type": "function_call_output", "call_id": "c9", "output": "x"}], CLAUDE,
                           stream=False)
    assert err.value.param == "history[0].call_id"


# ------------------------------------------------------------------------------ whole answers
def answer(content: list[dict[str, Any]], stop: str = "end_turn", usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": usage or {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {"latencyMs": 1}}


U = Usage(3, 2)
WHOLE = [
    ("text", answer([{"text": "Hi"}]), [TextStart(0), TextDelta(0, "Hi"), ItemDone(0), Finish("completed", U)]),
    ("text then tool use", answer([{"text": "Let me look."}, {"toolUse": {
        "toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}], "tool_use"),
     [TextStart(0), TextDelta(0, "Let me look."), ItemDone(0), ToolCallStart(1, "tooluse_1", "get_weather"),
      ToolArgsDelta(1, '{"city":"Paris"}'), ItemDone(1), Finish("completed", U)]),
    ("reasoning with signature", answer([{"reasoningContent": {"reasoningText": {"text": "hm", "signature": "s"}}},
                                         {"text": "ok"}]),
     [ReasoningStart(0), ReasoningDelta(0, "hm", "s"), ItemDone(0), TextStart(1), TextDelta(1, "ok"), ItemDone(1),
      Finish("completed", U)]),
    ("redacted reasoning", answer([{"reasoningContent": {"redactedContent": b"\x00\x01\x02"}}]),
     [ReasoningStart(0), ReasoningDelta(0, "", REDACTED_PREFIX + "AAEC"), ItemDone(0), Finish("completed", U)]),
    ("citations are text", answer([{"citationsContent": {"content": [{"text": "a"}, {"text": "b"}], "citations": []}}]),
     [TextStart(0), TextDelta(0, "ab"), ItemDone(0), Finish("completed", U)]),
    ("max tokens", answer([{"text": "Hi"}], "max_tokens"),
     [TextStart(0), TextDelta(0, "Hi"), ItemDone(0), Finish("incomplete", U, "max_output_tokens")]),
    ("context window", answer([], "model_context_window_exceeded"), [Finish("incomplete", U, "max_output_tokens")]),
    ("guardrail", answer([], "guardrail_intervened"), [Finish("incomplete", U, "content_filter")]),
    ("content filter", answer([], "content_filtered"), [Finish("incomplete", U, "content_filter")]),
    ("stop sequence", answer([], "stop_sequence"), [Finish("completed", U)]),
    ("malformed tool use", answer([], "malformed_tool_use"),
     [Failure("server_error", 'Bedrock ended the turn with stopReason "malformed_tool_use"')]),
    ("cache usage", answer([], usage={"inputTokens": 3, "outputTokens": 2, "totalTokens": 105,
                                      "cacheReadInputTokens": 80, "cacheWriteInputTokens": 20}),
     [Finish("completed", Usage(103, 2, cached_tokens=80))]),
]


@pytest.mark.parametrize("name,answer_,expected", WHOLE, ids=[w[0] for w in WHOLE])
def test_decode_whole(name: str, answer_: dict[str, Any], expected: list[Any]) -> None:
    assert DIALECT.decode_whole(answer_) == expected


# ------------------------------------------------------------------------------ streams
_STREAM_SHAPE = _MODEL.operation_model("ConverseStream").output_shape.members["stream"]


class _Raw:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        pass


def botocore_events(chunks: list[bytes]) -> list[dict[str, Any]]:
    """What botocore's own EventStream yields for these raw bytes; an exception event becomes
    its event dict, as :func:`converse_stream_events` yields it."""
    from botocore.exceptions import EventStreamError

    out: list[dict[str, Any]] = []
    try:
        for event in EventStream(_Raw(chunks), _STREAM_SHAPE, EventStreamJSONParser(), "ConverseStream"):
            out.append(event)
    except EventStreamError as exc:
        out.append({exc.response["Error"]["Code"]: {"message": exc.response["Error"]["Message"]}})
    return out


def decode(events: list[dict[str, Any]]) -> list[Any]:
    decoder = ConverseStreamDecoder()
    out = [e for event in events for e in decoder.feed(event)]
    return out + decoder.close()


FRAMES = [
    event_frame("messageStart", {"role": "assistant"}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}, "p": "abc"}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sg"}}}),
    event_frame("contentBlockStop", {"contentBlockIndex": 0}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Héllo"}}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": " wörld"}}),
    event_frame("contentBlockStop", {"contentBlockIndex": 1}),
    event_frame("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"a":'}}}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "1}"}}}),
    event_frame("contentBlockStop", {"contentBlockIndex": 2}),
    event_frame("messageStop", {"stopReason": "tool_use"}),
    event_frame("metadata", {"usage": {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14,
                                       "cacheReadInputTokens": 2}, "metrics": {"latencyMs": 3}}),
]
EXPECTED = [
    ReasoningStart(0), ReasoningDelta(0, "hm"), ReasoningDelta(0, "", "sg"), ItemDone(0),
    TextStart(1), TextDelta(1, "Héllo"), TextDelta(1, " wörld"), ItemDone(1),
    ToolCallStart(2, "t1", "f"), ToolArgsDelta(2, '{"a":'), ToolArgsDelta(2, "1}"), ItemDone(2),
    Finish("completed", Usage(7, 9, cached_tokens=2)),
]


def test_stream_decodes_botocore_events() -> None:
    assert decode(botocore_events(FRAMES)) == EXPECTED


def test_stream_split_at_every_byte_and_merged() -> None:
    """The transport hands botocore bytes cut anywhere: any split of the stream into two
    chunks, every byte alone, and every frame merged into one chunk decode alike."""
    data = b"".join(FRAMES)
    assert decode(botocore_events([data])) == EXPECTED
    assert decode(botocore_events([data[i:i + 1] for i in range(len(data))])) == EXPECTED
    for cut in range(1, len(data)):
        assert decode(botocore_events([data[:cut], data[cut:]])) == EXPECTED, cut


@pytest.mark.parametrize("name,code", [("throttlingException", "rate_limit_exceeded"),
                                       ("validationException", "invalid_prompt"),
                                       ("modelStreamErrorException", "server_error"),
                                       ("internalServerException", "server_error"),
                                       ("serviceUnavailableException", "server_error")])
def test_exception_events_are_failures(name: str, code: str) -> None:
    events = botocore_events([FRAMES[0], FRAMES[4], exception_frame(name, "it broke")])
    assert decode(events) == [TextStart(0), TextDelta(0, "Héllo"), Failure(code, "Bedrock: it broke")]


def test_stream_ends_without_a_finish() -> None:
    assert decode(botocore_events(FRAMES[:5]))[-1] == Failure("server_error", "The Bedrock stream ended before the turn did")
    # messageStop came but the usage did not: the turn is still finished
    assert decode(botocore_events(FRAMES[:12]))[-1] == Finish("completed", Usage(0, 0))


def test_stream_stop_reasons() -> None:
    for stop, finish in (("max_tokens", Finish("incomplete", Usage(1, 1), "max_output_tokens")),
                         ("guardrail_intervened", Finish("incomplete", Usage(1, 1), "content_filter"))):
        events = [{"messageStart": {"role": "assistant"}}, {"messageStop": {"stopReason": stop}},
                  {"metadata": {"usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}}]
        assert decode(events) == [finish]


def test_tool_input_before_its_start_is_a_failure() -> None:
    events = [{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{}"}}}},
              {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": "late"}}}]
    assert decode(events) == [Failure("server_error", "Bedrock streamed tool input before the tool use started")]


def test_whole_and_streamed_answers_agree() -> None:
    content, stop, usage = ([{"reasoningContent": {"reasoningText": {"text": "think", "signature": "sg"}}},
                             {"text": "Hello there"},
                             {"toolUse": {"toolUseId": "t9", "name": "f", "input": {"a": [1, 2]}}}], "tool_use", None)
    fake = FakeBedrockRuntime()
    frames = fake._frames(content, stop, usage)
    streamed = decode(botocore_events(frames))
    whole = DIALECT.decode_whole(answer(content, stop, {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18}))

    def merged(events: list[Any]) -> list[Any]:  # deltas joined per item
        out: list[Any] = []
        for e in events:
            if out and type(e) is type(out[-1]) and isinstance(e, (TextDelta, ToolArgsDelta)) and e.item == out[-1].item:
                field = "text" if isinstance(e, TextDelta) else "json_fragment"
                out[-1] = type(e)(e.item, getattr(out[-1], field) + getattr(e, field))
            elif out and isinstance(e, ReasoningDelta) and isinstance(out[-1], ReasoningDelta):
                out[-1] = ReasoningDelta(e.item, out[-1].text + e.text, e.signature or out[-1].signature)
            else:
                out.append(e)
        return out

    assert merged(streamed) == merged(whole)


# ------------------------------------------------------------------------------ the real client
@pytest.fixture
def fake() -> Iterator[FakeBedrockRuntime]:
    with FakeBedrockRuntime() as f:
        yield f


def client(fake: FakeBedrockRuntime) -> Any:
    return get_session().create_client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url,
        aws_access_key_id=fake.access_key, aws_secret_access_key="testing")


async def test_converse_through_aiobotocore(fake: FakeBedrockRuntime) -> None:
    fake.answer([{"text": "It is 18C."}, {"toolUse": {"toolUseId": "tooluse_x", "name": "get_weather",
                                                      "input": {"city": "Paris"}}}], "tool_use",
                {"inputTokens": 20, "outputTokens": 6, "cacheReadInputTokens": 4})
    request = {"input": [user({"type": "input_text", "text": "Weather?"},
                              {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"})],
               "instructions": "Be brief.", "tools": TOOLS, "max_output_tokens": 64, "metadata": {"t": "1"}}
    call = DIALECT.build_call(request, [], CLAUDE, stream=False)
    async with client(fake) as c:
        events = DIALECT.decode_whole(await call_converse(c, call))
    assert events == [TextStart(0), TextDelta(0, "It is 18C."), ItemDone(0),
                      ToolCallStart(1, "tooluse_x", "get_weather"), ToolArgsDelta(1, '{"city":"Paris"}'), ItemDone(1),
                      Finish("completed", Usage(24, 6, cached_tokens=4))]
    rec = fake.requests[-1]
    assert model_id_of(rec.path) == CLAUDE and rec.path.endswith("/converse")
    sent = rec.json
    assert sent["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}  # base64 on the wire
    assert sent["system"] == [{"text": "Be brief."}] and sent["requestMetadata"] == {"t": "1"}
    assert "modelId" not in sent  # it travels in the path


async def test_converse_stream_through_aiobotocore(fake: FakeBedrockRuntime) -> None:
    content = [{"reasoningContent": {"reasoningText": {"text": "Let me think", "signature": "sig=="}}},
               {"text": "Hello there, friend"},
               {"toolUse": {"toolUseId": "tooluse_y", "name": "f", "input": {"q": "x" * 10}}}]
    fake.answer(content, "tool_use")
    call = DIALECT.build_call({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, [], CLAUDE, stream=True)
    decoder = DIALECT.stream_decoder()
    got: list[Any] = []
    async with client(fake) as c:
        async for event in converse_stream_events(c, call):
            got.extend(decoder.feed(event))
    got.extend(decoder.close())
    assert got == decode(botocore_events(fake._frames(content, "tool_use", None)))
    assert fake.requests[-1].path.endswith("/converse-stream")
    text = "".join(e.text for e in got if isinstance(e, TextDelta))
    args = "".join(e.json_fragment for e in got if isinstance(e, ToolArgsDelta))
    assert text == "Hello there, friend" and orjson.loads(args) == {"q": "x" * 10}
    assert fake.streams.streams_completed == 1


async def test_exception_event_mid_stream(fake: FakeBedrockRuntime) -> None:
    fake.answer([{"text": "Hello there"}])
    fake.fail_stream_after(3, "modelStreamErrorException", "The model broke.")
    decoder = DIALECT.stream_decoder()
    got: list[Any] = []
    async with client(fake) as c:
        async for event in converse_stream_events(c, DIALECT.build_call({"input": "x"}, [], CLAUDE, stream=True)):
            got.extend(decoder.feed(event))
    assert got == [TextStart(0), TextDelta(0, "Hell"), TextDelta(0, "o th"), Failure("server_error", "Bedrock: The model broke.")]


async def test_connection_dropped_mid_stream(fake: FakeBedrockRuntime) -> None:
    fake.answer([{"text": "Hello there"}])
    fake.fail_stream_after(2)
    decoder = DIALECT.stream_decoder()
    got: list[Any] = []
    async with client(fake) as c:
        with pytest.raises(GatewayError) as err:  # aiohttp's payload error, translated for the run layer
            async for event in converse_stream_events(c, DIALECT.build_call({"input": "x"}, [], CLAUDE, stream=True)):
                got.extend(decoder.feed(event))
    assert (err.value.status, err.value.code) == (502, "upstream_stream_error")
    assert err.value.message == "The stream from provider 'bedrock' broke: ClientPayloadError."
    got.extend(decoder.close())
    assert got == [TextStart(0), TextDelta(0, "Hell"), Failure("server_error", "The Bedrock stream ended before the turn did")]


async def test_closing_the_iterator_closes_the_upstream_stream(fake: FakeBedrockRuntime) -> None:
    fake.answer([{"text": "Hello there, this is long"}])
    gate = fake.gate_stream_after(2)
    async with client(fake) as c:
        events = converse_stream_events(c, DIALECT.build_call({"input": "x"}, [], CLAUDE, stream=True))
        assert "messageStart" in await events.__anext__()
        await events.aclose()  # what a client disconnect does to the wiring's iteration
        assert await eventually(lambda: fake.streams.client_disconnects == 1, timeout=20)
    gate.set()
    assert fake.streams.streams_completed == 0


@pytest.mark.parametrize("status,name,expect", [
    (429, "ThrottlingException", (429, "rate_limit_exceeded", True)),
    (400, "ValidationException", (400, "invalid_request_error", False)),
    (404, "ResourceNotFoundException", (400, "model_not_found", False)),
    (403, "AccessDeniedException", (502, "upstream_access_denied", False)),
    (503, "ServiceUnavailableException", (503, "upstream_unavailable", True)),
])
async def test_http_errors_become_gateway_errors(fake: FakeBedrockRuntime, status: int, name: str,
                                                 expect: tuple[int, str, bool]) -> None:
    from aiobotocore.config import AioConfig

    async with get_session().create_client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url, aws_access_key_id=fake.access_key,
            aws_secret_access_key="testing", config=AioConfig(retries={"total_max_attempts": 1})) as c:
        for stream in (False, True):
            fake.fail_next(status, {"message": f"{name} happened"}, headers={"x-amzn-ErrorType": name})
            call = DIALECT.build_call({"input": "x"}, [], CLAUDE, stream=stream)
            with pytest.raises(GatewayError) as err:
                if stream:
                    async for _ in converse_stream_events(c, call):
                        pass
                else:
                    await call_converse(c, call)
            assert (err.value.status, err.value.code, err.value.retryable) == expect
            assert "testing" not in err.value.message and fake.access_key not in err.value.message


async def test_the_fake_refuses_what_bedrock_refuses(fake: FakeBedrockRuntime) -> None:
    """The fake's checks are live: a tool block without toolConfig, a conversation that does
    not alternate, a wrong key."""
    async with client(fake) as c:
        bad = ConverseDialect().build_call({"input": "x"}, [], CLAUDE, stream=False)
        bad.body["messages"].append(copy.deepcopy(bad.body["messages"][0]))
        with pytest.raises(GatewayError) as err:
            await call_converse(c, bad)
        assert err.value.status == 400 and "alternate" in err.value.message
        bad = ConverseDialect().build_call({"input": "x"}, [], CLAUDE, stream=False)
        bad.body["messages"].append({"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]})
        with pytest.raises(GatewayError) as err:
            await call_converse(c, bad)
        assert "toolConfig" in err.value.message
    async with get_session().create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url,
                                           aws_access_key_id="AKIAWRONG", aws_secret_access_key="x") as c:
        with pytest.raises(GatewayError) as err:
            await call_converse(c, ConverseDialect().build_call({"input": "x"}, [], CLAUDE, stream=False))
        assert err.value.status == 502



async def test_a_body_botocore_refuses_is_a_400(fake: FakeBedrockRuntime) -> None:
    """A safety net: should a body ever break the service model, botocore refuses it before
    sending, and the client gets a 400, not a gateway error."""
    call = DIALECT.build_call({"input": "x"}, [], CLAUDE, stream=False)
    call.body["system"] = [{"text": ""}]
    async with client(fake) as c:
        for stream in (False, True):
            call.operation = "converse_stream" if stream else "converse"
            with pytest.raises(GatewayError) as err:
                if stream:
                    async for _ in converse_stream_events(c, call):
                        pass
                else:
                    await call_converse(c, call)
            assert err.value.status == 400 and "system[0].text" in err.value.message
    assert len(fake.requests) == 0
