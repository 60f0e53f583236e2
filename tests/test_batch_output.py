"""Provider batch results → OpenAI batch-output rows: per family, per result type, at every split.

The provider lines here follow the documented shapes (docs/provider-facts.md §5.7, §7.3, §8.2);
the carriers of the ``custom_id`` come from running the real input translators, so the way back
is checked against the way in.
"""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.transforms.batch_anthropic import anthropic_batch_translator
from proxy.transforms.batch_anthropic_output import anthropic_result_translator
from proxy.transforms.batch_bedrock import UnsupportedModel, bedrock_batch_translator
from proxy.transforms.batch_bedrock_output import bedrock_result_translator
from proxy.transforms.batch_output import RESPONSES, ResultContext, ResultTranslator
from proxy.transforms.batch_vertex import vertex_batch_translator
from proxy.transforms.batch_vertex_output import vertex_result_translator

CLAUDE_ID = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_ID = "us.amazon.nova-pro-v1:0"
LLAMA_ID = "meta.llama3-1-70b-instruct-v1:0"
CTX = ResultContext(batch_id="batch_abc", created=1_760_000_000)


def jsonl(*rows: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def run(translator: ResultTranslator, data: bytes, *cuts: int) -> bytes:
    bounds = [0, *cuts, len(data)]
    out = b"".join(translator.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    return out + translator.close()


def rows(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines()]


def chat(model: str, text: str, finish: str, prompt: int, completion: int) -> dict:
    """The body every success row must carry (ids checked separately)."""
    return {
        "object": "chat.completion", "created": CTX.created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "system_fingerprint": None,
    }


def body_without_id(row: dict) -> dict:
    body = dict(row["response"]["body"])
    assert body.pop("id").startswith("chatcmpl-")
    return body


# ---------------------------------------------------------------- model outputs, per family

def claude_message(text: str = "4", stop: str = "end_turn", **usage: int) -> dict:
    return {"id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
            "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1, **usage}}


def converse_output(text: str = "4", stop: str = "end_turn") -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
            "usage": {"inputTokens": 9, "outputTokens": 2, "totalTokens": 11}, "metrics": {"latencyMs": 50}}


BEDROCK_CASES = [
    # (model, modelOutput, expected body)
    (CLAUDE_ID, claude_message(), chat("claude-3-haiku-20240307", "4", "stop", 12, 1)),
    (CLAUDE_ID, claude_message("abc", "max_tokens"), chat("claude-3-haiku-20240307", "abc", "length", 12, 1)),
    (CLAUDE_ID, claude_message("x", "stop_sequence", cache_read_input_tokens=5),
     chat("claude-3-haiku-20240307", "x", "stop", 17, 1)),
    (CLAUDE_ID, {**claude_message(), "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
     chat("claude-3-haiku-20240307", "ab", "stop", 12, 1)),
    (CLAUDE_ID, {**claude_message(), "model": None}, chat("anthropic.claude-3-haiku-20240307-v1:0", "4", "stop", 12, 1)),
    (NOVA_ID, {**converse_output(), "output": {"message": {"role": "assistant", "content": [
        {"text": "Hello "}, {"text": "there"}]}}}, chat(NOVA_ID, "Hello there", "stop", 9, 2)),
    (NOVA_ID, converse_output("cut", "max_tokens"), chat(NOVA_ID, "cut", "length", 9, 2)),
    (NOVA_ID, converse_output("", "content_filtered"), chat(NOVA_ID, "", "content_filter", 9, 2)),
    (LLAMA_ID, converse_output("4"), chat(LLAMA_ID, "4", "stop", 9, 2)),
    (LLAMA_ID, converse_output("no", "guardrail_intervened"), chat(LLAMA_ID, "no", "content_filter", 9, 2)),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-1-70b-instruct-v1:0",
     converse_output("4"), chat("us.meta.llama3-1-70b-instruct-v1:0", "4", "stop", 9, 2)),
]


@pytest.mark.parametrize(("model", "output", "expected"), BEDROCK_CASES)
def test_bedrock_output_rows(model: str, output: dict, expected: dict) -> None:
    line = {"recordId": "row1", "modelInput": {"messages": []}, "modelOutput": output}
    [row] = rows(run(bedrock_result_translator(model, CTX, "output"), jsonl(line)))
    assert row["custom_id"] == "row1" and row["error"] is None
    assert row["id"].startswith("batch_req_")
    assert row["response"]["status_code"] == 200 and row["response"]["request_id"].startswith("req_")
    assert body_without_id(row) == expected
    assert run(bedrock_result_translator(model, CTX, "error"), jsonl(line)) == b""


@pytest.mark.parametrize(
    ("error", "status", "message", "code"),
    [
        ({"errorCode": 400, "errorMessage": "bad request"}, 400, "bad request", None),
        ({"errorCode": 429, "errorMessage": "throttled"}, 429, "throttled", None),
        ({"errorCode": 500, "errorMessage": ""}, 500, "The record failed at Bedrock.", None),
        ({"errorCode": "ModelTimeout", "errorMessage": "timed out"}, 500, "timed out", "ModelTimeout"),
    ],
)
def test_bedrock_error_rows(error: dict, status: int, message: str, code: str | None) -> None:
    line = {"recordId": "R0000000002", "modelInput": {}, "error": error}
    ctx = ResultContext(batch_id="b", ids={"R0000000002": "has space"})
    [row] = rows(run(bedrock_result_translator(CLAUDE_ID, ctx, "error"), jsonl(line)))
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    assert row["custom_id"] == "has space"
    assert row["response"]["status_code"] == status
    assert row["response"]["body"] == {"error": {"message": message, "type": kind, "param": None, "code": code}}
    assert row["error"] is None
    assert run(bedrock_result_translator(CLAUDE_ID, ctx, "output"), jsonl(line)) == b""


def test_bedrock_unknown_family_is_refused() -> None:
    with pytest.raises(UnsupportedModel):
        bedrock_result_translator("cohere.command-r-v1:0", CTX, "output")


def gemini_row(label: str, response: dict | None = None, status: str = "") -> dict:
    row: dict = {"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": {"custom_id": label}},
                 "status": status, "processed_time": "2026-04-13T10:18:18.102004+00:00"}
    if response is not None:
        row["response"] = response
    return row


def gemini(text: str = "4", finish: str = "STOP", **extra: object) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
            "modelVersion": "gemini-2.5-flash", **extra}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (gemini(), chat("gemini-2.5-flash", "4", "stop", 7, 3)),
        (gemini("cut", "MAX_TOKENS"), chat("gemini-2.5-flash", "cut", "length", 7, 3)),
        (gemini("", "SAFETY"), chat("gemini-2.5-flash", "", "content_filter", 7, 3)),
        ({**gemini(), "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking…", "thought": True}, {"text": "4"}]}, "finishReason": "STOP"}],
          "usageMetadata": {"promptTokenCount": "7", "candidatesTokenCount": "3", "thoughtsTokenCount": "5"}},
         chat("gemini-2.5-flash", "4", "stop", 7, 8)),
        ({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}},
         chat("gemini-2.5-pro", "", "content_filter", 7, 0)),
    ],
)
def test_vertex_output_rows(response: dict, expected: dict) -> None:
    ctx = ResultContext(batch_id="b", created=CTX.created, ids={"l2": "Row 2"})
    [row] = rows(run(vertex_result_translator(ctx, "output", default_model="publishers/google/models/gemini-2.5-pro"),
                     jsonl(gemini_row("l2", response))))
    assert row["custom_id"] == "Row 2"
    assert body_without_id(row) == expected


