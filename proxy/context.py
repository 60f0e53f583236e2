"""What an operation is given: its exchange, the exchange's filters, the store, the limits, and
the response writing the pipeline owns (so every answer runs the response filters the same way).

Operations never see the gateway; this is all they may use. The pipeline creates one per exchange.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping

from aiohttp import web

from .bytes_response import BytesResponse
from .errors import GatewayError

if TYPE_CHECKING:
    from filters.base import FilterChain

    from .config import LimitsConfig
    from .exchange import Exchange
    from .providers.base import Provider
    from .store.base import Store


def error_response(err: GatewayError) -> web.Response:
    """The OpenAI-shaped error body with its headers (``x-should-retry``, ``Retry-After``…)."""
    return BytesResponse(body=err.body(), status=err.status, headers=err.response_headers())


class OperationContext:
    __slots__ = ("ex", "chain", "store", "limits", "data_dir", "boundary", "providers")

    def __init__(self, ex: "Exchange", chain: "FilterChain", store: "Store", limits: "LimitsConfig",
                 data_dir: str, providers: "Mapping[str, Provider] | None" = None) -> None:
        self.ex = ex
        self.chain = chain  # this exchange's filters: upload hooks, response data, append()
        self.store = store
        self.limits = limits
        self.data_dir = data_dir  # server.data_dir: where an upload's held file is spooled
        self.boundary: bytes | None = None  # a multipart operation's boundary, read by the pipeline
        # every configured provider by name: an operation over records of several providers
        # (batches.list refreshes each listed batch where it runs) reaches them here
        self.providers: Mapping[str, Provider] = providers or {}

    def before_send(self, resp: web.StreamResponse) -> None:
        """Response-side filters run once the status is known, before headers go out."""
        ex = self.ex
        ex.status = resp.status
        if ex.first_byte_at is None:
            ex.first_byte_at = time.perf_counter()
        self.chain.on_response(ex)
        if ex.response_headers:
            resp.headers.update(ex.response_headers)

    def json_response(self, body: bytes, status: int = 200) -> web.Response:
        resp = BytesResponse(body=body, status=status, content_type="application/json")
        self.before_send(resp)
        return resp

    def failed(self, err: GatewayError) -> web.Response:
        """The error answer of this exchange (recorded on it for the access log and metrics)."""
        ex = self.ex
        ex.error = err.message
        ex.error_code = err.code or err.type
        resp = error_response(err)
        self.before_send(resp)
        return resp
