"""The filter API, after Envoy's HTTP filters: a factory per configured filter, an instance per exchange.

A **factory** (Envoy's FilterConfig) is built once at start-up with only the dependencies its
constructor names (see ``filters.build_chain_factory``); per exchange it ``create``s the
filter instance that holds that exchange's state. A filter that keeps no per-exchange state is
its own factory's only instance (:class:`Shared`), so an exchange costs nothing for it.

A filter implements any of the hooks below. Request-side hooks stop the exchange by raising
:class:`proxy.errors.GatewayError`; ``on_file_data`` may raise to abort an upload mid-stream.
``on_exchange_end`` is always called, once, whatever happened (logging, metrics, accounting).
Filters know nothing of each other; they talk only through the :class:`Exchange`.

Per-chunk hooks are plain functions (no coroutine per chunk on the hot path); the chain only
calls the filters that override a hook, and the hook lists are computed once per factory set.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable, ClassVar, Protocol, TypeAlias

if TYPE_CHECKING:
    from proxy.exchange import Exchange

log = logging.getLogger("sluicegate")

#: A piece of a body as the core has it: the multipart parser hands out views into its buffer
#: (no copy per chunk), held files and responses come as bytes. A hook that keeps one copies it.
Chunk: TypeAlias = "bytes | memoryview"

AsyncHook = Callable[["Exchange"], Awaitable[None]]
ExchangeHook = Callable[["Exchange"], None]
DataHook = Callable[["Exchange", Chunk], None]
FieldHook = Callable[["Exchange", str, str], None]


class Filter:
    name: ClassVar[str] = "filter"

    async def on_request(self, ex: "Exchange") -> None:
        """Request headers are in (for JSON operations, the parsed body is in ex.json_body)."""

    def on_field(self, ex: "Exchange", name: str, value: str) -> None:
        """A non-file multipart field of an upload."""

    def on_file_start(self, ex: "Exchange") -> None:
        """The file part of an upload begins: ex.filename and ex.purpose are known (a file sent
        before its purpose is held and replayed by the core, proxy/field_order.py)."""

    def on_file_data(self, ex: "Exchange", chunk: Chunk) -> None:
        """A chunk of the uploaded file; ex.file_bytes already counts it."""

    def on_file_end(self, ex: "Exchange") -> None:
        """The file part ended."""

    async def on_upload_complete(self, ex: "Exchange") -> None:
        """The whole upload body is parsed (all fields known); nothing is committed yet."""

    def on_response(self, ex: "Exchange") -> None:
        """The response status is known (ex.status); add headers to ex.response_headers."""

    def on_response_data(self, ex: "Exchange", chunk: Chunk) -> None:
        """A chunk of a streamed response body (a download, an SSE stream) on its way to the
        client. Headers are out: observe only (an exception here cuts the stream)."""

    async def on_exchange_end(self, ex: "Exchange") -> None:
        """Always called once at the very end."""


HOOKS = ("on_request", "on_field", "on_file_start", "on_file_data", "on_file_end",
         "on_upload_complete", "on_response", "on_response_data", "on_exchange_end")


# Fired only while an upload body streams.
UPLOAD_HOOKS = frozenset({"on_field", "on_file_start", "on_file_data", "on_file_end", "on_upload_complete"})


def overrides(cls: type, hook: str) -> bool:
    return getattr(cls, hook) is not getattr(Filter, hook)


class FilterFactory(Protocol):
    """Built once per configured filter; ``create`` gives the filter of one exchange."""

    filter_class: type[Filter]

    def create(self) -> Filter: ...


class Shared:
    """The factory of a filter without per-exchange state: every exchange uses the one instance."""

    def __init__(self, instance: Filter) -> None:
        self.instance = instance
        self.filter_class = type(instance)

    def create(self) -> Filter:
        return self.instance


class FilterChain:
    """The filters of one exchange, in order. Hook lists are never changed in place (``append``
    makes new ones), so a chain may start from lists another chain shares."""

    __slots__ = ("filters",) + tuple("_" + h for h in HOOKS)

    # Filled by name from HOOKS (one loop, lists shared between exchanges), so mypy sees only
    # these declarations: tests/unit/test_chain.py checks each hook has its slot, typed by its kind.
    filters: list[Filter]
    _on_request: list[AsyncHook]
    _on_field: list[FieldHook]
    _on_file_start: list[ExchangeHook]
    _on_file_data: list[DataHook]
    _on_file_end: list[ExchangeHook]
    _on_upload_complete: list[AsyncHook]
    _on_response: list[ExchangeHook]
    _on_response_data: list[DataHook]
    _on_exchange_end: list[AsyncHook]

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = filters
        for hook in HOOKS:
            setattr(self, "_" + hook, [getattr(f, hook) for f in filters if overrides(type(f), hook)])

    def append(self, f: Filter) -> None:
        """One more filter for this exchange only (e.g. a provider's upload rules); it sees the
        hooks from now on, after the configured filters."""
        self.filters = self.filters + [f]
        cls = type(f)
        for hook in HOOKS:
            if overrides(cls, hook):
                attr = "_" + hook
                setattr(self, attr, getattr(self, attr) + [getattr(f, hook)])

    @property
    def observes_response_data(self) -> bool:
        """Whether any filter wants the response body chunks (else the writers skip the call)."""
        return bool(self._on_response_data)

    async def on_request(self, ex: "Exchange") -> None:
        for hook in self._on_request:
            await hook(ex)

    def on_field(self, ex: "Exchange", name: str, value: str) -> None:
        for hook in self._on_field:
            hook(ex, name, value)

    def on_file_start(self, ex: "Exchange") -> None:
        for hook in self._on_file_start:
            hook(ex)

    def on_file_data(self, ex: "Exchange", chunk: Chunk) -> None:
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

    def on_response_data(self, ex: "Exchange", chunk: Chunk) -> None:
        for hook in self._on_response_data:
            hook(ex, chunk)

    async def on_exchange_end(self, ex: "Exchange") -> None:
        # Every filter sees the end, even if an earlier one fails.
        for hook in self._on_exchange_end:
            try:
                await hook(ex)
            except Exception:  # a broken logger must not break the gateway
                log.exception("filter %s failed in on_exchange_end", getattr(hook, "__self__", hook))


class _Template:
    """The precomputed chain of one set of factories: each hook's list of bound methods of the
    shared instances, and for the hooks a per-exchange filter overrides, how to rebuild it."""

    def __init__(self, factories: list[FilterFactory]) -> None:
        self.factories = factories
        shared: list[Filter | None] = [f.instance if isinstance(f, Shared) else None for f in factories]
        self.shared = shared
        self.fresh = [i for i, s in enumerate(shared) if s is None]  # created per exchange
        self.lists = [[getattr(s, hook) for s in shared if s is not None and overrides(type(s), hook)]
                      for hook in HOOKS]
        # Hooks a per-exchange filter overrides: (attribute, hook, [shared method or factory index, ...]).
        self.rebuilt: list[tuple[str, str, list[Callable[..., object] | int]]] = []
        for hook in HOOKS:
            if any(overrides(factories[i].filter_class, hook) for i in self.fresh):
                entries = [getattr(s, hook) if s is not None else i for i, s in enumerate(shared)
                           if overrides(factories[i].filter_class, hook)]
                self.rebuilt.append(("_" + hook, hook, entries))
        self.filters = [s for s in shared if s is not None]

    def create(self) -> FilterChain:
        chain = FilterChain.__new__(FilterChain)
        (chain._on_request, chain._on_field, chain._on_file_start, chain._on_file_data, chain._on_file_end,
         chain._on_upload_complete, chain._on_response, chain._on_response_data,
         chain._on_exchange_end) = self.lists
        if not self.fresh:
            chain.filters = self.filters
            return chain
        instances = [s if s is not None else self.factories[i].create() for i, s in enumerate(self.shared)]
        chain.filters = instances
        for attr, hook, entries in self.rebuilt:
            setattr(chain, attr, [getattr(instances[e], hook) if type(e) is int else e for e in entries])
        return chain


class ChainFactory:
    """The configured factories, in order; ``create`` gives one exchange its :class:`FilterChain`.

    Per exchange only the filters with state are created, and only the hooks they override get
    new lists; the other hook lists are shared (never mutated, see :class:`FilterChain`). An
    exchange without an upload body never fires the upload hooks, so a per-exchange filter that
    has only upload hooks (batch_jsonl) is not created for it at all."""

    def __init__(self, factories: list[FilterFactory]) -> None:
        self.factories = factories
        self._upload = _Template(factories)
        self._other = _Template([f for f in factories if isinstance(f, Shared) or any(
            overrides(f.filter_class, h) for h in HOOKS if h not in UPLOAD_HOOKS)])

    def create(self, upload: bool = True) -> FilterChain:
        """The chain of one exchange; ``upload=False`` for one whose body is not an upload."""
        return (self._upload if upload else self._other).create()
