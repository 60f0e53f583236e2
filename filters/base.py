"""The filter API, after Envoy's HTTP filters.

A filter implements any of the hooks below. Request-side hooks stop the exchange by raising
:class:`proxy.errors.GatewayError`; ``on_file_data`` may raise to abort an upload mid-stream.
``on_exchange_end`` is always called, once, whatever happened (logging, metrics, accounting).
Filters know nothing of each other; they talk only through the :class:`Exchange`.

Per-chunk hooks are plain functions (no coroutine per chunk on the hot path); the chain only
calls the filters that override a hook.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.gateway import Gateway


class Filter:
    name = "filter"

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    async def on_request(self, ex: "Exchange") -> None:
        """Request headers are in (for JSON operations, the parsed body is in ex.extra['json'])."""

    def on_field(self, ex: "Exchange", name: str, value: str) -> None:
        """A non-file multipart field of an upload."""

    def on_file_start(self, ex: "Exchange") -> None:
        """The file part of an upload begins: ex.filename and ex.purpose are known (a file sent
        before its purpose is held and replayed by the core, proxy/field_order.py)."""

    def on_file_data(self, ex: "Exchange", chunk: Any) -> None:
        """A chunk of the uploaded file; ex.file_bytes already counts it."""

    def on_file_end(self, ex: "Exchange") -> None:
        """The file part ended."""

    async def on_upload_complete(self, ex: "Exchange") -> None:
        """The whole upload body is parsed (all fields known); nothing is committed yet."""

    def on_response(self, ex: "Exchange") -> None:
        """The response status is known (ex.status); add headers to ex.response_headers."""

    async def on_exchange_end(self, ex: "Exchange") -> None:
        """Always called once at the very end."""


_HOOKS = ("on_request", "on_field", "on_file_start", "on_file_data", "on_file_end",
          "on_upload_complete", "on_response", "on_exchange_end")


class FilterChain:
    def __init__(self, filters: list[Filter]) -> None:
        self.filters: list[Filter] = []
        for hook in _HOOKS:
            setattr(self, "_" + hook, [])
        for f in filters:
            self.append(f)

    def append(self, f: Filter) -> None:
        """Add a filter at the end (e.g. a provider's upload rules, for one exchange)."""
        self.filters = [*self.filters, f]  # never the list another chain was built from
        for hook in _HOOKS:
            if getattr(type(f), hook) is not getattr(Filter, hook):
                getattr(self, "_" + hook).append(getattr(f, hook))

    async def on_request(self, ex: "Exchange") -> None:
        for hook in self._on_request:
            await hook(ex)

    def on_field(self, ex: "Exchange", name: str, value: str) -> None:
        for hook in self._on_field:
            hook(ex, name, value)

    def on_file_start(self, ex: "Exchange") -> None:
        for hook in self._on_file_start:
            hook(ex)

    def on_file_data(self, ex: "Exchange", chunk: Any) -> None:
        for hook in self._on_file_data:
            hook(ex, chunk)

    def on_file_end(self, ex: "Exchange") -> None:
        for hook in self._on_file_end:
            hook(ex)

    async def on_upload_complete(self, ex: "Exchange") -> None:
        for hook in self._on_upload_complete:
            await hook(ex)

    def on_response(self, ex: "Exchange") -> None:
        for hook in self._on_response:
            hook(ex)

    async def on_exchange_end(self, ex: "Exchange") -> None:
        # Every filter sees the end, even if an earlier one fails.
        for hook in self._on_exchange_end:
            try:
                await hook(ex)
            except Exception:  # pragma: no cover - a broken logger must not break the gateway
                import logging

                logging.getLogger("sluicegate").exception("filter %s failed in on_exchange_end", hook)
