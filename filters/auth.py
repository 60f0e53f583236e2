"""auth: the gateway key → tenant. With no keys configured, one implicit tenant "default"."""
from __future__ import annotations

import hashlib

from typing import TYPE_CHECKING, Mapping

from proxy.errors import GatewayError
from proxy.exchange import Tenant

from .base import Filter

if TYPE_CHECKING:
    from proxy.config import AuthConfig
    from proxy.exchange import Exchange

DEFAULT_TENANT = Tenant("default")


def _digest(key: str) -> bytes:
    # Keys are looked up by digest, so the dict lookup never compares secrets directly.
    return hashlib.sha256(key.encode()).digest()


class AuthFilter(Filter):
    name = "auth"

    def __init__(self, auth: "AuthConfig") -> None:
        self.enabled = auth.enabled
        self.tenants = {_digest(k.key): Tenant(k.tenant, k.admin) for k in auth.keys}

    async def on_request(self, ex: "Exchange") -> None:
        if not self.enabled:
            ex.tenant = DEFAULT_TENANT
            return
        key = _key_from(ex.request.headers)
        if not key:
            raise GatewayError(
                401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key")
        tenant = self.tenants.get(_digest(key))
        if tenant is None:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        ex.tenant = tenant


def _key_from(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    # Azure-style clients send the key as api-key.
    return headers.get("api-key") or None
