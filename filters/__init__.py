"""Filters, named in the config's ``filters`` list, run in that order (Envoy's http_filters)."""
from __future__ import annotations

from .access_log import AccessLogFilter
from .auth import AuthFilter
from .base import Filter, FilterChain
from .batch_jsonl import BatchJsonlFilter
from .metrics import MetricsFilter
from .provider_route import ProviderRouteFilter
from .quota import QuotaFilter
from .size_limit import SizeLimitFilter

REGISTRY: dict[str, type[Filter]] = {
    f.name: f for f in (AuthFilter, ProviderRouteFilter, SizeLimitFilter, BatchJsonlFilter, QuotaFilter,
                        AccessLogFilter, MetricsFilter)
}


def build_chain(names, gateway) -> FilterChain:  # type: ignore[no-untyped-def]
    return FilterChain([REGISTRY[n](gateway) for n in names])


__all__ = ["Filter", "FilterChain", "REGISTRY", "build_chain"]
