"""quota: the running check of an upload's file bytes against its reservation (real SQLite store)."""
from __future__ import annotations

import pytest

from filters.quota import QuotaFilter
from proxy.errors import GatewayError
from proxy.reservations import UploadReservation

from .fakes import config, exchange, sqlite_store

QUOTA = 1000


async def reserved(tmp_path, granted: int):
    store = await sqlite_store(tmp_path)
    flt, ex = QuotaFilter(config(limits={"tenant_storage_quota": QUOTA}).limits), exchange()
    await flt.on_request(ex)
    ex.reservation = UploadReservation(store, "team-a", "local", ex.quota_limit)
    await ex.reservation.open(granted, granted)
    assert ex.reservation.bytes == granted
    return flt, ex, store


async def test_files_create_gets_the_tenant_quota():
    ex = exchange()
    await QuotaFilter(config(limits={"tenant_storage_quota": QUOTA}).limits).on_request(ex)
    assert ex.quota_limit == QUOTA


async def test_other_operations_get_no_quota():
    ex = exchange("files.list")
    await QuotaFilter(config().limits).on_request(ex)
    assert ex.quota_limit is None


async def test_file_bytes_up_to_the_reservation_pass(tmp_path):
    flt, ex, store = await reserved(tmp_path, 600)
    try:
        ex.file_bytes = 600
        flt.on_file_data(ex, b"x")
    finally:
        await store.close()


async def test_file_bytes_past_the_reservation_are_429_that_must_not_be_retried(tmp_path):
    flt, ex, store = await reserved(tmp_path, 600)
    try:
        ex.file_bytes = 601
        with pytest.raises(GatewayError) as e:
            flt.on_file_data(ex, b"x")
        assert (e.value.status, e.value.code) == (429, "storage_quota_exceeded")
        assert e.value.response_headers()["x-should-retry"] == "false"
    finally:
        await store.close()


async def test_no_reservation_no_check():
    flt, ex = QuotaFilter(config().limits), exchange()
    ex.file_bytes = 10 ** 12
    flt.on_file_data(ex, b"x")


async def test_quota_error_message_names_the_tenant_and_the_sizes(tmp_path):
    flt, ex, store = await reserved(tmp_path, 600)
    try:
        ex.file_bytes = 601
        with pytest.raises(GatewayError) as e:
            flt.on_file_data(ex, b"x")
        assert (e.value.type, e.value.param) == ("rate_limit_error", "file")
        assert e.value.message == ("Storage quota exceeded for tenant 'team-a': 0 bytes stored + 601 bytes uploaded "
                                   "would pass the quota of 1 KB (1000 bytes). Delete files to free space.")
    finally:
        await store.close()
