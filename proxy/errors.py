"""OpenAI-shaped errors.

Every error the gateway answers with is ``{"error": {"message", "type", "param", "code"}}``,
all four keys present, as OpenAI's (docs/provider-facts.md §1.6; the upstream mappings, §9.4).
Raise :class:`GatewayError` anywhere in a request's path; the server turns it into a response.
"""
from __future__ import annotations

from typing import Mapping

import orjson

# OpenAI's error ``type`` for each status class the gateway produces (docs/provider-facts.md §9.4:
# OpenAI's own 429 ``type`` is unverified there).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# Statuses the OpenAI SDK retries on its own (408, 409, 429, >= 500; docs/provider-facts.md §2.6,
# which also says x-should-retry is read before the status). For these the gateway
# says explicitly whether a retry can help, so the SDK never re-sends a 512 MiB body in vain.
_SDK_RETRIED = frozenset({408, 409, 429})


def error_type_for(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    """An error that ends the exchange with an OpenAI-shaped response.

    ``retryable`` decides the ``x-should-retry`` header: the OpenAI SDK honours it before
    looking at the status, so a 429 for an exhausted quota (retry cannot help) says ``false``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for(status)
        self.param = param
        self.code = code
        self.retryable = retryable
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)

    def response_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "x-should-retry": "true" if self.retryable else "false"}
        h.update(self.headers)
        return h

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"GatewayError({self.status}, {self.message!r}, code={self.code!r})"


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def not_found(kind: str, ident: str, *, param: str = "id") -> GatewayError:
    return GatewayError(404, f"No such {kind} object: {ident}", param=param, code="not_found")


def too_large(message: str, *, param: str | None = "file") -> GatewayError:
    return GatewayError(413, message, param=param, code="file_too_large")


def upstream_error(message: str = "The upstream provider failed to answer.", *, code: str = "upstream_error") -> GatewayError:
    return GatewayError(502, message, code=code, retryable=True)


def upstream_timeout(message: str = "The upstream provider did not answer in time.") -> GatewayError:
    return GatewayError(504, message, code="upstream_timeout", retryable=True)


def quota_error(tenant: str, used: int, adding: int, quota: int) -> GatewayError:
    """429 for an exhausted storage quota; a retry cannot help, so the SDK must not re-send."""
    from .units import size_and_bytes

    return GatewayError(
        429, f"Storage quota exceeded for tenant '{tenant}': {size_and_bytes(used)} stored + "
        f"{size_and_bytes(adding)} uploaded would pass the quota of {size_and_bytes(quota)}. "
        "Delete files to free space.", param="file", code="storage_quota_exceeded", retryable=False)
