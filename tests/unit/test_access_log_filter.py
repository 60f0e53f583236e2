"""access_log: one JSON object per exchange, with bounded client values."""
from __future__ import annotations

import logging

import orjson
import pytest

from filters.access_log import LIMITS, AccessLogFilter
from proxy.logs import ACCESS_LOGGER

from .fakes import exchange


async def logged(caplog, ex) -> dict:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        await AccessLogFilter().on_exchange_end(ex)
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    return orjson.loads(record.msg)


async def test_line_has_every_field(caplog):
    ex = exchange("files.retrieve", object_id="file-abc", method="GET", path="/v1/files/file-abc")
    ex.status, ex.error_code, ex.model = 404, "file_not_found", "gpt-4o"
    ex.usage = {"input_tokens": 5, "output_tokens": "x"}
    ex.ended = ex.started + 0.0015
    line = await logged(caplog, ex)
    assert {k: line[k] for k in ("method", "path", "op", "status", "tenant", "provider", "upload_bytes", "id",
                                 "model", "input_tokens", "output_tokens", "error")} == {
        "method": "GET", "path": "/v1/files/file-abc", "op": "files.retrieve", "status": 404, "tenant": "team-a",
        "provider": None, "upload_bytes": 0, "id": "file-abc", "model": "gpt-4o", "input_tokens": 5,
        "output_tokens": None, "error": "file_not_found"}
    assert line["duration_ms"] == 1.5 and line["ttfb_ms"] is None and "truncated" not in line
    assert isinstance(line["time"], str) and isinstance(line["pid"], int)


async def test_client_values_are_cut_and_named(caplog):
    ex = exchange("files.retrieve", object_id="f" * 300, path="/v1/" + "p" * 3000)
    line = await logged(caplog, ex)
    assert len(line["path"]) == 2048 and len(line["id"]) == 256
    assert line["truncated"] == ["path", "id"]


