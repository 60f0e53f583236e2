"""batch_jsonl: per-exchange validation of a purpose=batch upload (the purpose is known at the file's start)."""
from __future__ import annotations

import pytest

from filters.batch_jsonl import BatchJsonlFactory
from proxy.errors import GatewayError

from .fakes import config, exchange

GOOD = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def upload(filename: str = "b.jsonl", purpose: str | None = "batch"):
    ex = exchange()
    ex.filename, ex.purpose = filename, purpose
    ex.file_started = True
    return BatchJsonlFactory(config().limits).create(), ex


def test_each_exchange_gets_its_own_filter():
    factory = BatchJsonlFactory(config().limits)
    assert factory.create() is not factory.create()


async def test_a_valid_batch_file_passes():
    flt, ex = upload()
    flt.on_file_start(ex)
    flt.on_file_data(ex, GOOD)
    flt.on_file_end(ex)
    await flt.on_upload_complete(ex)


def test_an_invalid_line_of_a_batch_file_is_400_at_once():
    flt, ex = upload()
    flt.on_file_start(ex)
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"not json\n")
    assert (e.value.status, e.value.code) == (400, "invalid_batch_file")


def test_a_batch_file_without_jsonl_extension_is_400():
    flt, ex = upload("b.txt")
    with pytest.raises(GatewayError) as e:
        flt.on_file_start(ex)
    assert e.value.code == "invalid_file_format"


def test_a_file_of_another_purpose_is_not_validated():
    # The purpose is always known at on_file_start (proxy/field_order.py holds a file sent
    # before it), so only a batch file is read as JSONL.
    flt, ex = upload("notes.txt", purpose="assistants")
    flt.on_file_start(ex)
    flt.on_file_data(ex, b"not json\n")
    flt.on_file_end(ex)


def test_one_exchanges_invalid_file_does_not_touch_another():
    factory = BatchJsonlFactory(config().limits)
    (_, ex_a), (_, ex_b) = upload(), upload()
    a, b = factory.create(), factory.create()
    a.on_file_start(ex_a)
    b.on_file_start(ex_b)
    with pytest.raises(GatewayError):
        a.on_file_data(ex_a, b"not json\n")
    b.on_file_data(ex_b, GOOD)
    b.on_file_end(ex_b)