@pytest.mark.parametrize(
    ("line", "response", "error"),
    [
        (gemini_row("row-1", status="Bad Request: invalid argument"), None,
         {"code": "vertex_request_failed", "message": "Bad Request: invalid argument"}),
        (gemini_row("row-1", status=""), {"status_code": 500, "body": {"error": {
            "message": "Vertex AI returned no response for this request.", "type": "server_error",
            "param": None, "code": None}}}, None),
        ({**gemini_row("row-1"), "status": {"code": 8, "message": "quota"}}, {"status_code": 429, "body": {"error": {
            "message": "quota", "type": "rate_limit_error", "param": None, "code": None}}}, None),
    ],
)
def test_vertex_error_rows(line: dict, response: dict | None, error: dict | None) -> None:
    [row] = rows(run(vertex_result_translator(CTX, "error"), jsonl(line)))
    assert row["custom_id"] == "row-1"
    assert row["error"] == error
    if response is None:
        assert row["response"] is None
    else:
        assert row["response"]["status_code"] == response["status_code"]
        assert row["response"]["body"] == response["body"]


ANTHROPIC_LINES = [
    {"custom_id": "row-0001", "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "4"}],
        "model": "claude-sonnet-4-5", "stop_reason": "end_turn", "usage": {"input_tokens": 12, "output_tokens": 1}}}},
    {"custom_id": "L2", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}}}},
    {"custom_id": "row-0003", "result": {"type": "canceled"}},
    {"custom_id": "row-0004", "result": {"type": "expired"}},
    {"custom_id": "row-0005", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}}},
]


