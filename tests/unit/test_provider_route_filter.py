"""provider_route: which provider serves an exchange, and the tenancy of ids (real SQLite store)."""
from __future__ import annotations

import time

import pytest

from filters.provider_route import ProviderRouteFilter
from proxy.errors import GatewayError
from proxy.store.base import FileRecord

from .fakes import LOCAL, OPENAI_A, OPENAI_B, config, exchange, providers, sqlite_store

AUTH = {"auth": {"keys": [{"key": "sk-a", "tenant": "team-a"}, {"key": "sk-ops", "tenant": "ops", "admin": True}]}}


@pytest.fixture
async def route(tmp_path):
    store = await sqlite_store(tmp_path)
    cfg = config(providers=[OPENAI_A, OPENAI_B, LOCAL], default_provider="local", **AUTH)
    flt = ProviderRouteFilter(providers(cfg), cfg.default_provider, cfg.auth, store)
    yield flt
    await store.close()


async def routed(flt, operation="files.list", **kw):
    ex = exchange(operation, **kw)
    await flt.on_request(ex)
    return ex


async def refused(flt, operation="files.list", **kw) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        await routed(flt, operation, **kw)
    return e.value


async def test_nothing_named_goes_to_the_default_provider(route):
    assert (await routed(route)).provider.name == "local"


async def test_provider_header_names_a_provider(route):
    assert (await routed(route, headers={"x-tfy-provider-name": "oa-b"})).provider.name == "oa-b"


async def test_unknown_provider_header_is_400_unknown_provider(route):
    err = await refused(route, headers={"x-tfy-provider-name": "nope"})
    assert (err.status, err.code, err.param) == (400, "unknown_provider", "x-tfy-provider-name")


async def test_litellm_header_names_a_provider_by_name(route):
    assert (await routed(route, headers={"custom-llm-provider": "oa-a"})).provider.name == "oa-a"


async def test_litellm_header_with_a_type_one_provider_has_routes_there(route):
    assert (await routed(route, headers={"custom-llm-provider": "local"})).provider.name == "local"


async def test_litellm_header_with_a_type_several_providers_have_is_400_ambiguous_provider(route):
    err = await refused(route, headers={"custom-llm-provider": "openai"})
    assert (err.status, err.code, err.param) == (400, "ambiguous_provider", "custom-llm-provider")
    assert "oa-a" in err.message and "oa-b" in err.message


async def test_litellm_header_with_an_unknown_name_is_400_unknown_provider(route):
    err = await refused(route, headers={"custom-llm-provider": "azure"})
    assert (err.status, err.code) == (400, "unknown_provider")


async def test_model_prefix_routes_responses_create_and_is_stripped(route):
    ex = exchange("responses.create")
    ex.json_body = {"model": "oa-b/gpt-4o"}
    await route.on_request(ex)
    assert ex.provider.name == "oa-b" and ex.json_body["model"] == "gpt-4o" and ex.json_changed


async def test_responses_on_a_provider_without_them_is_400_unsupported_operation(route):
    ex = exchange("responses.create")
    ex.json_body = {"model": "gpt-4o"}
    with pytest.raises(GatewayError) as e:
        await route.on_request(ex)
    assert (e.value.status, e.value.code) == (400, "unsupported_operation")


async def test_recorded_id_routes_to_its_provider(route):
    await route.store.add_file(FileRecord(id="file-abc", tenant="team-a", provider="oa-a", filename="f",
                                          purpose="batch", bytes=1, created_at=int(time.time())))
    ex = await routed(route, "files.retrieve", object_id="file-abc")
    assert ex.provider.name == "oa-a" and ex.file_record.id == "file-abc"


async def test_another_tenants_id_is_404_like_a_missing_one(route):
    await route.store.add_file(FileRecord(id="file-abc", tenant="team-b", provider="oa-a", filename="f",
                                          purpose="batch", bytes=1, created_at=int(time.time())))
    err = await refused(route, "files.retrieve", object_id="file-abc")
    assert (err.status, err.code) == (404, "file_not_found")


async def test_an_unseen_id_is_404_for_a_non_admin(route):
    err = await refused(route, "files.retrieve", object_id="file-never", headers={"x-tfy-provider-name": "oa-a"})
    assert (err.status, err.code) == (404, "file_not_found")


async def test_an_unseen_id_reaches_a_pass_through_provider_for_an_admin(route):
    ex = await routed(route, "files.retrieve", object_id="file-never", headers={"x-tfy-provider-name": "oa-a"},
                      tenant="ops", admin=True)
    assert ex.provider.name == "oa-a" and ex.file_record is None


async def test_files_list_by_an_admin_on_a_pass_through_provider_lists_upstream(route):
    ex = await routed(route, headers={"x-tfy-provider-name": "oa-a"}, tenant="ops", admin=True)
    assert ex.list_upstream and ex.list_provider == "oa-a"


async def test_files_list_by_a_tenant_lists_the_store_for_the_named_provider(route):
    ex = await routed(route, headers={"x-tfy-provider-name": "oa-a"})
    assert not ex.list_upstream and ex.list_provider == "oa-a"
    assert (await routed(route)).list_provider is None  # none named: every provider's files
