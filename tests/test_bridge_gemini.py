"""The Vertex Gemini dialect (proxy/bridge/gemini.py): request building (every 400), the whole
answer, the SSE stream split at every byte through the gateway's SSE parser, ids minted for
function calls and kept across turns, thought signatures going back, and an HTTP client
against the fake (tests/fakes/gemini_upstream.py)."""
from __future__ import annotations

import base64
import itertools
from typing import Any, Iterator

import aiohttp
import orjson
import pytest

from proxy.bridge.events import (Failure, Finish, ItemDone, ReasoningDelta, ReasoningStart, TextDelta, TextStart,
                                 ToolArgsDelta, ToolCallStart, Usage)
from proxy.bridge.gemini import (MINTED_PREFIX, GeminiDialect, GeminiStreamDecoder, gemini_error, vertex_host,
                                 vertex_path)
from proxy.bridge.request import StoredFile
from proxy.errors import GatewayError
from proxy.transforms.sse import SSEParser
from tests.fakes.gemini_upstream import FakeGemini

MODEL = "gemini-2.5-flash"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
FILES = {
    "file-doc": StoredFile("gs://bkt/t/file-doc/report.pdf", "report.pdf", "application/pdf"),
    "file-untyped": StoredFile("gs://bkt/t/file-untyped/blob", "blob", None),
    "file-s3": StoredFile("s3://bkt/t/file-s3/a.pdf", "a.pdf", "application/pdf"),
}


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"{MINTED_PREFIX}{next(counter):020d}"


def dialect() -> GeminiDialect:
    return GeminiDialect("proj-1", "us-central1", new_call_id=ids()).for_files(FILES)


DIALECT = dialect()
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather now",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False},
          "strict": True}]
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "18C"}


def build(request: dict[str, Any], history: list[dict[str, Any]] | None = None, model: str = MODEL,
          stream: bool = False) -> dict[str, Any]:
    call = DIALECT.build_call(request, history or [], model, stream=stream)
    assert call.operation == "" and call.path == vertex_path("proj-1", "us-central1", model, stream=stream)
    return call.body


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def test_paths() -> None:
    assert vertex_path("p", "europe-west4", "gemini-2.5-pro", stream=False) == \
        "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    assert DIALECT.build_call({"input": "x"}, [], "publishers/google/models/gemini-2.5-pro", stream=True).path == \
        "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert vertex_host("us-central1") == "https://us-central1-aiplatform.googleapis.com"
    assert vertex_host("global") == "https://aiplatform.googleapis.com"


