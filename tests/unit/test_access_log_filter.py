"""access_log: one JSON object per exchange, with bounded client values."""
from __future__ import annotations

import logging

import orjson

from filters.access_log import AccessLogFilter
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
