"""provider_route: the exact OpenAI-shaped errors a client gets (status, type, code, param, message),
and the routing decisions around them (real SQLite store, real unstarted providers)."""
from __future__ import annotations

import time

import pytest

from filters.provider_route import ProviderRouteFilter
from proxy.errors import GatewayError
from proxy.store.base import FileRecord, ResponseRecord

from .fakes import LOCAL, OPENAI_A, OPENAI_B, config, exchange, providers, sqlite_store

AUTH = {"auth": {"keys": [{"key": "sk-a", "tenant": "team-a"}, {"key": "sk-ops", "tenant": "ops", "admin": True}]}}


async def route_filter(store, provider_list, default, **extra) -> ProviderRouteFilter:
    cfg = config(providers=provider_list, default_provider=default, **AUTH, **extra)
    return ProviderRouteFilter(providers(cfg), cfg.default_provider, cfg.auth, store)


@pytest.fixture
async def store(tmp_path):
    s = await sqlite_store(tmp_path)
    yield s
    await s.close()


@pytest.fixture
async def route(store):
    return await route_filter(store, [OPENAI_A, OPENAI_B, LOCAL], "local")


async def refused(flt, operation="files.list", body=None, **kw) -> GatewayError:
    ex = exchange(operation, **kw)
    ex.json_body = body
    with pytest.raises(GatewayError) as e:
        await flt.on_request(ex)
    return e.value


def shape(err: GatewayError) -> tuple:
    return err.status, err.type, err.code, err.param, err.message


async def test_unknown_provider_header_names_the_configured_providers(route):
    err = await refused(route, headers={"x-tfy-provider-name": "nope"})
    assert shape(err) == (400, "invalid_request_error", "unknown_provider", "x-tfy-provider-name",
                          "x-tfy-provider-name: unknown provider 'nope'. Configured: local, oa-a, oa-b.")


async def test_unknown_litellm_provider_names_the_litellm_header_as_param(route):
    err = await refused(route, headers={"custom-llm-provider": "azure"})
    assert shape(err) == (400, "invalid_request_error", "unknown_provider", "custom-llm-provider",
                          "custom-llm-provider: unknown provider 'azure'. Configured: local, oa-a, oa-b.")


async def test_unknown_provider_name_is_cut_to_64_characters_in_the_message(route):
    err = await refused(route, headers={"x-tfy-provider-name": "n" * 100})
    assert f"'{'n' * 64}'" in err.message and "n" * 65 not in err.message


async def test_ambiguous_litellm_type_lists_the_candidates(route):
    err = await refused(route, headers={"custom-llm-provider": "openai"})
    assert shape(err) == (400, "invalid_request_error", "ambiguous_provider", "custom-llm-provider",
                          "custom-llm-provider: 'openai' matches several providers (oa-a, oa-b); "
                          "name one with x-tfy-provider-name.")


async def test_litellm_type_of_exactly_one_provider_routes_there(store):
    flt = await route_filter(store, [OPENAI_A, {"name": "disk", "type": "local"}], "disk")
    ex = exchange("files.list", headers={"custom-llm-provider": "openai"})
    await flt.on_request(ex)
    assert ex.provider.name == "oa-a"


async def test_named_provider_wins_over_a_model_prefix_which_is_left_alone(route):
    ex = exchange("responses.create", headers={"x-tfy-provider-name": "oa-a"})
    ex.json_body = {"model": "oa-b/gpt-4o"}
    await route.on_request(ex)
    assert ex.provider.name == "oa-a" and ex.json_body["model"] == "oa-b/gpt-4o" and not ex.json_changed


async def test_model_prefix_is_split_at_the_first_slash_only(route):
    ex = exchange("responses.create")
    ex.json_body = {"model": "oa-b/meta/llama-3"}
    await route.on_request(ex)
    assert ex.provider.name == "oa-b" and ex.json_body["model"] == "meta/llama-3"


async def test_unknown_model_prefix_is_400_on_param_model(route):
    err = await refused(route, "responses.create", {"model": "zz/gpt-4o"})
    assert shape(err) == (400, "invalid_request_error", "unknown_provider", "model",
                          "model: unknown provider prefix 'zz' in 'zz/gpt-4o'. Configured providers: local, oa-a, oa-b.")


async def test_unknown_model_prefix_message_cuts_prefix_and_model(route):
    model = "p" * 100 + "/" + "m" * 100
    err = await refused(route, "responses.create", {"model": model})
    assert err.message == (f"model: unknown provider prefix '{'p' * 64}' in '{model[:128]}'. "
                           "Configured providers: local, oa-a, oa-b.")