BUILD_CASES = [
    ("string input", {"input": "Hi"}, [], {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    ("instructions and system messages → systemInstruction",
     {"instructions": "Be brief.", "input": [{"role": "system", "content": "Metric."}, {"role": "user", "content": "Hi"}]},
     [], {"systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Metric."}]}}),
    ("assistant is model; same-role turns merge",
     {"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]}]}, [],
     {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                   {"role": "model", "parts": [{"text": "c"}]}]}),
    ("data: URL image → inlineData", {"input": [user({"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"})]},
     [], {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}]}),
    ("gs:// and https images → fileData typed by extension",
     {"input": [user({"type": "input_image", "image_url": "gs://b/x.JPG"},
                     {"type": "input_image", "image_url": "https://example.com/y.webp?s=1"})]}, [],
     {"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/x.JPG"}},
                                              {"fileData": {"mimeType": "image/webp",
                                                            "fileUri": "https://example.com/y.webp?s=1"}}]}]}),
    ("input_file by gateway id → fileData in GCS",
     {"input": [user({"type": "input_file", "file_id": "file-doc"})]}, [],
     {"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "application/pdf",
                                                            "fileUri": "gs://bkt/t/file-doc/report.pdf"}}]}]}),
    ("function call with an OpenAI id keeps it on call and response",
     {"input": [user({"type": "input_text", "text": "Weather?"}), CALL, OUTPUT], "tools": TOOLS}, [],
     {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]},
                   {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"},
                                                                 "id": "call_1"}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "id": "call_1",
                                                                    "response": {"output": "18C"}}}]}],
      "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather now",
                                           "parametersJsonSchema": TOOLS[0]["parameters"]}]}]}),
    ("a minted id is left out on both sides; the response finds its name",
     {"input": [{**OUTPUT, "call_id": f"{MINTED_PREFIX}7"}], "tools": TOOLS},
     [{"role": "user", "content": "Weather?"}, {**CALL, "call_id": f"{MINTED_PREFIX}7"}],
     {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]},
                   {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                    "response": {"output": "18C"}}}]}]}),
    ("a signature reasoning item goes onto the next function call; thoughts go back as thoughts",
     {"input": [OUTPUT], "tools": TOOLS},
     [{"role": "user", "content": "Weather?"},
      {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I should look."}], "encrypted_content": "c2ln"},
      {"type": "reasoning", "summary": [], "encrypted_content": "Y2FsbA=="}, CALL],
     {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]},
                   {"role": "model", "parts": [{"text": "I should look.", "thought": True, "thoughtSignature": "c2ln"},
                                               {"functionCall": {"name": "get_weather", "args": {"city": "Paris"},
                                                                 "id": "call_1"}, "thoughtSignature": "Y2FsbA=="}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "id": "call_1",
                                                                    "response": {"output": "18C"}}}]}]}),
    ("an assistant turn of a bare signature only is left out, and the user turns around it merge",
     {"input": "again"}, [{"role": "user", "content": "q"}, {"type": "reasoning", "summary": [], "encrypted_content": "x"}],
     {"contents": [{"role": "user", "parts": [{"text": "q"}, {"text": "again"}]}]}),
    ("tool choices", {"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "get_weather"}}, [],
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}}),
    ("tool choice none", {"input": [CALL, OUTPUT], "tools": TOOLS, "tool_choice": "none"}, [],
     {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    ("tool choice required", {"input": "x", "tools": TOOLS, "tool_choice": "required"}, [],
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    ("generation settings", {"input": "x", "max_output_tokens": 50, "temperature": 1.5, "top_p": 0.9,
                             "stop": ["A", "B"]}, [],
     {"generationConfig": {"maxOutputTokens": 50, "temperature": 1.5, "topP": 0.9, "stopSequences": ["A", "B"]}}),
    ("json_schema → responseMimeType + responseJsonSchema",
     {"input": "x", "text": {"format": {"type": "json_schema", "name": "c", "schema": TOOLS[0]["parameters"]}}}, [],
     {"generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": TOOLS[0]["parameters"]}}),
    ("json_object → JSON mode", {"input": "x", "text": {"format": {"type": "json_object"}}}, [],
     {"generationConfig": {"responseMimeType": "application/json"}}),
    ("reasoning effort → thinking budget, summary → thoughts",
     {"input": "x", "reasoning": {"effort": "low", "summary": "auto"}}, [],
     {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}}),
    ("effort none → no thinking", {"input": "x", "reasoning": {"effort": "none"}}, [],
     {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}),
    ("metadata → labels", {"input": "x", "metadata": {"team": "search-1", "env": ""}}, [],
     {"labels": {"team": "search-1", "env": ""}}),
]


