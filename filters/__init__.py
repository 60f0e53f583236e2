"""Filters, named in the config's ``filters`` list, run in that order (Envoy's http_filters).

:data:`REGISTRY` is the one list of filters: each name with what builds its factory, whether
the core needs it, and (by its place here) its place in the default chain. The config's
allowed names and default list come from it. A filter's dependencies are the parameter names
of what builds it, given from :data:`DEPENDENCIES` and nothing else.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from .access_log import AccessLogFilter
from .auth import AuthFilter
from .base import ChainFactory, Filter, FilterChain, FilterFactory, Shared
from .batch_jsonl import BatchJsonlFactory
from .metrics import MetricsFilter
from .provider_route import ProviderRouteFilter
from .quota import QuotaFilter
from .size_limit import SizeLimitFilter

log = logging.getLogger("sluicegate")


@dataclass(frozen=True)
class FilterSpec:
    #: A Filter class (one instance shared by every exchange) or a factory class whose
    #: ``create`` gives each exchange its own instance. Its parameters name its dependencies.
    build: type[Filter] | type[FilterFactory]
    #: The core cannot run without it (who is asking, which provider answers): added when missing.
    required: bool = False

    @property
    def name(self) -> str:
        """The filter class's ``name``: the one place a filter's name is written."""
        build = self.build
        return (build if issubclass(build, Filter) else build.filter_class).name


REGISTRY: dict[str, FilterSpec] = {s.name: s for s in (
    FilterSpec(AuthFilter, required=True),
    FilterSpec(ProviderRouteFilter, required=True),
    FilterSpec(SizeLimitFilter),
    FilterSpec(BatchJsonlFactory),
    FilterSpec(QuotaFilter),
    FilterSpec(AccessLogFilter),
    FilterSpec(MetricsFilter),
)}

FILTER_NAMES = tuple(REGISTRY)
DEFAULT_FILTERS = FILTER_NAMES  # every filter, in its place
REQUIRED_FILTERS = tuple(name for name, spec in REGISTRY.items() if spec.required)

#: What a filter may ask for: auth, limits, default_provider (a name), providers, store, metrics.
DEPENDENCIES = ("auth", "limits", "default_provider", "providers", "store", "metrics")


def chain_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The configured names with every required filter in front (warned about) when missing."""
    out = list(names)
    for required in reversed(REQUIRED_FILTERS):
        if required not in out:
            log.warning("filter '%s' is required; adding it to the chain", required)
            out.insert(0, required)
    return out


def build_factory(name: str, deps: dict[str, Any]) -> FilterFactory:
    """One filter's factory, given the dependencies its builder names."""
    build = REGISTRY[name].build
    wanted = inspect.signature(build).parameters
    unknown = [p for p in wanted if p not in DEPENDENCIES]
    if unknown:
        raise TypeError(f"filter {name} asks for {', '.join(unknown)}; filters may depend on: {', '.join(DEPENDENCIES)}")
    made = build(**{p: deps[p] for p in wanted})
    return Shared(made) if isinstance(made, Filter) else made


def build_chain_factory(names: list[str] | tuple[str, ...], **deps: Any) -> ChainFactory:
    return ChainFactory([build_factory(n, deps) for n in chain_names(names)])


__all__ = ["ChainFactory", "DEFAULT_FILTERS", "FILTER_NAMES", "Filter", "FilterChain", "FilterFactory", "FilterSpec",
           "REGISTRY", "REQUIRED_FILTERS", "build_chain_factory", "build_factory", "chain_names"]
