"""size_limit: refused as early as Content-Length, the file part's start, or the running count allow."""
from __future__ import annotations

import pytest

from filters.size_limit import SizeLimitFilter
from proxy.errors import GatewayError
from proxy.limits import FORM_ALLOWANCE

from .fakes import config, exchange

LIMIT, BATCH = 10_000, 1_000


def size_limit() -> SizeLimitFilter:
    return SizeLimitFilter(config(limits={"max_file_size": LIMIT, "max_batch_file_size": BATCH}).limits)


async def started(content_length: int | None = None, purpose: str | None = None):
    """Request headers accepted, then the ``purpose`` field (if any) parsed."""
    flt, ex = size_limit(), exchange(content_length=content_length)
    await flt.on_request(ex)
    if purpose is not None:
        ex.purpose = purpose
        flt.on_field(ex, "purpose", purpose)
    return flt, ex


def assert_413(e: pytest.ExceptionInfo[GatewayError]) -> None:
    assert (e.value.status, e.value.code, e.value.param) == (413, "file_too_large", "file")


async def test_content_length_past_limit_and_form_allowance_is_413_before_the_body():
    with pytest.raises(GatewayError) as e:
        await started(content_length=LIMIT + FORM_ALLOWANCE + 1)
    assert_413(e)


async def test_content_length_at_limit_and_form_allowance_is_accepted():
    _flt, ex = await started(content_length=LIMIT + FORM_ALLOWANCE)
    assert ex.size_limit == LIMIT


async def test_other_operations_are_not_limited():
    ex = exchange("files.list", content_length=10 * (LIMIT + FORM_ALLOWANCE))
    await size_limit().on_request(ex)
    assert ex.size_limit is None


async def test_file_part_that_cannot_fit_in_the_rest_of_the_body_is_413_at_its_start():
    # Content-Length passed the file limit; the batch purpose, sent first, lowered it.
    flt, ex = await started(content_length=BATCH + FORM_ALLOWANCE + 500, purpose="batch")
    ex.body_bytes = 499  # the fields before the file part
    with pytest.raises(GatewayError) as e:
        flt.on_file_start(ex)
    assert_413(e)


async def test_file_part_that_may_fit_in_the_rest_of_the_body_starts():
    flt, ex = await started(content_length=BATCH + FORM_ALLOWANCE + 500, purpose="batch")
    ex.body_bytes = 500
    flt.on_file_start(ex)


async def test_running_count_past_the_limit_is_413():
    flt, ex = await started()
    ex.file_bytes = LIMIT
    flt.on_file_data(ex, b"x")
    ex.file_bytes = LIMIT + 1
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"x")
    assert_413(e)


async def test_purpose_batch_known_at_the_file_start_applies_the_batch_limit():
    flt, ex = await started()  # purpose unknown at the request: the general limit
    ex.purpose = "batch"       # known at the file's start, always (proxy/field_order.py)
    flt.on_file_start(ex)
    ex.file_bytes = BATCH + 1
    with pytest.raises(GatewayError) as e:
        flt.on_file_data(ex, b"x")
    assert_413(e)
    assert "batch files" in e.value.message


async def test_provider_max_file_size_lowers_the_limit():
    cfg = config(limits={"max_file_size": LIMIT},
                 providers=[{"name": "g", "type": "groq", "api_key": "k", "max_file_size": 500}])
    from proxy.providers import create_provider
    ex = exchange()
    ex.provider = create_provider(cfg.providers[0])
    await SizeLimitFilter(cfg.limits).on_request(ex)
    assert ex.size_limit == 500
