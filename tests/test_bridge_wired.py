"""The Responses API on bedrock (Converse through the real aiobotocore ``bedrock-runtime`` client)
and vertex (Gemini) through the bridge: the real openai SDK, a running gateway, and the faithful
fakes (tests/fakes/bedrock_runtime.py, tests/fakes/gemini_upstream.py). The same cases as
tests/test_bridge_anthropic.py, each run on both providers; :class:`Bedrock` / :class:`Vertex`
say what differs (the config, how a fake is scripted, where it recorded the request)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest
from openai.types.responses import Response

from tests.bridge_cases import TEXT_STREAM_HEAD, TEXT_STREAM_TAIL, TOOLS, poll
from tests.conftest import client
from tests.emulator_gcs import fake_gcs  # noqa: F401  (fixture)
from tests.emulator_s3 import moto_s3  # noqa: F401  (fixture)
from tests.fakes.bedrock_runtime import FakeBedrockRuntime
from tests.fakes.gemini_upstream import FakeGemini
from tests.support import wait_until
from tests.test_bedrock_files import new_bucket, s3_client
from tests.test_vertex_files import new_bucket as gcs_bucket

# Nothing listens here: the providers' bucket side is never called by these tests.
NO_BUCKET = "http://127.0.0.1:9"
TIMEOUTS = {"connect": "2s", "read": "5s"}


class Bedrock:
    type = "bedrock"
    model_id = "anthropic.claude-3-haiku-20240307-v1:0"
    model = f"br/{model_id}"

    def __init__(self, tmp_path: Path) -> None:
        self.fake = FakeBedrockRuntime(data_dir=tmp_path / "fake-bedrock")

    def provider(self) -> dict[str, Any]:
        return {"name": "br", "type": "bedrock", "bucket": "bridge-bucket", "region": "us-east-1",
                "endpoint_url": NO_BUCKET, "runtime_endpoint_url": self.fake.url,
                "aws_access_key_id": self.fake.access_key, "aws_secret_access_key": "testing",
                "max_retries": 0, "timeouts": TIMEOUTS}

    def calls(self) -> list[Any]:
        return [r for r in self.fake.requests.filter("POST") if r.path.startswith("/model/")]

    def sent(self) -> dict[str, Any]:
        return self.calls()[-1].json

    def text(self, text: str) -> None:
        self.fake.answer([{"text": text}])

    def tool_call(self) -> None:
        self.fake.answer([{"text": "Let me check."},
                          {"toolUse": {"toolUseId": "tooluse_01A", "name": "get_weather", "input": {"city": "Paris"}}}],
                         "tool_use")

    call_id = "tooluse_01A"

    def second_turn(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tooluse_01A", "name": "get_weather", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_01A",
                                                             "content": [{"text": "sunny"}]}}]}]

    def conversation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return body["messages"]

    def tools_sent(self, body: dict[str, Any]) -> Any:
        return body["toolConfig"]

    tools_expected = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather of a city",
                                              "inputSchema": {"json": TOOLS[0]["parameters"]}}}],
                      "toolChoice": {"auto": {}}}

    def schema_sent(self, body: dict[str, Any]) -> Any:
        return orjson.loads(body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"])

    def fail_mid_stream(self, after: int) -> None:
        self.fake.fail_stream_after(after, "modelStreamErrorException", "The model stream failed.")

    mid_stream_message = "Bedrock: The model stream failed."

    def drop_mid_stream(self, after: int) -> None:
        self.fake.fail_stream_after(after)

    def refuse_next(self) -> None:
        self.fake.fail_next(400, body={"message": "The provided model identifier is invalid."},
                            path="/model/")

    refused_message = "model identifier is invalid"

    thinking_model = "br/us.anthropic.claude-sonnet-4-20250514-v1:0"

    def think_then_call(self) -> None:
        self.fake.answer([{"reasoningContent": {"reasoningText": {"text": "Look it up.", "signature": "sig_br_1"}}},
                          {"toolUse": {"toolUseId": "tooluse_01A", "name": "get_weather", "input": {"city": "Paris"}}}],
                         "tool_use")

    def thought_sent_back(self, body: dict[str, Any]) -> Any:
        return body["messages"][1]["content"]

    thought_expected = [{"reasoningContent": {"reasoningText": {"text": "Look it up.", "signature": "sig_br_1"}}},
                        {"toolUse": {"toolUseId": "tooluse_01A", "name": "get_weather", "input": {"city": "Paris"}}}]
    encrypted = ["sig_br_1"]


class Vertex:
    type = "vertex"
    model_id = "gemini-2.5-flash"
    model = f"vx/{model_id}"
    call_id = "fc_weather_1"

    def __init__(self, tmp_path: Path) -> None:
        self.fake = FakeGemini(token=None, data_dir=tmp_path / "fake-gemini")   # an emulator setup: no token

    def provider(self) -> dict[str, Any]:
        return {"name": "vx", "type": "vertex", "bucket": "bridge-bucket", "project_id": "proj-1",
                "region": "us-central1", "endpoint_url": NO_BUCKET, "api_endpoint": self.fake.url,
                "max_retries": 0, "timeouts": TIMEOUTS}

    def calls(self) -> list[Any]:
        return [r for r in self.fake.requests.filter("POST") if r.path.startswith("/v1/projects/")]

    def sent(self) -> dict[str, Any]:
        return self.calls()[-1].json

    def text(self, text: str) -> None:
        self.fake.answer([{"text": text}])

    def tool_call(self) -> None:
        self.fake.answer([{"text": "Let me check."},
                          {"functionCall": {"id": self.call_id, "name": "get_weather", "args": {"city": "Paris"}}}])

    def second_turn(self) -> list[dict[str, Any]]:
        return [{"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                {"role": "model", "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": self.call_id}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny"},
                                                                 "id": self.call_id}}]}]

    def conversation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return body["contents"]

    def tools_sent(self, body: dict[str, Any]) -> Any:
        return {"tools": body["tools"], "toolConfig": body["toolConfig"]}

    tools_expected = {"tools": [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather of a city", "parametersJsonSchema": TOOLS[0]["parameters"]}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}

    def schema_sent(self, body: dict[str, Any]) -> Any:
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        return body["generationConfig"]["responseJsonSchema"]

    def fail_mid_stream(self, after: int) -> None:
        self.fake.fail_stream_after(after, "UNAVAILABLE", "The model is overloaded.")

    mid_stream_message = "Gemini: The model is overloaded."

    def drop_mid_stream(self, after: int) -> None:
        self.fake.fail_stream_after(after)

    def refuse_next(self) -> None:
        self.fake.fail_next(400, body={"error": {"code": 400, "message": "Publisher model gemini-nope is not found.",
                                                 "status": "INVALID_ARGUMENT"}}, path="/v1/projects/")

    refused_message = "gemini-nope is not found"

    thinking_model = "vx/gemini-2.5-flash"

    def think_then_call(self) -> None:
        self.fake.answer([{"text": "Look it up.", "thought": True, "thoughtSignature": "sig_vx_1"},
                          {"functionCall": {"id": self.call_id, "name": "get_weather", "args": {"city": "Paris"}},
                           "thoughtSignature": "sig_vx_2"}])

    def thought_sent_back(self, body: dict[str, Any]) -> Any:
        return body["contents"][1]["parts"]

    thought_expected = [{"text": "Look it up.", "thought": True, "thoughtSignature": "sig_vx_1"},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "fc_weather_1"},
                         "thoughtSignature": "sig_vx_2"}]
    encrypted = ["sig_vx_1", "sig_vx_2"]


@pytest.fixture(params=[Bedrock, Vertex], ids=["bedrock", "vertex"])
def backend(request, tmp_path):
    b = request.param(tmp_path)
    with b.fake:
        yield b


def config(b: Bedrock | Vertex, **extra: object) -> dict:
    cfg: dict = {"providers": [{"name": "local", "type": "local", "path": "./files"}, b.provider()],
                 "default_provider": "local"}
    cfg.update(extra)
    return cfg


def test_text_json_stream_and_stored(start_gateway, backend):
    gw = start_gateway(config(backend))
    c = client(gw)
    backend.text("Hello there, friend.")
    r = c.responses.create(model=backend.model, input="hello", instructions="Be brief.", max_output_tokens=50,
                           temperature=0.5, metadata={"k": "v"}, store=True)
    assert r.id.startswith("resp_") and r.status == "completed" and r.output_text == "Hello there, friend."
    assert r.model == backend.model_id and r.metadata == {"k": "v"} and r.usage.total_tokens > 0
    raw = httpx.get(f"{gw.base_url}/responses/{r.id}").json()   # no header: the id routes itself
    assert raw["provider"] == backend.type
    Response.model_validate(raw)
    assert c.responses.retrieve(r.id) == r
    assert [i.content[0].text for i in c.responses.input_items.list(r.id).data] == ["hello"]
    # streamed: the OpenAI event order, the text as the fake's deltas
    backend.text("one two three four")
    with c.responses.stream(model=backend.model, input="count", previous_response_id=r.id) as s:
        types = [e.type for e in s]
        final = s.get_final_response()
    assert types[:4] == TEXT_STREAM_HEAD and types[-4:] == TEXT_STREAM_TAIL
    assert types.count("response.output_text.delta") == 5   # 18 characters in deltas of 4
    assert final.output_text == "one two three four" and final.previous_response_id == r.id
    assert [len(m.get("content") or m.get("parts")) for m in backend.conversation(backend.sent())] == [1, 1, 1]
    assert c.responses.retrieve(final.id).output_text == final.output_text
    assert c.responses.delete(r.id) is None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


@pytest.mark.parametrize("stream", [False, True])
def test_tools_across_two_turns(start_gateway, backend, stream):
    gw = start_gateway(config(backend))
    c = client(gw)
    backend.tool_call()
    kw = dict(model=backend.model, tools=TOOLS, tool_choice="auto")
    if stream:
        with c.responses.stream(input="Weather in Paris?", **kw) as s:
            types = [e.type for e in s]
            r1 = s.get_final_response()
        assert "response.function_call_arguments.done" in types
    else:
        r1 = c.responses.create(input="Weather in Paris?", **kw)
    assert backend.tools_sent(backend.sent()) == backend.tools_expected
    text, call = r1.output
    assert text.content[0].text == "Let me check."
    assert call.type == "function_call" and call.call_id == backend.call_id and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    # the second turn sends only the tool output; the gateway rebuilds the rest
    backend.text("It is sunny.")
    r2 = c.responses.create(model=backend.model, previous_response_id=r1.id, tools=TOOLS,
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert r2.output_text == "It is sunny." and r2.previous_response_id == r1.id
    assert backend.conversation(backend.sent()) == backend.second_turn()
    items = c.responses.input_items.list(r2.id, order="asc")
    assert [i.type for i in items.data] == ["function_call_output"] and items.data[0].call_id == backend.call_id


def test_reasoning_state_goes_back_on_the_next_turn(start_gateway, backend):
    """The provider's opaque reasoning state (Converse's signature, Gemini's thought
    signatures) is the reasoning item's ``encrypted_content``, and goes back where it came from."""
    gw = start_gateway(config(backend))
    c = client(gw)
    backend.think_then_call()
    with c.responses.stream(model=backend.thinking_model, input="Weather in Paris?", tools=TOOLS,
                            reasoning={"effort": "low"}) as s:
        types = [e.type for e in s]
        r1 = s.get_final_response()
    assert "response.reasoning_text.delta" in types
    assert [i.encrypted_content for i in r1.output if i.type == "reasoning"] == backend.encrypted
    assert r1.output[0].content[0].text == "Look it up."
    backend.text("Sunny.")
    r2 = c.responses.create(model=backend.thinking_model, previous_response_id=r1.id, tools=TOOLS,
                            reasoning={"effort": "low"},
                            input=[{"type": "function_call_output", "call_id": backend.call_id, "output": "sunny"}])
    assert r2.output_text == "Sunny."
    assert backend.thought_sent_back(backend.sent()) == backend.thought_expected


