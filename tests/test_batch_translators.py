"""OpenAI batch rows → Bedrock / Vertex Gemini / Anthropic Message Batches rows."""
from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from proxy.transforms.batch_anthropic import AnthropicRowTranslator, anthropic_batch_translator
from proxy.transforms.batch_bedrock import (
    BedrockRowTranslator,
    UnsupportedModel,
    bedrock_batch_translator,
    invocation_type,
)
from proxy.transforms.batch_translate import BatchTranslator, IdRule
from proxy.transforms.batch_vertex import vertex_batch_translator, vertex_row
from proxy.transforms.jsonl import BatchLineError

CLAUDE_ID = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_ID = "amazon.nova-pro-v1:0"
LLAMA_ID = "meta.llama3-1-70b-instruct-v1:0"

PNG = "data:image/png;base64,iVBORw0KGgo="
JPEG = "data:image/jpeg;base64,/9j/4AAQ"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"

ROW_TRANSLATORS = {
    "claude": BedrockRowTranslator(CLAUDE_ID),
    "nova": BedrockRowTranslator(NOVA_ID),
    "llama": BedrockRowTranslator(LLAMA_ID),
    "vertex": vertex_row,
    "anthropic": AnthropicRowTranslator(default_model="claude-sonnet-4-5"),
}


def request(body: dict, url: str = CHAT, custom_id: str = "req1") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def hi(**fields: object) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], **fields}


def user(text: str = "hi") -> dict:
    return {"role": "user", "content": text}


def translate(target: str, body: dict, url: str = CHAT) -> dict:
    return ROW_TRANSLATORS[target](1, request(body, url))


# ---------------------------------------------------------------- one case per field
#
# CASES[name] = (url, body). The tables below give the full expected output for the three
# distinct shapes (Claude Messages on Bedrock, Nova messages-v1, Vertex request); Llama and
# Anthropic are checked against them (same Converse body, same Messages params).

CASES: dict[str, tuple[str, dict]] = {
    "user-string": (CHAT, hi()),
    "system-and-developer-lifted": (CHAT, {"messages": [
        {"role": "system", "content": "Be brief."},
        user(),
        {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
    ]}),
    "multi-part-with-images": (CHAT, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": JPEG}},
    ]}]}),
    "assistant-turns-and-merging": (CHAT, {"messages": [
        user("a"), user("b"), {"role": "assistant", "content": "c"}, user("d"),
    ]}),
    "max_tokens": (CHAT, hi(max_tokens=50)),
    "max_completion_tokens": (CHAT, hi(max_completion_tokens=60)),
    "temperature": (CHAT, hi(temperature=0.2)),
    "top_p": (CHAT, hi(top_p=0.9)),
    "stop-string": (CHAT, hi(stop="END")),
    "stop-list": (CHAT, hi(stop=["END", "STOP"])),
    "response_format-text": (CHAT, hi(response_format={"type": "text"})),
    "n-1-and-harmless-fields": (CHAT, hi(model="gpt-4o-mini", n=1, user="u1", store=True, metadata={"k": "v"},
                                         service_tier="auto", stream=False, logprobs=None)),
    "responses-string-and-instructions": (RESPONSES, {"input": "hi", "instructions": "Be brief."}),
    "responses-items": (RESPONSES, {"input": [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": PNG, "detail": "auto"},
        ]},
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "A dot.", "annotations": []}]},
        {"role": "user", "content": "Sure?"},
    ]}),
    "responses-max_output_tokens": (RESPONSES, {"input": "hi", "max_output_tokens": 70}),
    "responses-temperature-top_p": (RESPONSES, {"input": "hi", "temperature": 0.3, "top_p": 0.5}),
}

HI_CLAUDE = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
IMAGES_CLAUDE = [
    {"type": "text", "text": "What is this?"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
]


def claude(**fields: object) -> dict:
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024, "messages": HI_CLAUDE, **fields}