async def test_line_breaks_in_client_values_stay_escaped(caplog):
    ex = exchange(path="/v1/files\u2028x\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        await AccessLogFilter().on_exchange_end(ex)
    raw = [r for r in caplog.records if r.name == ACCESS_LOGGER][0].msg
    assert b"\n" not in raw and "\u2028".encode() not in raw
    assert orjson.loads(raw)["path"] == "/v1/files\u2028x\n"


async def test_absent_values_are_null_not_empty(caplog):
    ex = exchange("files.list", tenant=None, method="GET")
    line = await logged(caplog, ex)
    assert (line["tenant"], line["provider"], line["id"], line["model"], line["input_tokens"],
            line["output_tokens"], line["error"]) == (None,) * 7


async def test_provider_and_response_id_are_logged(caplog):
    from .fakes import OPENAI_A, config, providers

    ex = exchange("responses.create", object_id=None)
    ex.provider = providers(config(providers=[OPENAI_A]))["oa-a"]
    ex.response_id, ex.usage = "resp_1", {"input_tokens": 3, "output_tokens": 7}
    line = await logged(caplog, ex)
    assert (line["provider"], line["id"], line["input_tokens"], line["output_tokens"]) == ("oa-a", "resp_1", 3, 7)


async def test_durations_are_milliseconds_to_two_decimals(caplog):
    ex = exchange()
    ex.first_byte_at, ex.ended = ex.started + 0.0421234, ex.started + 0.123456
    line = await logged(caplog, ex)
    assert (line["duration_ms"], line["ttfb_ms"]) == (123.46, 42.12)


async def test_a_model_that_is_not_a_string_is_logged_as_text(caplog):
    ex = exchange("responses.create")
    ex.model = 123
    assert (await logged(caplog, ex))["model"] == "123"


async def test_a_value_exactly_at_its_limit_is_not_cut(caplog):
    ex = exchange(method="M" * 32, path="/" + "p" * 2047)
    ex.model = "m" * 256
    line = await logged(caplog, ex)
    assert (len(line["method"]), len(line["path"]), len(line["model"])) == (32, 2048, 256) and "truncated" not in line


async def test_method_and_model_past_their_limits_are_cut_and_named(caplog):
    ex = exchange(method="M" * 40)
    ex.model = "m" * 300
    line = await logged(caplog, ex)
    assert (line["method"], line["model"], line["truncated"]) == ("M" * 32, "m" * 256, ["method", "model"])


async def test_lone_surrogate_from_a_client_stays_visible_as_an_escape(caplog):
    ex = exchange(path="/v1/files/\ud800x")
    line = await logged(caplog, ex)
    assert line["path"] == "/v1/files/\\ud800x" and line["op"] == "files.create" and line["tenant"] == "team-a"


async def test_other_line_separators_stay_escaped(caplog):
    ex = exchange(path="/v1/\u0085a\u2029b")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        await AccessLogFilter().on_exchange_end(ex)
    raw = [r for r in caplog.records if r.name == ACCESS_LOGGER][0].msg
    assert b"\\u0085" in raw and b"\\u2029" in raw and raw.isascii()
    assert orjson.loads(raw)["path"] == "/v1/\u0085a\u2029b"


async def test_nothing_is_logged_below_info(caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=ACCESS_LOGGER):
        await AccessLogFilter().on_exchange_end(exchange())
    assert [r for r in caplog.records if r.name == ACCESS_LOGGER] == []


async def test_pid_is_the_workers(caplog):
    import os

    assert (await logged(caplog, exchange()))["pid"] == os.getpid()


async def test_with_the_writer_installed_the_line_is_queued_finished(tmp_path):
    """setup_logging installs the queued writer (proxy/logs.py): the filter hands it the one
    finished JSON line, and that line reaches the access stream."""
    import io

    from proxy import logs

    access = io.BytesIO()
    logs.setup_logging("info", text_stream=io.StringIO(), access_stream=access)
    try:
        writer = logs.access_writer()
        assert writer is not None
        ex = exchange("files.retrieve", object_id="file-q", method="GET", path="/v1/files/file-q")
        ex.status = 200
        await AccessLogFilter().on_exchange_end(ex)
        assert logs.flush_access_log(timeout=10)
        (text,) = access.getvalue().splitlines()
        line = orjson.loads(text)
        assert (line["op"], line["id"], line["status"], line["path"]) == (
            "files.retrieve", "file-q", 200, "/v1/files/file-q")
    finally:
        logs.reset_logging()


def test_utc_timestamp_is_the_millisecond_of_the_time_given_whatever_came_before():
    import datetime
    import random

    from proxy.logs import utc_timestamp
    rng = random.Random(10)
    times = [1767225599.9994, 1767225600.0004, 1767225600.0004, 1767225600.9996, 1767225601.0004]
    times += [rng.randrange(0, 4_000_000_000_000) / 1000 + 0.0004 for _ in range(2000)]
    for now in times:
        ms = int(now * 1000)
        want = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert utc_timestamp(now) == f"{want}.{ms % 1000:03d}Z", now


@pytest.mark.parametrize("field", ["method", "path", "id", "model", "model-not-a-string", "id-not-a-string"])
async def test_each_client_value_alone_past_its_limit_is_cut(caplog, field):
    """One value over its limit (or not a string) and the others short: that one is cut and
    named, whichever it is."""
    ex = exchange("files.retrieve", object_id="file-abc", method="GET", path="/v1/files/file-abc")
    name = field.split("-")[0]
    if field == "method":
        ex.request.method = "M" * 33
    elif field == "path":
        ex.request.path = "/" + "p" * 2048
    elif field == "id":
        ex.object_id = "f" * 257
    elif field == "model":
        ex.model = "m" * 257
    elif field == "model-not-a-string":
        ex.model = {"x": 1}
    else:
        ex.response_id = 12345  # type: ignore[assignment]
    line = await logged(caplog, ex)
    limit = LIMITS[name]
    assert isinstance(line[name], str) and len(line[name]) <= limit
    if field.endswith("not-a-string"):
        assert "truncated" not in line
    else:
        assert len(line[name]) == limit and line["truncated"] == [name]