def test_anthropic_rows_by_result_type() -> None:
    ctx = ResultContext(batch_id="b", created=CTX.created, ids={"L2": "has space"})
    data = jsonl(*ANTHROPIC_LINES)
    [ok] = rows(run(anthropic_result_translator(ctx, "output"), data))
    assert ok["custom_id"] == "row-0001"
    assert body_without_id(ok) == chat("claude-sonnet-4-5", "4", "stop", 12, 1)
    errored, canceled, expired, overloaded = rows(run(anthropic_result_translator(ctx, "error"), data))
    assert errored["custom_id"] == "has space"
    assert errored["response"]["status_code"] == 400
    assert errored["response"]["body"] == {"error": {"message": "max_tokens: required", "type": "invalid_request_error",
                                                     "param": None, "code": "invalid_request_error"}}
    assert canceled == {"id": canceled["id"], "custom_id": "row-0003", "response": None,
                        "error": {"code": "batch_cancelled", "message": "This request was cancelled before it was run."}}
    assert expired["response"] is None and expired["error"]["code"] == "batch_expired"
    assert overloaded["response"]["status_code"] == 529
    assert overloaded["response"]["body"]["error"]["type"] == "server_error"


def test_responses_endpoint_gets_a_response_object() -> None:
    ctx = ResultContext(batch_id="b", endpoint=RESPONSES, created=CTX.created)
    [row] = rows(run(anthropic_result_translator(ctx, "output"), jsonl(ANTHROPIC_LINES[0])))
    body = row["response"]["body"]
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "completed" and body["created_at"] == CTX.created
    assert body["model"] == "claude-sonnet-4-5"
    assert body["output"][0]["content"] == [{"type": "output_text", "text": "4", "annotations": []}]
    assert body["usage"]["input_tokens"] == 12 and body["usage"]["output_tokens"] == 1
    line = {"recordId": "r", "modelOutput": converse_output("cut", "max_tokens")}
    [cut] = rows(run(bedrock_result_translator(NOVA_ID, ctx, "output"), jsonl(line)))
    assert cut["response"]["body"]["status"] == "incomplete"
    assert cut["response"]["body"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_unreadable_lines_become_error_rows_and_the_rest_survive() -> None:
    good = {"recordId": "a", "modelOutput": claude_message()}
    data = jsonl(good) + b"{not json\n" + b"[1]\n\n" + jsonl({"recordId": "b", "modelOutput": {"content": 5}}, good)
    out = rows(run(bedrock_result_translator(CLAUDE_ID, CTX, "output"), data))
    assert [r["custom_id"] for r in out] == ["a", "a"]
    errors = rows(run(bedrock_result_translator(CLAUDE_ID, CTX, "error"), data))
    assert [(r["custom_id"], r["error"]["code"]) for r in errors] == [
        (None, "unreadable_result"), (None, "unreadable_result"), (None, "unreadable_result")]
    assert [r["error"]["message"] for r in errors] == [
        "Line 2 of the provider's batch results is not valid JSON.",
        "Line 3 of the provider's batch results is not a JSON object.",
        "Line 5 of the provider's batch results has an unexpected shape."]
    assert len({r["id"] for r in errors}) == 3


def test_a_line_too_long_is_one_error_row_after_the_rows_before_it() -> None:
    good = jsonl({"recordId": "a", "modelOutput": claude_message()})
    data = good + b'{"recordId": "' + b"x" * 2000 + b'"}\n' + good
    reader = bedrock_result_translator(CLAUDE_ID, CTX, "output")._read_row
    assert run(ResultTranslator(reader, CTX, "output", max_line_length=1000), data) == \
        run(bedrock_result_translator(CLAUDE_ID, CTX, "output"), good)
    for cut in (0, len(good) + 5, len(data) - 3):
        [err] = rows(run(ResultTranslator(reader, CTX, "error", max_line_length=1000), data, cut))
        assert err["error"]["message"].startswith("Line 2 of the provider's batch results is longer than 1000 bytes")


def test_rows_are_the_same_on_every_pass() -> None:
    data = jsonl(*ANTHROPIC_LINES)
    first = run(anthropic_result_translator(CTX, "error"), data)
    assert first == run(anthropic_result_translator(CTX, "error"), data)
    other = run(anthropic_result_translator(ResultContext(batch_id="batch_other"), "error"), data)
    assert {r["id"] for r in rows(first)}.isdisjoint(r["id"] for r in rows(other))


# ---------------------------------------------------------------- the way in and back

IDS = ["ok1", "has space", "R0000000002", "l9", "Mixed-Case_1", "ü/ñ", "x" * 70]


def chat_file(custom_ids: list[str]) -> bytes:
    return jsonl(*({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": f"q{i}"}]}} for i, cid in enumerate(custom_ids)))


def bedrock_results(translated: bytes, model: str) -> bytes:
    """What Bedrock writes for these records: every third fails (order reversed: not guaranteed)."""
    out = []
    for i, record in enumerate(rows(translated)):
        if i % 3 == 2:
            out.append({**record, "error": {"errorCode": 400, "errorMessage": f"bad {i}"}})
        else:
            output = claude_message(f"a{i}") if model == CLAUDE_ID else converse_output(f"a{i}")
            out.append({**record, "modelOutput": output})
    return jsonl(*reversed(out))


def vertex_results(translated: bytes) -> bytes:
    out = []
    for i, row in enumerate(rows(translated)):
        out.append({**row, "status": "boom"} if i % 3 == 2 else {**row, "status": "", "response": gemini(f"a{i}")})
    return jsonl(*out)


def anthropic_results(translated: bytes) -> bytes:
    out = []
    for i, row in enumerate(rows(translated)):
        result = ({"type": "expired"} if i % 3 == 2 else
                  {"type": "succeeded", "message": {**claude_message(f"a{i}"), "model": "m"}})
        out.append({"custom_id": row["custom_id"], "result": result})
    return jsonl(*out)


def round_trip(target: str, custom_ids: list[str]) -> tuple[bytes, ResultContext, object]:
    source = chat_file(custom_ids)
    if target in ("claude", "nova"):
        model = CLAUDE_ID if target == "claude" else NOVA_ID
        translator = bedrock_batch_translator(model)
        translated = translator.feed(source) + translator.close()
        ctx = ResultContext(batch_id="b", ids=translator.ids)
        return bedrock_results(translated, model), ctx, lambda kind: bedrock_result_translator(model, ctx, kind)
    if target == "vertex":
        translator = vertex_batch_translator()
        translated = translator.feed(source) + translator.close()
        ctx = ResultContext(batch_id="b", ids=translator.ids)
        return vertex_results(translated), ctx, lambda kind: vertex_result_translator(ctx, kind)
    translator = anthropic_batch_translator(default_model="m")
    translated = translator.feed(source) + translator.close()
    ctx = ResultContext(batch_id="b", ids=translator.ids)
    return anthropic_results(translated), ctx, lambda kind: anthropic_result_translator(ctx, kind)


TARGETS = ["claude", "nova", "vertex", "anthropic"]


@pytest.mark.parametrize("target", TARGETS)
def test_custom_ids_come_back_exactly(target: str) -> None:
    results, _, make = round_trip(target, IDS)
    ok = rows(run(make("output"), results))
    failed = rows(run(make("error"), results))
    assert sorted(r["custom_id"] for r in ok + failed) == sorted(IDS)
    assert {r["custom_id"] for r in failed} == {IDS[2], IDS[5]}
    for r in ok:
        i = IDS.index(r["custom_id"])
        assert r["response"]["body"]["choices"][0]["message"]["content"] == f"a{i}"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "no-final-eol"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_split_gives_identical_rows(target: str, eol: bytes) -> None:
    results, _, make = round_trip(target, IDS[:4])
    data = results.replace(b"\n", b"\r\n") if eol == b"\r\n" else results
    if not eol:
        data = data[:-1]
    for kind in ("output", "error"):
        expected = run(make(kind), data)
        assert expected.count(b"\n") == (3 if kind == "output" else 1)
        for i in range(len(data) + 1):
            assert run(make(kind), data, i) == expected, (kind, i)
        assert run(make(kind), data, *range(1, len(data))) == expected


def test_feed_returns_a_row_as_soon_as_its_line_is_complete() -> None:
    results, _, make = round_trip("anthropic", IDS[:2])
    translator = make("output")
    first, rest = results.split(b"\n", 1)
    assert translator.feed(first) == b""
    assert orjson.loads(translator.feed(b"\n"))["custom_id"] == IDS[0]
    assert translator.feed(rest).count(b"\n") == 1
    assert translator.close() == b""
    assert translator.rows == 2


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    custom_ids=st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=8, unique=True),
    target=st.sampled_from(TARGETS),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_property_any_ids_any_split(custom_ids: list[str], target: str, cuts: list[int]) -> None:
    """Whatever the ids and however the results are cut: every custom_id comes back exactly
    once, in the output file or the error file, and the bytes do not depend on the cuts."""
    results, _, make = round_trip(target, custom_ids)
    points = sorted(c % (len(results) + 1) for c in cuts)
    ok, failed = run(make("output"), results, *points), run(make("error"), results, *points)
    assert ok == run(make("output"), results) and failed == run(make("error"), results)
    back = [r["custom_id"] for r in rows(ok) + rows(failed)]
    assert sorted(back) == sorted(custom_ids)


# ---------------------------------------------------------------- requests a job never ran

@pytest.mark.parametrize("target", ["claude", "vertex"])
def test_unrun_rows_list_the_inputs_without_a_result(target: str) -> None:
    from proxy.transforms.batch_bedrock_output import input_carrier as bedrock_carrier
    from proxy.transforms.batch_output import EXPIRED, UnrunRows
    from proxy.transforms.batch_vertex_output import input_carrier as vertex_carrier

    source = chat_file(IDS)
    translator = bedrock_batch_translator(CLAUDE_ID) if target == "claude" else vertex_batch_translator()
    translated = translator.feed(source) + translator.close()
    ctx = ResultContext(batch_id="b", ids=translator.ids)
    lines = translated.splitlines(keepends=True)
    ran_part = b"".join(lines[:3])  # the job ran the first three, then expired
    results = bedrock_results(ran_part, CLAUDE_ID) if target == "claude" else vertex_results(ran_part)
    carrier = bedrock_carrier if target == "claude" else vertex_carrier
    make = (lambda: bedrock_result_translator(CLAUDE_ID, ctx, "error", track=True)) if target == "claude" else \
        (lambda: vertex_result_translator(ctx, "error", track=True))
    reader = make()
    run(reader, results)
    assert reader.carriers is not None and len(reader.carriers) == 3
    expected = None
    for cut in range(0, len(translated) + 1, 7):
        unrun = UnrunRows(carrier, set(reader.carriers), ctx, EXPIRED)
        out = run(unrun, translated, cut)  # type: ignore[arg-type]
        expected = expected or out
        assert out == expected, cut
    got = rows(expected)
    assert [r["custom_id"] for r in got] == IDS[3:]
    assert {(r["response"], r["error"]["code"]) for r in got} == {(None, "batch_expired")}