CLAUDE = {
    "user-string": claude(),
    "system-and-developer-lifted": claude(system="Be brief.\n\nNo emoji."),
    "multi-part-with-images": claude(messages=[{"role": "user", "content": [
        *IMAGES_CLAUDE,
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
    ]}]),
    "assistant-turns-and-merging": claude(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
        {"role": "user", "content": [{"type": "text", "text": "d"}]},
    ]),
    "max_tokens": claude(max_tokens=50),
    "max_completion_tokens": claude(max_tokens=60),
    "temperature": claude(temperature=0.2),
    "top_p": claude(top_p=0.9),
    "stop-string": claude(stop_sequences=["END"]),
    "stop-list": claude(stop_sequences=["END", "STOP"]),
    "response_format-text": claude(),
    "n-1-and-harmless-fields": claude(),
    "responses-string-and-instructions": claude(system="Be brief."),
    "responses-items": claude(system="Be brief.", messages=[
        {"role": "user", "content": IMAGES_CLAUDE},
        {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
    ]),
    "responses-max_output_tokens": claude(max_tokens=70),
    "responses-temperature-top_p": claude(temperature=0.3, top_p=0.5),
}

HI_CONVERSE = [{"role": "user", "content": [{"text": "hi"}]}]
IMAGES_CONVERSE = [{"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]


def nova(**fields: object) -> dict:
    return {"schemaVersion": "messages-v1", "messages": HI_CONVERSE, **fields}


NOVA = {
    "user-string": nova(),
    "system-and-developer-lifted": nova(system=[{"text": "Be brief."}, {"text": "No emoji."}]),
    "multi-part-with-images": nova(messages=[{"role": "user", "content": [
        *IMAGES_CONVERSE, {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
    ]}]),
    "assistant-turns-and-merging": nova(messages=[
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
        {"role": "user", "content": [{"text": "d"}]},
    ]),
    "max_tokens": nova(inferenceConfig={"maxTokens": 50}),
    "max_completion_tokens": nova(inferenceConfig={"maxTokens": 60}),
    "temperature": nova(inferenceConfig={"temperature": 0.2}),
    "top_p": nova(inferenceConfig={"topP": 0.9}),
    "stop-string": nova(inferenceConfig={"stopSequences": ["END"]}),
    "stop-list": nova(inferenceConfig={"stopSequences": ["END", "STOP"]}),
    "response_format-text": nova(),
    "n-1-and-harmless-fields": nova(),
    "responses-string-and-instructions": nova(system=[{"text": "Be brief."}]),
    "responses-items": nova(system=[{"text": "Be brief."}], messages=[
        {"role": "user", "content": IMAGES_CONVERSE},
        {"role": "assistant", "content": [{"text": "A dot."}]},
        {"role": "user", "content": [{"text": "Sure?"}]},
    ]),
    "responses-max_output_tokens": nova(inferenceConfig={"maxTokens": 70}),
    "responses-temperature-top_p": nova(inferenceConfig={"temperature": 0.3, "topP": 0.5}),
}

HI_GEMINI = [{"role": "user", "parts": [{"text": "hi"}]}]
IMAGES_GEMINI = [{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]


def gemini(**fields: object) -> dict:
    return {"request": {"contents": HI_GEMINI, **fields, "labels": {"custom_id": "req1"}}}


VERTEX = {
    "user-string": gemini(),
    "system-and-developer-lifted": gemini(systemInstruction={"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}),
    "multi-part-with-images": gemini(contents=[{"role": "user", "parts": [
        *IMAGES_GEMINI, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
    ]}]),
    "assistant-turns-and-merging": gemini(contents=[
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]),
    "max_tokens": gemini(generationConfig={"maxOutputTokens": 50}),
    "max_completion_tokens": gemini(generationConfig={"maxOutputTokens": 60}),
    "temperature": gemini(generationConfig={"temperature": 0.2}),
    "top_p": gemini(generationConfig={"topP": 0.9}),
    "stop-string": gemini(generationConfig={"stopSequences": ["END"]}),
    "stop-list": gemini(generationConfig={"stopSequences": ["END", "STOP"]}),
    "response_format-text": gemini(),
    "n-1-and-harmless-fields": gemini(),
    "responses-string-and-instructions": gemini(systemInstruction={"parts": [{"text": "Be brief."}]}),
    "responses-items": gemini(
        contents=[
            {"role": "user", "parts": IMAGES_GEMINI},
            {"role": "model", "parts": [{"text": "A dot."}]},
            {"role": "user", "parts": [{"text": "Sure?"}]},
        ],
        systemInstruction={"parts": [{"text": "Be brief."}]},
    ),
    "responses-max_output_tokens": gemini(generationConfig={"maxOutputTokens": 70}),
    "responses-temperature-top_p": gemini(generationConfig={"temperature": 0.3, "topP": 0.5}),
}


def test_tables_cover_every_case() -> None:
    assert CASES.keys() == CLAUDE.keys() == NOVA.keys() == VERTEX.keys()


@pytest.mark.parametrize("case", CASES)
def test_bedrock_claude(case: str) -> None:
    url, body = CASES[case]
    assert translate("claude", body, url) == {"recordId": "req1", "modelInput": CLAUDE[case]}


@pytest.mark.parametrize("case", CASES)
def test_bedrock_nova(case: str) -> None:
    url, body = CASES[case]
    assert translate("nova", body, url) == {"recordId": "req1", "modelInput": NOVA[case]}


@pytest.mark.parametrize("case", CASES)
def test_bedrock_llama_is_the_converse_body(case: str) -> None:
    url, body = CASES[case]
    converse = {k: v for k, v in NOVA[case].items() if k != "schemaVersion"}
    assert translate("llama", body, url) == {"recordId": "req1", "modelInput": converse}


@pytest.mark.parametrize("case", CASES)
def test_vertex(case: str) -> None:
    url, body = CASES[case]
    assert translate("vertex", body, url) == VERTEX[case]


@pytest.mark.parametrize("case", CASES)
def test_anthropic_params_are_the_claude_messages_body(case: str) -> None:
    url, body = CASES[case]
    params = {k: v for k, v in CLAUDE[case].items() if k != "anthropic_version"}
    model = body.get("model") or "claude-sonnet-4-5"
    assert translate("anthropic", body, url) == {"custom_id": "req1", "params": {"model": model, **params}}


# ---------------------------------------------------------------- target-specific fields


def test_claude_and_anthropic_max_tokens_default_comes_from_the_constructor() -> None:
    row = BedrockRowTranslator(CLAUDE_ID, default_max_tokens=77)(1, request(hi()))
    assert row["modelInput"]["max_tokens"] == 77
    row = AnthropicRowTranslator(default_model="m", default_max_tokens=88)(1, request(hi()))
    assert row["params"]["max_tokens"] == 88


def test_anthropic_model_comes_from_the_body_first() -> None:
    translator = AnthropicRowTranslator(default_model="claude-default")
    assert translator(1, request(hi(model="claude-opus-4-1")))["params"]["model"] == "claude-opus-4-1"
    assert translator(1, request(hi()))["params"]["model"] == "claude-default"
    with pytest.raises(BatchLineError, match=r'^line 4: "body.model" is required: no default Anthropic model'):
        AnthropicRowTranslator()(4, request(hi()))


def test_anthropic_fetches_https_images_itself() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat"}}]}]}
    assert translate("anthropic", body)["params"]["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat"}}]


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("gs://bucket/cat.PNG", {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.PNG"}}),
        ("https://example.com/a/cat.jpg?size=2#x",
         {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/cat.jpg?size=2#x"}}),
        ("data:image/jpg;base64,AAAA", {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}),
    ],
)
def test_vertex_image_sources(url: str, part: dict) -> None:
    body = {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}
    assert translate("vertex", body, RESPONSES)["request"]["contents"] == [{"role": "user", "parts": [part]}]


@pytest.mark.parametrize(
    ("url", "body", "config"),
    [
        (CHAT, hi(response_format={"type": "json_object"}), {"responseMimeType": "application/json"}),
        (CHAT, hi(response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                                                                          "schema": SCHEMA}}),
         {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}),
        (RESPONSES, {"input": "hi", "text": {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA}}},
         {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}),
        (RESPONSES, {"input": "hi", "text": {"format": {"type": "text"}}}, None),
        (CHAT, hi(temperature=1.5), {"temperature": 1.5}),  # Gemini goes to 2, unlike Claude
    ],
)
def test_vertex_output_format_and_temperature(url: str, body: dict, config: dict | None) -> None:
    assert translate("vertex", body, url)["request"].get("generationConfig") == config


def test_vertex_labels_carry_the_custom_id() -> None:
    assert vertex_row(1, request(hi(), custom_id="row_0001-a"))["request"]["labels"] == {"custom_id": "row_0001-a"}


# ---------------------------------------------------------------- untranslatable rows

ALL = ("claude", "nova", "llama", "vertex", "anthropic")
BEDROCK = ("claude", "nova", "llama")
NAMES = {"claude": "Bedrock (Claude)", "nova": "Bedrock (Nova)", "llama": "Bedrock (Llama)",
         "vertex": "Vertex (Gemini)", "anthropic": "Anthropic"}
HTTPS_PART = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}

ERRORS = [
    # (targets, url, body, message with {name} for the target's name)
    (ALL, "/v1/embeddings", {"model": "e", "input": "x"},
     '"url" "/v1/embeddings" cannot be translated to {name}: only /v1/chat/completions and '
     "/v1/responses batches can"),
    (ALL, CHAT, hi(tools=[{"type": "function"}]), '"body.tools" cannot be translated to {name}'),
    (ALL, CHAT, hi(seed=1), '"body.seed" cannot be translated to {name}'),
    (ALL, CHAT, hi(stream=True), '"body.stream" cannot be translated to {name}'),
    (ALL, CHAT, hi(n=2), '"body.n" must be 1 for {name} (one choice per request), got 2'),
    (ALL, CHAT, hi(n=True), '"body.n" must be 1 for {name} (one choice per request), got true'),
    (ALL, CHAT, {"messages": [user(), {"role": "tool", "tool_call_id": "c1", "content": "4"}]},
     '"body.messages[1].tool_call_id" cannot be translated to {name}'),
    (ALL, CHAT, {"messages": [user(), {"role": "tool", "content": "4"}]},
     '"body.messages[1].role" must be system, developer, user or assistant for {name}, got "tool"'),
    (ALL, CHAT, {"messages": [{"content": "hi"}]},
     '"body.messages[0].role" must be system, developer, user or assistant for {name}, got null'),
    (ALL, CHAT, {"messages": [user(), {"role": "assistant", "content": None,
                                       "tool_calls": [{"id": "c1", "type": "function"}]}]},
     '"body.messages[1].tool_calls" cannot be translated to {name}'),
    (ALL, CHAT, {"messages": [{"role": "user", "name": "bob", "content": "hi"}]},
     '"body.messages[0].name" cannot be translated to {name}'),
    (ALL, CHAT, {"messages": [{"role": "system", "content": "Be brief."}]},
     '"body.messages" must hold at least one user or assistant message'),
    (ALL, CHAT, {"messages": []}, '"body.messages" must be a non-empty array, got an empty array'),
    (ALL, CHAT, {}, '"body.messages" must be a non-empty array, got null'),
    (ALL, CHAT, {"messages": ["hi"]}, '"body.messages[0]" must be an object, got "hi"'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": None}]},
     '"body.messages[0].content" must be a string or a non-empty array of parts, got null'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     '"body.messages[0].content[0].type" "input_audio" cannot be translated to {name}'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     '"body.messages[0].content[0].text" must be a string, got 5'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": PNG}]}]},
     '"body.messages[0].content[0].image_url" must be an object, got "' + PNG + '"'),
    (ALL, CHAT, {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
                              user()]},
     '"body.messages[0].content[0]" must be text: {name} takes no images in system instructions'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,%89PNG"}}]}]},
     '"body.messages[0].content[0].image_url.url" must be a base64 data: URL such as data:image/png;base64,...'),
    (ALL, CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]},
     '"body.messages[0].content[0].image_url.url" is an image of type "image/bmp"; {name} takes {types}'),
    (BEDROCK, CHAT, {"messages": [{"role": "user", "content": [HTTPS_PART]}]},
     '"body.messages[0].content[0].image_url.url" must be a base64 data: URL for {name}, '
     'got "https://example.com/cat.png"'),
    (("anthropic",), CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}]}]},
     '"body.messages[0].content[0].image_url.url" must be a base64 data: URL or a URL of scheme https for Anthropic, '
     'got "http://example.com/cat.png"'),
    (("vertex",), CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "s3://bucket/cat.png"}}]}]},
     '"body.messages[0].content[0].image_url.url" must be a base64 data: URL or a URL of scheme gs or https '
     'for Vertex (Gemini), got "s3://bucket/cat.png"'),
    (("vertex",), CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat?id=4"}}]}]},
     '"body.messages[0].content[0].image_url.url" must end in an image file extension (png, jpg, jpeg, gif, '
     'webp, heic, heif) for Vertex (Gemini) to know its type, or be a base64 data: URL; '
     'got "https://example.com/cat?id=4"'),
    (("vertex",), CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "gs://b/cat.gif"}}]}]},
     '"body.messages[0].content[0].image_url.url" is an image of type "image/gif"; {name} takes {types}'),
    (ALL, CHAT, hi(max_tokens=0), '"body.max_tokens" must be a positive integer, got 0'),
    (ALL, CHAT, hi(max_tokens="10"), '"body.max_tokens" must be a positive integer, got "10"'),
    (ALL, CHAT, hi(max_completion_tokens=1.5), '"body.max_completion_tokens" must be a positive integer, got 1.5'),
    (ALL, CHAT, hi(max_tokens=10, max_completion_tokens=10),
     '"body.max_completion_tokens" cannot be set together with "body.max_tokens"'),
    (ALL, CHAT, hi(temperature="hot"),
     '"body.temperature" must be a number from 0 to {max_t} for {name}, got "hot"'),
    (ALL, CHAT, hi(temperature=-0.1),
     '"body.temperature" must be a number from 0 to {max_t} for {name}, got -0.1'),
    (BEDROCK + ("anthropic",), CHAT, hi(temperature=1.5),
     '"body.temperature" must be a number from 0 to 1 for {name}, got 1.5'),
    (ALL, CHAT, hi(top_p=1.2), '"body.top_p" must be a number from 0 to 1 for {name}, got 1.2'),
    (ALL, CHAT, hi(stop=["a", 1]), '"body.stop" must be a string or an array of strings, got an array'),
    (ALL, CHAT, hi(response_format={"type": "yaml"}),
     '"body.response_format.type" must be "text", "json_object" or "json_schema", got "yaml"'),
    (ALL, CHAT, hi(response_format="json"), '"body.response_format" must be an object, got "json"'),
    (BEDROCK + ("anthropic",), CHAT, hi(response_format={"type": "json_object"}),
     '"body.response_format" "json_object" cannot be translated to {name}, which has no JSON output mode'),
    (BEDROCK + ("anthropic",), CHAT,
     hi(response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}}),
     '"body.response_format" "json_schema" cannot be translated to {name}, which has no JSON output mode'),
    (("vertex",), CHAT, hi(response_format={"type": "json_schema"}),
     '"body.response_format.json_schema" must be an object, got null'),
    (("vertex",), CHAT, hi(response_format={"type": "json_schema", "json_schema": {"name": "a"}}),
     '"body.response_format.json_schema.schema" must be an object, got null'),
    (("vertex",), RESPONSES, {"input": "hi", "text": {"format": {"type": "json_schema", "name": "a"}}},
     '"body.text.format.schema" must be an object, got null'),
    (BEDROCK + ("anthropic",), RESPONSES, {"input": "hi", "text": {"format": {"type": "json_object"}}},
     '"body.text.format" "json_object" cannot be translated to {name}, which has no JSON output mode'),
    (ALL, RESPONSES, {"input": "hi", "text": {"verbosity": "low"}},
     '"body.text.verbosity" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": "hi", "text": "json"}, '"body.text" must be an object, got "json"'),
    (ALL, RESPONSES, {"input": "hi", "previous_response_id": "resp_1"},
     '"body.previous_response_id" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": "hi", "reasoning": {"effort": "low"}},
     '"body.reasoning" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": "hi", "instructions": ["a"]}, '"body.instructions" must be a string, got an array'),
    (ALL, RESPONSES, {"input": []}, '"body.input" must be a string or a non-empty array, got an empty array'),
    (ALL, RESPONSES, {"input": [{"type": "function_call_output", "call_id": "c1", "output": "4"}]},
     '"body.input[0].type" "function_call_output" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     '"body.input[0].content[0].type" "input_file" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     '"body.input[0].content[0].file_id" cannot be translated to {name}'),
    (ALL, RESPONSES, {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     '"body.input[0].content[0].image_url" must be an image URL, got null'),
    (ALL, RESPONSES, {"input": "hi", "max_output_tokens": -1},
     '"body.max_output_tokens" must be a positive integer, got -1'),
    (ALL, RESPONSES, {"input": "hi", "model": 4}, '"body.model" must be a string, got 4'),
]

TYPES = {"claude": "image/gif, image/jpeg, image/png, image/webp",
         "vertex": "image/heic, image/heif, image/jpeg, image/png, image/webp"}
TYPES |= {"nova": TYPES["claude"], "llama": TYPES["claude"], "anthropic": TYPES["claude"]}


@pytest.mark.parametrize(
    ("target", "url", "body", "message"),
    [pytest.param(t, url, body, msg, id=f"{t}-{i}") for i, (targets, url, body, msg) in enumerate(ERRORS)
     for t in targets],
)
def test_untranslatable_row_names_line_and_field(target: str, url: str, body: dict, message: str) -> None:
    with pytest.raises(BatchLineError) as info:
        ROW_TRANSLATORS[target](7, request(body, url))
    expected = message.format(name=NAMES[target], types=TYPES[target], max_t=2 if target == "vertex" else 1)
    assert str(info.value) == "line 7: " + expected
    assert info.value.line == 7


def test_long_values_are_cut_in_messages() -> None:
    url = "https://example.com/" + "x" * 500 + ".png"
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(BatchLineError) as info:
        translate("claude", body)
    assert url[:100] in str(info.value) and url[:101] not in str(info.value)


# ---------------------------------------------------------------- Bedrock model families


@pytest.mark.parametrize(
    ("model_id", "shape_key", "invocation"),
    [
        (CLAUDE_ID, "anthropic_version", "InvokeModel"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic_version", "InvokeModel"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic_version", "InvokeModel"),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
         "anthropic_version", "InvokeModel"),
        (NOVA_ID, "schemaVersion", "InvokeModel"),
        ("eu.amazon.nova-lite-v1:0", "schemaVersion", "InvokeModel"),
        (LLAMA_ID, "messages", "Converse"),
        ("us.meta.llama3-2-90b-instruct-v1:0", "messages", "Converse"),
    ],
)
def test_bedrock_family_from_model_id(model_id: str, shape_key: str, invocation: str) -> None:
    assert shape_key in BedrockRowTranslator(model_id)(1, request(hi()))["modelInput"]
    assert invocation_type(model_id) == invocation


@pytest.mark.parametrize("model_id", [
    "cohere.command-r-v1:0", "mistral.mistral-large-2402-v1:0", "amazon.titan-text-express-v1",
    "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123", "claude-3-haiku", "",
])
def test_bedrock_unsupported_model_fails_at_construction(model_id: str) -> None:
    for make in (BedrockRowTranslator, bedrock_batch_translator, invocation_type):
        with pytest.raises(UnsupportedModel, match="Bedrock batch translation does not support model"):
            make(model_id)
    assert issubclass(UnsupportedModel, ValueError)


# ---------------------------------------------------------------- id mapping


@pytest.mark.parametrize(
    ("rule", "kept", "rewritten"),
    [
        (IdRule(r"[A-Za-z0-9]{1,64}", prefix="R", digits=10),
         ["row1", "ABC", "x" * 64, "R", "Rx5", "r12"],
         ["row-1", "row_1", "", "x" * 65, "ü", "R5", "R0000000005"]),
        (IdRule(r"[A-Za-z0-9_-]{1,64}", prefix="L"), ["row-1", "a_b", "L", "l5"], ["a b", "a.b", "L5", "x" * 65]),
        (IdRule(r"[a-z0-9_-]{1,63}", prefix="l"), ["row-1", "a_b", "x" * 63], ["Row1", "x" * 64, "l12", "a.b"]),
    ],
)
def test_id_rule(rule: IdRule, kept: list[str], rewritten: list[str]) -> None:
    for custom_id in kept:
        assert rule.carrier(9, custom_id) == custom_id
    for custom_id in rewritten:
        assert rule.carrier(9, custom_id) != custom_id


def test_id_rule_rewrites_to_prefix_and_line() -> None:
    assert IdRule(r"[a-z]+", prefix="R", digits=10).carrier(42, "Nope") == "R0000000042"
    assert IdRule(r"[a-z]+", prefix="l").carrier(42, "Nope") == "l42"


def run(translator: BatchTranslator, data: bytes, *cuts: int) -> bytes:
    bounds = [0, *cuts, len(data)]
    out = b"".join(translator.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    return out + translator.close()


def jsonl(*rows: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


ID_FILE = jsonl(*(request(hi(), custom_id=cid) for cid in ("ok1", "has space", "R0000000002", "l9", "Mixed-Case_1")))


@pytest.mark.parametrize(
    ("make", "carrier", "carriers", "ids"),
    [
        (lambda: bedrock_batch_translator(CLAUDE_ID), lambda row: row["recordId"],
         ["ok1", "R0000000002", "R0000000003", "l9", "R0000000005"],
         {"R0000000002": "has space", "R0000000003": "R0000000002", "R0000000005": "Mixed-Case_1"}),
        (vertex_batch_translator, lambda row: row["request"]["labels"]["custom_id"],
         ["ok1", "l2", "l3", "l4", "l5"],
         {"l2": "has space", "l3": "R0000000002", "l4": "l9", "l5": "Mixed-Case_1"}),
        (lambda: anthropic_batch_translator(default_model="m"), lambda row: row["custom_id"],
         ["ok1", "L2", "R0000000002", "l9", "Mixed-Case_1"],
         {"L2": "has space"}),
    ],
    ids=["bedrock", "vertex", "anthropic"],
)
def test_ids_are_mapped_per_target(make: Callable[[], BatchTranslator], carrier: Callable[[dict], str],
                                   carriers: list[str], ids: dict) -> None:
    translator = make()
    rows = [orjson.loads(line) for line in run(translator, ID_FILE).splitlines()]
    assert [carrier(row) for row in rows] == carriers
    assert len(set(carriers)) == len(carriers)
    assert translator.ids == ids


# ---------------------------------------------------------------- streaming

STREAM_FILE = jsonl(
    request({"messages": [{"role": "system", "content": "Be brief."}, user("2+2?")], "max_tokens": 5},
            custom_id="row 1"),
    request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Zähle: ü"}, {"type": "image_url", "image_url": {"url": PNG}}]}],
        "temperature": 0.5, "stop": ["\n"]}, custom_id="row2"),
    request(hi(top_p=0.5), custom_id="row-3"),
)
STREAM_TRANSLATORS = {
    "bedrock-claude": lambda: bedrock_batch_translator(CLAUDE_ID),
    "bedrock-nova": lambda: bedrock_batch_translator(NOVA_ID),
    "bedrock-llama": lambda: bedrock_batch_translator(LLAMA_ID),
    "vertex": vertex_batch_translator,
    "anthropic": lambda: anthropic_batch_translator(default_model="claude-sonnet-4-5"),
}


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "no-final-eol"])
@pytest.mark.parametrize("target", STREAM_TRANSLATORS)
def test_every_split_gives_identical_output(target: str, eol: bytes) -> None:
    make = STREAM_TRANSLATORS[target]
    data = STREAM_FILE.replace(b"\n", b"\r\n") if eol == b"\r\n" else STREAM_FILE
    if not eol:
        data = data[:-1]
    whole = make()
    expected = run(whole, data)
    lines = expected.split(b"\n")
    assert len(lines) == 4 and lines[3] == b""  # three rows, each ending "\n"
    assert all(orjson.loads(line) for line in lines[:3])
    for i in range(len(data) + 1):
        translator = make()
        assert run(translator, data, i) == expected, i
        assert translator.ids == whole.ids
    assert run(make(), data, *range(1, len(data))) == expected


