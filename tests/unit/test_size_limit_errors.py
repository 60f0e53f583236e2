"""size_limit: the exact 413 a client gets, and the limit's edges."""
from __future__ import annotations

import pytest

from filters.size_limit import SizeLimitFilter
from proxy.errors import GatewayError

from .fakes import OPENAI_A, config, exchange, providers

LIMIT, BATCH = 10_000, 1_000


def size_limit() -> SizeLimitFilter:
    return SizeLimitFilter(config(limits={"max_file_size": LIMIT, "max_batch_file_size": BATCH}).limits)


async def test_too_large_file_is_the_openai_413_naming_the_limit():
    flt, ex = size_limit(), exchange()
    await flt.on_request(ex)
    ex.file_bytes = LIMIT + 1
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"x")
    assert (e.value.status, e.value.type, e.value.code, e.value.param, e.value.message) == (
        413, "invalid_request_error", "file_too_large", "file",
        "File is too large: the limit for files is 10 KB (10000 bytes).")


async def test_too_large_batch_file_names_the_batch_limit():
    flt, ex = size_limit(), exchange()
    await flt.on_request(ex)
    ex.purpose = "batch"
    flt.on_file_start(ex)  # the purpose is known at the file's start (proxy/field_order.py)
    ex.file_bytes = BATCH + 1
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"x")
    assert e.value.message == "File is too large: the limit for batch files is 1 KB (1000 bytes)."


async def test_a_batch_file_of_exactly_the_batch_limit_is_accepted():
    flt, ex = size_limit(), exchange()
    await flt.on_request(ex)
    ex.purpose = "batch"
    flt.on_file_start(ex)
    ex.file_bytes = BATCH
    flt.on_file_data(ex, b"x")
    assert ex.size_limit == BATCH


async def test_a_provider_without_its_own_file_limit_keeps_the_gateways():
    ex = exchange()
    ex.provider = providers(config(providers=[OPENAI_A]))["oa-a"]
    await size_limit().on_request(ex)
    assert ex.size_limit == LIMIT