@pytest.mark.parametrize("name,request_,history,expected", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_build_call(name: str, request_: dict[str, Any], history: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    body = build(request_, history)
    for key, value in expected.items():
        assert body[key] == value, key
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "labels"}


REFUSED = [
    ({"input": "x", "seed": 3}, "seed"),
    ({}, "input"),
    ({"input": [user({"type": "input_image", "image_url": "http://example.com/a.png"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": "https://example.com/image"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_image", "image_url": "data:image/png;base64,!!"})]}, "input[0].content[0].image_url"),
    ({"input": [user({"type": "input_file", "file_id": "file-untyped"})]}, "input[0].content[0].file_id"),
    ({"input": [user({"type": "input_file", "file_id": "file-s3"})]}, "input[0].content[0].file_id"),
    ({"input": [user({"type": "input_file", "file_url": "https://x/a.pdf"})]}, "input[0].content[0].file_url"),
    ({"input": [CALL, {**OUTPUT, "output": [{"type": "input_image", "image_url": "gs://b/a.png"}]}], "tools": TOOLS},
     "input[1].output[0]"),
    ({"input": [OUTPUT]}, "input[0].call_id"),
    ({"input": [{**CALL, "arguments": "nope"}, OUTPUT], "tools": TOOLS}, "input[0].arguments"),
    ({"input": "x", "tools": [{"type": "function", "name": "9lives"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0].type"),
    ({"input": "x", "temperature": 2.5}, "temperature"),
    ({"input": "x", "top_p": -0.1}, "top_p"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
    ({"input": "x", "reasoning": {"effort": "turbo"}}, "reasoning.effort"),
    ({"input": "x", "metadata": {"Team": "a"}}, "metadata"),
    ({"input": "x", "metadata": {"team": "Search"}}, "metadata.team"),
    ({"input": "x", "metadata": {"team": "a" * 64}}, "metadata.team"),
    ({"input": "x", "parallel_tool_calls": False}, "parallel_tool_calls"),
]


@pytest.mark.parametrize("request_,param", REFUSED, ids=[p for _, p in REFUSED])
def test_unsupported_is_a_400_naming_the_field(request_: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call(request_, [], MODEL, stream=False)
    assert (err.value.status, err.value.param) == (400, param), err.value.message


def test_reasoning_on_a_model_without_thinking_is_a_400() -> None:
    for model in ("gemini-2.0-flash-001", "gemini-1.5-pro"):
        with pytest.raises(GatewayError) as err:
            DIALECT.build_call({"input": "x", "reasoning": {"effort": "low"}}, [], model, stream=False)
        assert err.value.param == "reasoning"
    assert "thinkingConfig" in build({"input": "x", "reasoning": {"effort": "high"}}, model="gemini-3-pro-preview")[
        "generationConfig"]


def test_bad_model_is_a_400() -> None:
    with pytest.raises(GatewayError) as err:
        DIALECT.build_call({"input": "x"}, [], "gemini/../../x", stream=False)
    assert err.value.param == "model"


# ------------------------------------------------------------------------------ answers
def response(parts: list[dict[str, Any]], reason: str | None = "STOP", usage: dict[str, int] | None = None,
             **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if reason:
        candidate["finishReason"] = reason
    out: dict[str, Any] = {"candidates": [candidate], **extra}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14}
U = Usage(10, 4)
WHOLE = [
    ("text", response([{"text": "Hi"}], usage=USAGE), [TextStart(0), TextDelta(0, "Hi"), ItemDone(0), Finish("completed", U)]),
    ("text parts join into one message", response([{"text": "Hi "}, {"text": "there"}], usage=USAGE),
     [TextStart(0), TextDelta(0, "Hi "), TextDelta(0, "there"), ItemDone(0), Finish("completed", U)]),
    ("thought then text", response([{"text": "hmm", "thought": True, "thoughtSignature": "s1"}, {"text": "ok"}],
                                   usage={**USAGE, "thoughtsTokenCount": 6, "cachedContentTokenCount": 3}),
     [ReasoningStart(0), ReasoningDelta(0, "hmm", "s1"), ItemDone(0), TextStart(1), TextDelta(1, "ok"), ItemDone(1),
      Finish("completed", Usage(10, 10, cached_tokens=3, reasoning_tokens=6))]),
    ("function call without id gets a minted one; its signature travels before it",
     response([{"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "s2"},
               {"functionCall": {"name": "g", "args": {}, "id": "fc-9"}}], usage=USAGE),
     [ReasoningStart(0), ReasoningDelta(0, "", "s2"), ItemDone(0),
      ToolCallStart(1, f"{MINTED_PREFIX}{1:020d}", "f"), ToolArgsDelta(1, '{"a":1}'), ItemDone(1),
      ToolCallStart(2, "fc-9", "g"), ToolArgsDelta(2, "{}"), ItemDone(2), Finish("completed", U)]),
    ("a text signature is not kept", response([{"text": "ok", "thoughtSignature": "s3"}, {"text": "", "thoughtSignature": "s4"}],
                                              usage=USAGE),
     [TextStart(0), TextDelta(0, "ok"), ItemDone(0), Finish("completed", U)]),
    ("max tokens", response([{"text": "Hi"}], "MAX_TOKENS", USAGE),
     [TextStart(0), TextDelta(0, "Hi"), ItemDone(0), Finish("incomplete", U, "max_output_tokens")]),
    ("safety", response([], "SAFETY", USAGE), [Finish("incomplete", U, "content_filter")]),
    ("recitation", response([], "RECITATION", USAGE), [Finish("incomplete", U, "content_filter")]),
    ("blocked prompt", {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": USAGE},
     [Finish("incomplete", U, "content_filter")]),
    ("malformed function call", response([], "MALFORMED_FUNCTION_CALL", USAGE, ),
     [Failure("server_error", "Gemini ended the turn with MALFORMED_FUNCTION_CALL")]),
    ("tool use usage counts as input", response([], "STOP", {**USAGE, "toolUsePromptTokenCount": 5}),
     [Finish("completed", Usage(15, 4))]),
    ("no finish reason", response([{"text": "Hi"}], None, USAGE),
     [TextStart(0), TextDelta(0, "Hi"), ItemDone(0), Failure("server_error", "The Gemini stream ended before the turn did")]),
    ("an error object", {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}},
     [Failure("rate_limit_exceeded", "Gemini: Quota exceeded.")]),
]


@pytest.mark.parametrize("name,answer,expected", WHOLE, ids=[w[0] for w in WHOLE])
def test_decode_whole(name: str, answer: dict[str, Any], expected: list[Any]) -> None:
    assert dialect().decode_whole(answer) == expected


# ------------------------------------------------------------------------------ streams
CHUNKS = [
    response([{"text": "Let me", "thought": True}], None),
    response([{"text": " think", "thought": True, "thoughtSignature": "c2ln"}], None),
    response([{"text": "Héllo"}], None),
    response([{"text": " wörld"}], None),
    response([{"functionCall": {"name": "f", "args": {"q": "ü"}}, "thoughtSignature": "Zg=="}], None),
    response([{"text": ""}], "STOP", {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}),
]
EXPECTED = [
    ReasoningStart(0), ReasoningDelta(0, "Let me"), ReasoningDelta(0, " think", "c2ln"), ItemDone(0),
    TextStart(1), TextDelta(1, "Héllo"), TextDelta(1, " wörld"), ItemDone(1),
    ReasoningStart(2), ReasoningDelta(2, "", "Zg=="), ItemDone(2),
    ToolCallStart(3, f"{MINTED_PREFIX}{1:020d}", "f"), ToolArgsDelta(3, '{"q":"ü"}'), ItemDone(3),
    Finish("completed", Usage(7, 5, reasoning_tokens=2)),
]


def sse(chunks: list[dict[str, Any]], sep: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + sep for c in chunks)


def decode(pieces: list[bytes]) -> list[Any]:
    parser, decoder = SSEParser(), GeminiStreamDecoder(ids())
    out: list[Any] = []
    for piece in pieces:
        for event in parser.feed(piece):
            out.extend(decoder.feed(event.data))
    for event in parser.close():
        out.extend(decoder.feed(event.data))
    return out + decoder.close()


def test_stream_decodes_chunks() -> None:
    assert decode([sse(CHUNKS)]) == EXPECTED
    assert decode([sse(CHUNKS, b"\n\n")]) == EXPECTED


def test_stream_split_at_every_byte() -> None:
    data = sse(CHUNKS)
    assert decode([data[i:i + 1] for i in range(len(data))]) == EXPECTED
    for cut in range(1, len(data)):
        assert decode([data[:cut], data[cut:]]) == EXPECTED, cut


def test_stream_error_chunk_and_early_end() -> None:
    error = {"error": {"code": 500, "message": "Internal error.", "status": "INTERNAL"}}
    assert decode([sse(CHUNKS[2:4] + [error])]) == [
        TextStart(0), TextDelta(0, "Héllo"), TextDelta(0, " wörld"), ItemDone(0),
        Failure("server_error", "Gemini: Internal error.")]
    assert decode([sse(CHUNKS[2:3])])[-1] == Failure("server_error", "The Gemini stream ended before the turn did")


def test_decoder_takes_dicts_str_and_bytes() -> None:
    for form in (CHUNKS[2], orjson.dumps(CHUNKS[2]).decode(), orjson.dumps(CHUNKS[2])):
        assert list(GeminiStreamDecoder().feed(form)) == [TextStart(0), TextDelta(0, "Héllo")]
    assert list(GeminiStreamDecoder().feed(b"[1]")) == [Failure("server_error", "Gemini sent a stream chunk that is not a JSON object")]


def test_ids_minted_in_a_turn_go_back_consistently() -> None:
    """Turn 1's minted call id, stored with the turn, pairs the next turn's functionResponse
    with its functionCall (both without an id, by order and name)."""
    d = dialect()
    events = d.decode_whole(response([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}], usage=USAGE))
    start = next(e for e in events if isinstance(e, ToolCallStart))
    stored = [{"role": "user", "content": "Weather?"},
              {"type": "function_call", "call_id": start.call_id, "name": start.name, "arguments": '{"city":"Oslo"}'}]
    body = d.build_call({"input": [{"type": "function_call_output", "call_id": start.call_id, "output": "-3C"}],
                         "tools": TOOLS}, stored, MODEL, stream=False).body
    assert body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "-3C"}}}]}]


# ------------------------------------------------------------------------------ against the fake
@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as f:
        yield f


async def post(fake: FakeGemini, call: Any, token: str | None = None) -> tuple[int, Any, list[Any]]:
    """The I/O the wiring does: POST the body, JSON back or SSE split and fed to the decoder."""
    decoder = DIALECT.stream_decoder()
    headers = {"Authorization": f"Bearer {token or fake.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.url + call.path, json=call.body, headers=headers) as r:
            if r.status != 200 or not call.stream:
                return r.status, await r.json(), []
            assert r.headers["Content-Type"].startswith("text/event-stream")
            parser, events = SSEParser(), []
            try:
                async for piece in r.content.iter_any():
                    for event in parser.feed(piece):
                        events.extend(decoder.feed(event.data))
            except aiohttp.ClientPayloadError:
                pass  # the connection dropped mid-stream
            return r.status, None, events + decoder.close()


async def test_generate_content_against_the_fake(fake: FakeGemini) -> None:
    fake.answer([{"text": "It is 18C."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "x1"}}],
                "STOP", {"promptTokenCount": 20, "candidatesTokenCount": 6, "cachedContentTokenCount": 8})
    call = DIALECT.build_call({"input": [user({"type": "input_text", "text": "Weather?"},
                                              {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"})],
                               "instructions": "Be brief.", "tools": TOOLS, "metadata": {"team": "a"},
                               "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}}},
                              [], MODEL, stream=False)
    status, answer, _ = await post(fake, call)
    assert status == 200
    assert DIALECT.decode_whole(answer) == [
        TextStart(0), TextDelta(0, "It is 18C."), ItemDone(0), ToolCallStart(1, "x1", "get_weather"),
        ToolArgsDelta(1, '{"city":"Paris"}'), ItemDone(1), Finish("completed", Usage(20, 6, cached_tokens=8))]
    rec = fake.requests[-1]
    assert rec.path == "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    assert rec.json == call.body


async def test_stream_against_the_fake(fake: FakeGemini) -> None:
    fake.answer([{"text": "Let me think", "thought": True, "thoughtSignature": "c2ln"}, {"text": "Hello there"},
                 {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Zg=="}])
    status, _, events = await post(fake, DIALECT.build_call({"input": "x"}, [], MODEL, stream=True))
    assert status == 200 and fake.requests[-1].query["alt"] == "sse"
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ReasoningStart"] + ["ReasoningDelta"] * 3 + ["ItemDone", "TextStart"] + ["TextDelta"] * 3 + [
        "ItemDone", "ReasoningStart", "ReasoningDelta", "ItemDone", "ToolCallStart", "ToolArgsDelta", "ItemDone", "Finish"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello there"
    signatures = [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature]
    assert signatures == ["c2ln", "Zg=="]
    assert events[-1] == Finish("completed", Usage(9, 5))


async def test_stream_faults_against_the_fake(fake: FakeGemini) -> None:
    fake.answer([{"text": "Hello there"}])
    fake.fail_stream_after(2, "INTERNAL", "Boom.")
    _, _, events = await post(fake, DIALECT.build_call({"input": "x"}, [], MODEL, stream=True))
    assert events == [TextStart(0), TextDelta(0, "Hell"), TextDelta(0, "o th"), ItemDone(0),
                      Failure("server_error", "Gemini: Boom.")]
    fake.answer([{"text": "Hello there"}])
    fake.fail_stream_after(1)
    _, _, events = await post(fake, DIALECT.build_call({"input": "x"}, [], MODEL, stream=True))
    assert events == [TextStart(0), TextDelta(0, "Hell"), ItemDone(0),
                      Failure("server_error", "The Gemini stream ended before the turn did")]


async def test_the_fake_refuses_what_vertex_refuses(fake: FakeGemini) -> None:
    status, body, _ = await post(fake, DIALECT.build_call({"input": "x"}, [], MODEL, stream=False), token="wrong")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    call = DIALECT.build_call({"input": "x"}, [], MODEL, stream=False)
    call.body["contents"][0]["parts"] = []
    status, body, _ = await post(fake, call)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    call = DIALECT.build_call({"input": "x"}, [], MODEL, stream=False)
    call.body["generationConfig"] = {"responseJsonSchema": {"type": "object"}}
    assert (await post(fake, call))[0] == 400
    call = DIALECT.build_call({"input": "x"}, [], MODEL, stream=True)
    call.path = call.path.removesuffix("?alt=sse")
    assert (await post(fake, call))[0] == 400


async def test_a_gated_stream_sees_its_client_leave(fake: FakeGemini) -> None:
    """The gate holds the stream after its first chunk: the client has that chunk before the
    fake sends the second, and a client that leaves is seen by the fake."""
    from tests.support import eventually

    fake.answer([{"text": "Hello there"}])
    gate = fake.gate_stream_after(1)
    call = DIALECT.build_call({"input": "x"}, [], MODEL, stream=True)
    async with aiohttp.ClientSession() as session:
        r = await session.post(fake.url + call.path, json=call.body, headers={"Authorization": f"Bearer {fake.token}"})
        first = await r.content.readuntil(b"\r\n\r\n")
        assert list(GeminiStreamDecoder().feed(first[len(b"data: "):])) == [TextStart(0), TextDelta(0, "Hell")]
        r.close()
        assert await eventually(lambda: fake.streams.client_disconnects == 1, timeout=20)
    gate.set()
    assert fake.streams.streams_completed == 0


@pytest.mark.parametrize("status,rpc,expect", [
    (400, "INVALID_ARGUMENT", (400, "invalid_request_error", False, None)),
    (404, "NOT_FOUND", (400, "model_not_found", False, "model")),
    (401, "UNAUTHENTICATED", (502, "upstream_auth_failed", False, None)),
    (403, "PERMISSION_DENIED", (502, "upstream_auth_failed", False, None)),
    (429, "RESOURCE_EXHAUSTED", (429, "rate_limit_exceeded", True, None)),
    (503, "UNAVAILABLE", (503, "upstream_unavailable", True, None)),
    (500, "INTERNAL", (502, "upstream_error", True, None)),
    (429, None, (429, "rate_limit_exceeded", True, None)),
    (422, None, (400, "invalid_request_error", False, None)),
])
async def test_error_answers_become_gateway_errors(fake: FakeGemini, status: int, rpc: str | None,
                                                   expect: tuple[int, str, bool, str | None]) -> None:
    if rpc is None:  # an answer that is not Google's error shape (a proxy's HTML page, say)
        err = gemini_error(status, "not json")
    else:
        fake.fail_next(status, {"error": {"code": status, "message": "the provider says no", "status": rpc}})
        got_status, answer, _ = await post(fake, DIALECT.build_call({"input": "x"}, [], MODEL, stream=False))
        err = gemini_error(got_status, answer)
        # the provider's words reach the client, except where they are about the gateway's credentials
        assert ("the provider says no" in err.message) == (err.code != "upstream_auth_failed")
    assert (err.status, err.code, err.retryable, err.param) == expect


async def test_a_fake_without_a_token_checks_none() -> None:
    with FakeGemini(token=None) as open_fake:
        call = DIALECT.build_call({"input": "x"}, [], MODEL, stream=False)
        async with aiohttp.ClientSession() as session:
            async with session.post(open_fake.url + call.path, json=call.body) as r:
                assert r.status == 200