def test_feed_returns_rows_as_soon_as_their_line_is_complete() -> None:
    translator = vertex_batch_translator()
    first, rest = STREAM_FILE.split(b"\n", 1)
    assert translator.feed(first) == b""
    out = translator.feed(b"\n")
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    assert orjson.loads(out)["request"]["labels"] == {"custom_id": "l1"}
    assert translator.feed(rest).count(b"\n") == 2
    assert translator.close() == b""


BAD_LINE_3 = jsonl(request(hi()), request(hi(), custom_id="b"), request(hi(tools=[]), custom_id="c"),
                   request(hi(), custom_id="d"))


@pytest.mark.parametrize("target", STREAM_TRANSLATORS)
def test_untranslatable_line_3_fails_the_same_for_every_split(target: str) -> None:
    make = STREAM_TRANSLATORS[target]
    name = {"bedrock-claude": "Bedrock (Claude)", "bedrock-nova": "Bedrock (Nova)",
            "bedrock-llama": "Bedrock (Llama)", "vertex": "Vertex (Gemini)", "anthropic": "Anthropic"}[target]
    for i in range(len(BAD_LINE_3) + 1):
        translator = make()
        emitted = b""
        with pytest.raises(BatchLineError) as info:
            bounds = [0, i, len(BAD_LINE_3)]
            for a, b in zip(bounds, bounds[1:]):
                emitted += translator.feed(BAD_LINE_3[a:b])
            translator.close()
        assert str(info.value) == f'line 3: "body.tools" cannot be translated to {name}', i
        assert emitted.count(b"\n") <= 2  # never a row for line 3 or later
        with pytest.raises(BatchLineError) as again:  # and it stays failed
            translator.feed(b"")
        assert again.value is info.value


