"""auth: the gateway key → tenant."""
from __future__ import annotations

import pytest

from filters.auth import AuthFilter
from proxy.errors import GatewayError

from .fakes import config, exchange

KEYS = {"auth": {"keys": [{"key": "sk-team-a", "tenant": "team-a"}, {"key": "sk-ops", "tenant": "ops", "admin": True}]}}


async def test_auth_off_gives_the_default_tenant():
    ex = exchange(tenant=None)
    await AuthFilter(config().auth).on_request(ex)
    assert ex.tenant.name == "default" and not ex.tenant.admin


@pytest.mark.parametrize("headers,tenant,admin", [
    ({"Authorization": "Bearer sk-team-a"}, "team-a", False),
    ({"Authorization": "bearer  sk-ops "}, "ops", True),
    ({"api-key": "sk-team-a"}, "team-a", False),
])
async def test_a_known_key_names_its_tenant(headers, tenant, admin):
    ex = exchange(tenant=None, headers=headers)
    await AuthFilter(config(**KEYS).auth).on_request(ex)
    assert (ex.tenant.name, ex.tenant.admin) == (tenant, admin)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic sk-team-a"}, {"Authorization": "Bearer "}])
async def test_no_usable_key_is_401_missing_api_key(headers):
    with pytest.raises(GatewayError) as e:
        await AuthFilter(config(**KEYS).auth).on_request(exchange(tenant=None, headers=headers))
    assert (e.value.status, e.value.code) == (401, "missing_api_key")


async def test_an_unknown_key_is_401_invalid_api_key():
    with pytest.raises(GatewayError) as e:
        await AuthFilter(config(**KEYS).auth).on_request(exchange(tenant=None, headers={"Authorization": "Bearer sk-x"}))
    assert (e.value.status, e.value.code) == (401, "invalid_api_key")


async def test_missing_key_is_the_openai_authentication_error():
    with pytest.raises(GatewayError) as e:
        await AuthFilter(config(**KEYS).auth).on_request(exchange(tenant=None))
    assert (e.value.status, e.value.type, e.value.code, e.value.param, e.value.message) == (
        401, "authentication_error", "missing_api_key", None,
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")


async def test_unknown_key_is_the_openai_incorrect_api_key_error():
    with pytest.raises(GatewayError) as e:
        await AuthFilter(config(**KEYS).auth).on_request(exchange(tenant=None, headers={"api-key": "sk-x"}))
    assert (e.value.status, e.value.type, e.value.code, e.value.message) == (
        401, "authentication_error", "invalid_api_key", "Incorrect API key provided.")


async def test_authorization_header_wins_over_api_key():
    ex = exchange(tenant=None, headers={"Authorization": "Bearer sk-ops", "api-key": "sk-team-a"})
    await AuthFilter(config(**KEYS).auth).on_request(ex)
    assert ex.tenant.name == "ops"


async def test_unusable_authorization_is_not_rescued_by_api_key():
    with pytest.raises(GatewayError) as e:
        await AuthFilter(config(**KEYS).auth).on_request(
            exchange(tenant=None, headers={"Authorization": "Basic x", "api-key": "sk-team-a"}))
    assert e.value.code == "missing_api_key"