def test_structured_output_and_unsupported_fields(start_gateway, backend):
    gw = start_gateway(config(backend))
    c = client(gw)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    backend.text('{"answer":"42"}')
    r = c.responses.create(model=backend.model, input="The answer?",
                           text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}})
    assert orjson.loads(r.output_text) == {"answer": "42"} and r.text.format.type == "json_schema"
    assert backend.schema_sent(backend.sent()) == schema
    calls = len(backend.calls())
    for fields, param in [({"tools": [{"type": "web_search"}]}, "tools[0].type"),
                          ({"truncation": "auto"}, "truncation"),
                          ({"top_logprobs": 3}, "top_logprobs"),
                          ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
                           "input[0].content[0].type")]:
        for stream in (False, True):
            resp = httpx.post(gw.base_url + "/responses",
                              json={"model": backend.model, "input": "hi", "stream": stream, **fields})
            assert resp.status_code == 400, (fields, resp.text)
            err = resp.json()["error"]
            assert err["param"] == param and err["type"] == "invalid_request_error", err
            assert resp.headers["x-should-retry"] == "false"
    assert len(backend.calls()) == calls   # refused before anything went upstream


def test_provider_errors_and_mid_stream_failures(start_gateway, backend):
    gw = start_gateway(config(backend))
    c = client(gw)
    backend.refuse_next()
    with pytest.raises(openai.BadRequestError, match=backend.refused_message):
        c.responses.create(model=backend.model, input="hi")
    backend.refuse_next()
    with pytest.raises(openai.BadRequestError, match=backend.refused_message):
        c.responses.create(model=backend.model, input="hi", stream=True)
    # an error event mid-stream: response.failed, stored as failed
    backend.text("a b c d e f g h")
    backend.fail_mid_stream(3)
    with c.responses.create(model=backend.model, input="x", stream=True,
                            extra_body={"stream_options": {"include_obfuscation": False}}) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed" and "response.output_text.delta" in [e.type for e in events]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message == backend.mid_stream_message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert c.responses.retrieve(failed.id).status == "failed"
    # the upstream connection dies mid-stream: response.failed too
    backend.text("a b c d e f g h")
    backend.drop_mid_stream(3)
    with c.responses.create(model=backend.model, input="x", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert "broke" in events[-1].response.error.message and events[-2].type == "response.output_text.delta"


def test_disconnect_closes_the_upstream_call(start_gateway, backend):
    gw = start_gateway(config(backend))
    backend.text("a b c d e f g h i j k l")
    gate = backend.fake.gate_stream_after(4)   # the fake holds the rest until the client has gone
    with httpx.stream("POST", gw.base_url + "/responses",
                      json={"model": backend.model, "input": "go", "stream": True}, timeout=10) as resp:
        for line in resp.iter_lines():
            if "output_text.delta" in line:
                break
    assert wait_until(lambda: backend.fake.streams.client_disconnects == 1, timeout=10)
    gate.set()
    assert backend.fake.streams.open_streams == 0 and backend.fake.streams.streams_completed == 0


def test_tenancy_404_and_background(start_gateway, backend):
    auth = {"keys": [{"key": "key-a", "tenant": "a"}, {"key": "key-b", "tenant": "b"}]}
    gw = start_gateway(config(backend, auth=auth))
    a, b = client(gw, api_key="key-a"), client(gw, api_key="key-b")
    r = a.responses.create(model=backend.model, input="mine")
    for call in (lambda: b.responses.retrieve(r.id), lambda: b.responses.delete(r.id),
                 lambda: b.responses.input_items.list(r.id),
                 lambda: b.responses.create(model=backend.model, input="x", previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert a.responses.retrieve(r.id).id == r.id
    # background: the turn runs in the gateway (a stream upstream), retrieve polls it
    backend.text("done in the back")
    bg = a.responses.create(model=backend.model, input="in the back", background=True, previous_response_id=r.id,
                            metadata={"job": "nightly"})
    assert bg.status == "queued" and bg.background is True
    done = poll(a, bg.id)
    assert done.status == "completed" and done.output_text == "done in the back" and done.metadata == {"job": "nightly"}
    assert backend.calls()[-1].path.endswith(("converse-stream", "streamGenerateContent"))
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(bg.id)


# --------------------------------------------------------------------------- files as model input


def file_turns(gw, backend: Bedrock | Vertex, located) -> None:
    """A gateway file as model input goes as its storage location (``located(body)`` reads it
    from the provider's request), in the turn that names it and in the next one's history."""
    c = client(gw)
    pdf = c.files.create(file=("doc.pdf", b"%PDF-1.4 tiny"), purpose="user_data",
                         extra_headers={"x-tfy-provider-name": backend.provider()["name"]})
    r = c.responses.create(model=backend.model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Summarise"}, {"type": "input_file", "file_id": pdf.id}]}])
    uri = located(backend.sent())
    assert pdf.id in uri and uri.endswith("/doc.pdf"), uri
    c.responses.create(model=backend.model, input="and again?", previous_response_id=r.id)
    assert located(backend.sent()) == uri
    assert c.responses.input_items.list(r.id).data[0].content[1].file_id == pdf.id   # the gateway's id is kept
    c.files.delete(pdf.id)
    with pytest.raises(openai.BadRequestError, match="cannot be given"):   # the history names a deleted file
        c.responses.create(model=backend.model, input="once more", previous_response_id=r.id)


def test_a_file_goes_to_bedrock_as_its_s3_location(start_gateway, tmp_path, moto_s3):  # noqa: F811
    bucket = new_bucket(s3_client(moto_s3))
    with FakeBedrockRuntime(data_dir=tmp_path / "fake-bedrock") as fake:
        backend = Bedrock.__new__(Bedrock)
        backend.fake = fake
        cfg = config(backend)
        cfg["providers"][1].update(bucket=bucket, endpoint_url=moto_s3.endpoint_url)
        gw = start_gateway(cfg)

        def located(body: dict[str, Any]) -> str:
            document = body["messages"][0]["content"][1]["document"]
            assert document["format"] == "pdf" and document["name"] == "doc"
            uri = document["source"]["s3Location"]["uri"]
            assert uri.startswith(f"s3://{bucket}/")
            return str(uri)

        file_turns(gw, backend, located)


def test_a_file_goes_to_vertex_as_its_gs_uri(start_gateway, tmp_path, fake_gcs):  # noqa: F811
    bucket = gcs_bucket(fake_gcs)
    with FakeGemini(token=None, data_dir=tmp_path / "fake-gemini") as fake:
        backend = Vertex.__new__(Vertex)
        backend.fake = fake
        cfg = config(backend)
        cfg["providers"][1].update(bucket=bucket, endpoint_url=fake_gcs.api_root)
        gw = start_gateway(cfg)

        def located(body: dict[str, Any]) -> str:
            data = body["contents"][0]["parts"][1]["fileData"]
            assert data["mimeType"] == "application/pdf" and data["fileUri"].startswith(f"gs://{bucket}/")
            return str(data["fileUri"])

        file_turns(gw, backend, located)


def test_a_converse_stream_cut_after_message_stop_completes(start_gateway, tmp_path):
    """Bedrock said how the turn ended (``messageStop``) and the connection went before the
    ``metadata`` event (usage): the decoder's ``close()`` completes the turn, foreground and
    background alike."""
    with FakeBedrockRuntime(data_dir=tmp_path / "fake-bedrock") as fake:
        backend = Bedrock.__new__(Bedrock)
        backend.fake = fake
        gw = start_gateway(config(backend))
        c = client(gw)
        for background in (False, True):
            fake.answer([{"text": "All done."}])
            fake.fail_stream_after(6)   # messageStart, 3 text deltas, contentBlockStop, messageStop: then cut
            if background:
                r = poll(c, c.responses.create(model=backend.model, input="go", background=True).id)
            else:
                with c.responses.stream(model=backend.model, input="go") as s:
                    assert [e.type for e in s][-1] == "response.completed"
                    r = s.get_final_response()
            assert r.status == "completed" and r.output_text == "All done.", r


def test_vertex_calls_carry_a_cloud_platform_token(start_gateway, tmp_path):
    """With a service account (no emulator), each Gemini call carries ``Authorization: Bearer``
    and the provider's token, whose scopes include ``cloud-platform`` (the Vertex AI API's)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with FakeGemini(data_dir=tmp_path / "fake-gemini") as fake:   # checks the token
        service_file = tmp_path / "sa.json"
        service_file.write_bytes(orjson.dumps({
            "type": "service_account", "project_id": "proj-1", "client_email": "sg@proj-1.iam.gserviceaccount.com",
            "private_key": key, "token_uri": fake.url + "/token"}))
        backend = Vertex.__new__(Vertex)
        backend.fake = fake
        cfg = config(backend)
        del cfg["providers"][1]["endpoint_url"]
        cfg["providers"][1]["service_file"] = str(service_file)
        gw = start_gateway(cfg)
        c = client(gw)
        fake.answer([{"text": "Authorised."}])
        assert c.responses.create(model=backend.model, input="hi").output_text == "Authorised."
        with c.responses.stream(model=backend.model, input="hi") as s:
            assert s.get_final_response().status == "completed"
        assert [r.headers["Authorization"] for r in backend.calls()] == [f"Bearer {fake.token}"] * 2
        assert "https://www.googleapis.com/auth/cloud-platform" in fake.token_scopes[-1].split()


def test_background_cancel_closes_the_upstream_call(start_gateway, backend):
    gw = start_gateway(config(backend))
    c = client(gw)
    backend.text("a b c d e f g h i j k l")
    gate = backend.fake.gate_stream_after(3)
    r = c.responses.create(model=backend.model, input="long one", background=True)
    assert wait_until(lambda: backend.fake.streams.open_streams == 1, timeout=10)
    assert c.responses.cancel(r.id).status == "cancelled"
    assert wait_until(lambda: backend.fake.streams.client_disconnects == 1, timeout=15)
    gate.set()
    assert backend.fake.streams.streams_completed == 0 and c.responses.retrieve(r.id).status == "cancelled"


def test_a_stalled_converse_stream_fails_the_turn(start_gateway, tmp_path):
    """Bedrock stops sending mid-stream: after the provider's read timeout the turn is
    ``response.failed`` (a 504's words), and the upstream call is closed."""
    with FakeBedrockRuntime(data_dir=tmp_path / "fake-bedrock") as fake:
        backend = Bedrock.__new__(Bedrock)
        backend.fake = fake
        cfg = config(backend)
        cfg["providers"][1]["timeouts"] = {"connect": "2s", "read": "1s"}
        gw = start_gateway(cfg)
        c = client(gw)
        fake.answer([{"text": "a b c d e f g h"}])
        gate = fake.gate_stream_after(3)
        with c.responses.create(model=backend.model, input="x", stream=True) as stream:
            events = list(stream)
        gate.set()
        assert events[-1].type == "response.failed", [e.type for e in events]
        assert events[-1].response.error.message == "Provider 'br' (Bedrock) did not answer in time."
        assert wait_until(lambda: fake.streams.open_streams == 0, timeout=10)


def test_bedrock_unreachable_or_cut_before_answering_is_a_json_502(start_gateway, tmp_path):
    with FakeBedrockRuntime(data_dir=tmp_path / "fake-bedrock") as fake:
        backend = Bedrock.__new__(Bedrock)
        backend.fake = fake
        gw = start_gateway(config(backend))
        c = client(gw)
        for stream in (False, True):
            fake.reset_next(path="/model/")
            resp = httpx.post(gw.base_url + "/responses", json={"model": backend.model, "input": "x", "stream": stream})
            assert resp.status_code == 502 and resp.json()["error"]["message"] == \
                "The call to provider 'br' broke: ConnectionClosedError.", resp.text
        assert len(backend.calls()) == 2   # max_retries: 0 is no retry
        cfg = config(backend)
        cfg["providers"][1]["runtime_endpoint_url"] = NO_BUCKET   # nothing listens
        c = client(start_gateway(cfg))
        with pytest.raises(openai.InternalServerError, match="Could not reach provider 'br'"):
            c.responses.create(model=backend.model, input="x")