def test_earlier_untranslatable_line_wins_over_a_later_invalid_line() -> None:
    data = jsonl(request(hi()), request(hi(seed=1), custom_id="b")) + b"{not json}\n"
    for i in range(len(data) + 1):
        with pytest.raises(BatchLineError) as info:
            run(vertex_batch_translator(), data, i)
        assert str(info.value) == 'line 2: "body.seed" cannot be translated to Vertex (Gemini)', i


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "line 1: the file contains no requests"),
        (jsonl(request(hi()), request(hi())), 'line 2: "custom_id" "req1" is already used on line 1'),
        (jsonl(request(hi()), {**request(hi(), custom_id="b"), "method": "GET"}),
         'line 2: "method" must be "POST", got "GET"'),
        (b"\xef\xbb\xbf" + jsonl(request(hi())), "line 1: UTF-8 byte order mark is not allowed"),
    ],
)
def test_translator_applies_batch_validation(data: bytes, message: str) -> None:
    for make in STREAM_TRANSLATORS.values():
        with pytest.raises(BatchLineError) as info:
            run(make(), data)
        assert str(info.value) == message


def test_translator_limits() -> None:
    two = jsonl(request(hi()), request(hi(), custom_id="b"))
    with pytest.raises(BatchLineError, match="^line 2: too many requests: a batch file holds at most 1$"):
        run(vertex_batch_translator(max_lines=1), two)
    with pytest.raises(BatchLineError, match="^line 1: the line is longer than 10 bytes$"):
        run(vertex_batch_translator(max_line_length=10), two)


def test_plain_callable_row_translator_without_id_rule() -> None:
    translator = BatchTranslator(lambda line, req: {"n": line, "id": req["custom_id"]})
    assert run(translator, jsonl(request(hi(), custom_id="a b"))) == b'{"n":1,"id":"a b"}\n'
    assert translator.ids == {}