async def test_responses_on_a_provider_without_them_names_those_that_do(route):
    err = await refused(route, "responses.create", {"model": "gpt-4o"})
    assert shape(err) == (400, "invalid_request_error", "unsupported_operation", None,
                          "Provider 'local' (type local) does not support responses.create. "
                          "Configured providers that do: oa-a (openai), oa-b (openai).")


async def test_responses_when_no_provider_has_them_says_which_types_do(store):
    flt = await route_filter(store, [LOCAL], "local")
    err = await refused(flt, "responses.create", {"model": "gpt-4o"})
    assert err.message == ("Provider 'local' (type local) does not support responses.create. "
                           "No configured provider does; the OpenAI-compatible types (openai, azure, groq) and anthropic do.")


@pytest.mark.parametrize("operation,param,code,kind", [
    ("files.retrieve", "file_id", "file_not_found", "File"),
    ("responses.retrieve", "response_id", "response_not_found", "Response"),
])
async def test_malformed_path_id_is_404_of_its_kind(route, operation, param, code, kind):
    err = await refused(route, operation, object_id="bad id?")
    assert shape(err) == (404, "invalid_request_error", code, param, f"No such {kind} object: bad id?")


async def test_unseen_response_id_is_404_response_not_found(route):
    err = await refused(route, "responses.retrieve", object_id="resp_never")
    assert shape(err) == (404, "invalid_request_error", "response_not_found", "response_id",
                          "No such Response object: resp_never")


async def test_not_found_message_cuts_the_id_to_128_characters(route):
    err = await refused(route, "files.retrieve", object_id="f" * 200)
    assert err.message == "No such File object: " + "f" * 128


async def test_recorded_response_id_routes_to_its_provider(route):
    await route.store.add_response(ResponseRecord(id="resp_1", tenant="team-a", provider="oa-b", model="m",
                                                  created_at=int(time.time())))
    ex = exchange("responses.retrieve", object_id="resp_1")
    await route.on_request(ex)
    assert ex.provider.name == "oa-b" and ex.response_record.id == "resp_1" and ex.file_record is None


async def test_expired_file_is_404_like_a_missing_one(route):
    await route.store.add_file(FileRecord(id="file-old", tenant="team-a", provider="oa-a", filename="f",
                                          purpose="batch", bytes=1, created_at=0, expires_at=int(time.time()) - 10))
    err = await refused(route, "files.retrieve", object_id="file-old")
    assert shape(err) == (404, "invalid_request_error", "file_not_found", "file_id", "No such File object: file-old")


async def test_file_not_yet_expired_routes_to_its_provider(route):
    await route.store.add_file(FileRecord(id="file-new", tenant="team-a", provider="oa-a", filename="f",
                                          purpose="batch", bytes=1, created_at=0, expires_at=int(time.time()) + 3600))
    ex = exchange("files.retrieve", object_id="file-new")
    await route.on_request(ex)
    assert ex.provider.name == "oa-a"


async def test_id_on_a_provider_no_longer_configured_is_502(route):
    await route.store.add_file(FileRecord(id="file-gone", tenant="team-a", provider="gone", filename="f",
                                          purpose="batch", bytes=1, created_at=int(time.time())))
    err = await refused(route, "files.retrieve", object_id="file-gone")
    assert shape(err) == (502, "server_error", "provider_not_configured", None,
                          "The provider 'gone' that holds file-gone is no longer configured.")


async def test_unseen_id_reaches_a_provider_marked_shared_for_any_tenant(store):
    flt = await route_filter(store, [{**OPENAI_A, "shared": True}, LOCAL], "local")
    ex = exchange("files.retrieve", object_id="file-never", headers={"x-tfy-provider-name": "oa-a"})
    await flt.on_request(ex)
    assert ex.provider.name == "oa-a"


async def test_unseen_id_reaches_a_pass_through_provider_when_auth_is_off(store):
    cfg = config(providers=[OPENAI_A, LOCAL], default_provider="local")
    flt = ProviderRouteFilter(providers(cfg), cfg.default_provider, cfg.auth, store)
    ex = exchange("files.retrieve", object_id="file-never", headers={"x-tfy-provider-name": "oa-a"})
    await flt.on_request(ex)
    assert ex.provider.name == "oa-a"


async def test_unseen_id_never_reaches_a_provider_that_cannot_serve_it_even_for_an_admin(route):
    err = await refused(route, "files.retrieve", object_id="file-never", tenant="ops", admin=True)
    assert (err.status, err.code) == (404, "file_not_found")  # default provider: local
