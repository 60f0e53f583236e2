"""batch_jsonl: the exact 400s a client gets for a bad batch file, whichever hook finds it, and
uploads it must leave alone. (The purpose is known at the file's start: a late one is held and
replayed by the core, tests/test_field_order.py.)"""
from __future__ import annotations

import pytest

from filters.batch_jsonl import BatchJsonlFactory
from proxy.errors import GatewayError

from .fakes import config, exchange

BAD_LINE = "Invalid batch file: line 1: not valid JSON (invalid literal at column 1)."


def upload(filename: str | None = "b.jsonl", purpose: str | None = "batch"):
    ex = exchange()
    ex.filename, ex.purpose = filename, purpose
    return BatchJsonlFactory(config().limits).create(), ex


def start(flt, ex) -> None:  # type: ignore[no-untyped-def]
    ex.file_started = True
    flt.on_file_start(ex)


def shape(e: pytest.ExceptionInfo[GatewayError]) -> tuple:
    return e.value.status, e.value.type, e.value.code, e.value.param, e.value.message


def test_invalid_line_is_400_invalid_batch_file_on_param_file():
    flt, ex = upload()
    start(flt, ex)
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"not json\n")
    assert shape(e) == (400, "invalid_request_error", "invalid_batch_file", "file", BAD_LINE)


def test_truncated_last_line_is_400_when_the_file_ends():
    flt, ex = upload()
    start(flt, ex)
    flt.on_file_data(ex, b'{"custom_id": "r1"')
    with pytest.raises(GatewayError) as e:
        flt.on_file_end(ex)
    assert shape(e) == (400, "invalid_request_error", "invalid_batch_file", "file",
                        "Invalid batch file: line 1: not valid JSON (unexpected end of data at column 19).")


@pytest.mark.parametrize("filename,shown", [("b.txt", "b.txt"), (None, ""), ("x" * 200 + ".txt", "x" * 128)])
def test_batch_file_without_jsonl_extension_names_the_file(filename, shown):
    flt, ex = upload(filename)
    with pytest.raises(GatewayError) as e:
        start(flt, ex)
    assert shape(e) == (400, "invalid_request_error", "invalid_file_format", "file",
                        f"Batch files must be JSONL with a .jsonl extension; got '{shown}'.")


def test_purpose_batch_before_the_file_is_judged_at_the_file_not_at_the_field():
    flt, ex = upload(filename=None, purpose="batch")
    flt.on_field(ex, "purpose", "batch")  # the file part has not begun: nothing to judge yet


def test_a_file_of_another_purpose_is_not_validated():
    flt, ex = upload("notes.txt", purpose="user_data")
    start(flt, ex)
    flt.on_file_data(ex, b"not json\n")
    flt.on_file_end(ex)


def test_client_value_quoted_in_the_error_is_not_rewritten():
    flt, ex = upload()
    start(flt, ex)
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b'{"custom_id": "r1", "method": "GET..", "url": "/v1/chat/completions", "body": {}}\n')
    assert e.value.message == 'Invalid batch file: line 1: "method" must be "POST", got "GET..".'


def test_a_validator_message_ending_in_a_period_gets_no_second_one():
    from filters.batch_jsonl import _invalid
    from proxy.transforms.jsonl import BatchLineError

    assert _invalid(BatchLineError(3, "too many lines.")).message == "Invalid batch file: line 3: too many lines."
    assert _invalid(BatchLineError(3, "too many lines")).message == "Invalid batch file: line 3: too many lines."
