"""provider_route: ids inside a responses.create body get the tenancy check of a path id, route the
request when nothing else names a provider, and are refused with the field as ``param``."""
from __future__ import annotations

import time

import pytest

from filters.provider_route import ProviderRouteFilter
from proxy.errors import GatewayError
from proxy.store.base import FileRecord, ResponseRecord

from .fakes import LOCAL, OPENAI_A, OPENAI_B, config, exchange, providers, sqlite_store

AUTH = {"auth": {"keys": [{"key": "sk-a", "tenant": "team-a"}, {"key": "sk-ops", "tenant": "ops", "admin": True}]}}
INPUT_FILE = "input[0].content[0].file_id"


def with_file(file_id: str) -> dict:
    return {"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": file_id}]}]}


@pytest.fixture
async def store(tmp_path):
    s = await sqlite_store(tmp_path)
    yield s
    await s.close()


def route_filter(store, default: str = "oa-a") -> ProviderRouteFilter:
    cfg = config(providers=[OPENAI_A, OPENAI_B, LOCAL], default_provider=default, **AUTH)
    return ProviderRouteFilter(providers(cfg), cfg.default_provider, cfg.auth, store)


async def add_file(store, file_id: str, provider: str, tenant: str = "team-a", expires_at: int | None = None) -> None:
    await store.add_file(FileRecord(id=file_id, tenant=tenant, provider=provider, filename="f", purpose="user_data",
                                    bytes=1, created_at=int(time.time()), expires_at=expires_at))


async def add_response(store, resp_id: str, provider: str, tenant: str = "team-a") -> None:
    await store.add_response(ResponseRecord(id=resp_id, tenant=tenant, provider=provider, model="m",
                                            created_at=int(time.time())))


async def create(flt, body: dict, **kw):
    ex = exchange("responses.create", **kw)
    ex.json_body = body
    await flt.on_request(ex)
    return ex


async def refused(flt, body: dict, **kw) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        await create(flt, body, **kw)
    return e.value


async def test_recorded_previous_response_routes_the_request_to_its_provider(store):
    await add_response(store, "resp_1", "oa-b")
    ex = await create(route_filter(store), {"model": "gpt-4o", "previous_response_id": "resp_1"})
    assert ex.provider.name == "oa-b"


async def test_recorded_input_file_routes_the_request_to_its_provider(store):
    await add_file(store, "file-1", "oa-b")
    assert (await create(route_filter(store), with_file("file-1"))).provider.name == "oa-b"


async def test_another_tenants_previous_response_is_404_naming_the_field(store):
    await add_response(store, "resp_1", "oa-b", tenant="team-b")
    err = await refused(route_filter(store), {"model": "gpt-4o", "previous_response_id": "resp_1"})
    assert (err.status, err.type, err.code, err.param, err.message) == (
        404, "invalid_request_error", "response_not_found", "previous_response_id", "No such Response object: resp_1")


async def test_another_tenants_input_file_is_404_naming_its_json_path(store):
    await add_file(store, "file-1", "oa-a", tenant="team-b")
    err = await refused(route_filter(store), with_file("file-1"))
    assert (err.status, err.code, err.param, err.message) == (404, "file_not_found", INPUT_FILE,
                                                              "No such File object: file-1")


async def test_expired_input_file_is_404(store):
    await add_file(store, "file-1", "oa-a", expires_at=int(time.time()) - 10)
    err = await refused(route_filter(store), with_file("file-1"))
    assert (err.status, err.code, err.param) == (404, "file_not_found", INPUT_FILE)


async def test_input_file_not_yet_expired_is_accepted(store):
    await add_file(store, "file-1", "oa-a", expires_at=int(time.time()) + 3600)
    assert (await create(route_filter(store), with_file("file-1"))).provider.name == "oa-a"


async def test_unseen_input_file_is_404_for_a_tenant(store):
    err = await refused(route_filter(store), with_file("file-never"))
    assert (err.status, err.code, err.param, err.message) == (404, "file_not_found", INPUT_FILE,
                                                              "No such File object: file-never")


async def test_unseen_input_file_reaches_a_pass_through_provider_for_an_admin(store):
    ex = await create(route_filter(store), with_file("file-never"), tenant="ops", admin=True)
    assert ex.provider.name == "oa-a"


async def test_unrecorded_kind_404_explains_that_the_gateway_keeps_no_record(store):
    body = {"model": "gpt-4o", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}
    err = await refused(route_filter(store), body)
    assert (err.status, err.type, err.code, err.param) == (404, "invalid_request_error", "vector_store_not_found",
                                                           "tools[0].vector_store_ids[0]")
    assert err.message == ("No such VectorStore object: vs_1 (the gateway keeps no record of VectorStore ids; ids it "
                           "has not seen are forwarded only for admin keys or to providers marked shared)")


async def test_unrecorded_kind_reaches_a_pass_through_provider_for_an_admin(store):
    body = {"model": "gpt-4o", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}
    assert (await create(route_filter(store), body, tenant="ops", admin=True)).provider.name == "oa-a"


async def test_reference_404_cuts_the_id_to_128_characters(store):
    err = await refused(route_filter(store), with_file("f" * 200))
    assert err.message == "No such File object: " + "f" * 128


async def test_id_on_another_provider_than_the_named_one_is_400_saying_where_it_lives(store):
    await add_file(store, "file-1", "oa-b")
    err = await refused(route_filter(store), with_file("file-1"), headers={"x-tfy-provider-name": "oa-a"})
    assert (err.status, err.type, err.code, err.param) == (400, "invalid_request_error", "reference_on_other_provider",
                                                           INPUT_FILE)
    assert err.message == (f"{INPUT_FILE}: File file-1 lives on provider 'oa-b', but this request goes to 'oa-a'. "
                           "Send it to 'oa-b' (or name no provider: a recorded id routes the request by itself).")


async def test_id_on_another_provider_message_cuts_the_id_to_128_characters(store):
    await add_file(store, "f" * 200, "oa-b")
    err = await refused(route_filter(store), with_file("f" * 200), headers={"x-tfy-provider-name": "oa-a"})
    assert f" File {'f' * 128} lives on" in err.message


async def test_id_on_a_provider_without_responses_does_not_route_responses_create(store):
    # local cannot answer responses.create: the default (oa-a) gets it, and the file is on local.
    await add_file(store, "file-1", "local")
    err = await refused(route_filter(store), with_file("file-1"))
    assert (err.code, err.param) == ("reference_on_other_provider", INPUT_FILE)
    assert "lives on provider 'local', but this request goes to 'oa-a'" in err.message


async def test_first_recorded_id_that_can_serve_the_request_routes_it(store):
    await add_file(store, "file-1", "local")
    await add_response(store, "resp_1", "oa-b")
    body = {**with_file("file-1"), "previous_response_id": "resp_1"}
    err = await refused(route_filter(store), body)  # routed to oa-b by resp_1; file-1 lives on local
    assert (err.code, err.param) == ("reference_on_other_provider", INPUT_FILE)
    assert "this request goes to 'oa-b'" in err.message


async def test_ids_of_one_provider_are_accepted_together(store):
    await add_file(store, "file-1", "oa-b")
    await add_response(store, "resp_1", "oa-b")
    ex = await create(route_filter(store), {**with_file("file-1"), "previous_response_id": "resp_1"})
    assert ex.provider.name == "oa-b"
