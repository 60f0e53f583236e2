"""The filter chain: order, which filters each hook calls, per-exchange instances, append, the end."""
from __future__ import annotations

import logging

import pytest

import filters
from filters.base import ChainFactory, Filter, FilterChain, Shared
from proxy.config import DEFAULT_FILTERS, FILTER_NAMES

from .fakes import Recorder, exchange


class OnlyRequest(Filter):
    name = "only_request"

    def __init__(self, log: list) -> None:
        self.log = log

    async def on_request(self, ex) -> None:  # type: ignore[no-untyped-def]
        self.log.append(("only_request", "on_request"))


class BrokenEnd(Filter):
    name = "broken_end"

    async def on_exchange_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("logger down")


class Counter(Filter):
    """Per-exchange state: the bytes of its exchange's upload."""

    name = "counter"

    def __init__(self) -> None:
        self.seen = 0

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        self.seen += len(chunk)


class CounterFactory:
    filter_class = Counter

    def create(self) -> Counter:
        return Counter()


async def run_every_hook(chain: FilterChain, ex) -> None:  # type: ignore[no-untyped-def]
    await chain.on_request(ex)
    chain.on_field(ex, "purpose", "batch")
    chain.on_file_start(ex)
    chain.on_file_data(ex, b"ab")
    chain.on_file_end(ex)
    await chain.on_upload_complete(ex)
    ex.status = 201
    chain.on_response(ex)
    chain.on_response_data(ex, b"cd")
    await chain.on_exchange_end(ex)


async def test_hooks_run_in_the_configured_order():
    log: list = []
    await run_every_hook(FilterChain([Recorder(log, "a"), Recorder(log, "b")]), exchange())
    assert log == [(who, *call) for call in [("on_request",), ("on_field", "purpose", "batch"), ("on_file_start",),
                                              ("on_file_data", b"ab"), ("on_file_end",), ("on_upload_complete",),
                                              ("on_response", 201), ("on_response_data", b"cd"),
                                              ("on_exchange_end",)] for who in ("a", "b")]


async def test_a_hook_calls_only_the_filters_that_override_it():
    log: list = []
    only, rec = OnlyRequest(log), Recorder(log, "r")
    chain = FilterChain([only, rec])
    await run_every_hook(chain, exchange())
    assert [e for e in log if e[0] == "only_request"] == [("only_request", "on_request")]
    # No call at all (not even the base class's empty method) for a filter without the hook.
    assert chain._on_file_data == [rec.on_file_data] and chain._on_request == [only.on_request, rec.on_request]
    assert not FilterChain([only]).observes_response_data and FilterChain([rec]).observes_response_data


async def test_exchange_end_reaches_every_filter_when_one_raises(caplog):
    log: list = []
    with caplog.at_level(logging.ERROR, logger="sluicegate"):
        await FilterChain([BrokenEnd(), Recorder(log, "r")]).on_exchange_end(exchange())
    assert log == [("r", "on_exchange_end")]
    assert "failed in on_exchange_end" in caplog.text


async def test_a_request_hook_that_raises_stops_the_later_ones():
    class Refuse(Filter):
        async def on_request(self, ex) -> None:  # type: ignore[no-untyped-def]
            raise ValueError("no")

    log: list = []
    with pytest.raises(ValueError):
        await FilterChain([Refuse(), Recorder(log, "r")]).on_request(exchange())
    assert log == []


async def test_appended_filter_runs_after_the_configured_ones_for_that_exchange_only():
    log: list = []
    factory = ChainFactory([Shared(Recorder(log, "configured"))])
    chain, other = factory.create(), factory.create()
    chain.append(Recorder(log, "appended"))
    chain.on_file_start(exchange())
    assert log == [("configured", "on_file_start"), ("appended", "on_file_start")]
    log.clear()
    other.on_file_start(exchange())  # the shared hook lists were not changed in place
    assert log == [("configured", "on_file_start")]
    assert factory.create()._on_file_start == [factory.factories[0].instance.on_file_start]


async def test_stateful_filters_get_an_instance_per_exchange_and_shared_ones_do_not():
    log: list = []
    shared = Recorder(log, "s")
    factory = ChainFactory([Shared(shared), CounterFactory()])
    a, b = factory.create(), factory.create()
    a.on_file_data(exchange(), b"abc")
    b.on_file_data(exchange(), b"z")
    assert [f.seen for f in (a.filters[1], b.filters[1])] == [3, 1]
    assert a.filters[0] is b.filters[0] is shared
    assert [e[0] for e in log] == ["s", "s"]  # order kept: the shared one first, as configured


def test_exchange_without_upload_body_creates_no_upload_only_filter():
    factory = ChainFactory([CounterFactory()])
    chain = factory.create(upload=False)
    assert chain.filters == [] and chain._on_file_data == []
    assert isinstance(factory.create(upload=True).filters[0], Counter)


def test_config_filter_names_are_the_registrys():
    assert FILTER_NAMES == tuple(filters.REGISTRY) and DEFAULT_FILTERS == tuple(filters.REGISTRY)
    assert FILTER_NAMES == ("auth", "provider_route", "size_limit", "batch_jsonl", "quota", "access_log", "metrics")


def test_required_filters_are_added_in_front_when_missing():
    assert filters.REQUIRED_FILTERS == ("auth", "provider_route")
    assert filters.chain_names(["metrics"]) == ["auth", "provider_route", "metrics"]
    assert filters.chain_names(["provider_route", "auth"]) == ["provider_route", "auth"]


def test_every_registered_filter_asks_only_for_known_dependencies():
    import inspect

    for spec in filters.REGISTRY.values():
        assert set(inspect.signature(spec.build).parameters) <= set(filters.DEPENDENCIES), spec.name


def test_a_filter_asking_for_the_gateway_is_refused(monkeypatch):
    class WantsGateway(Filter):
        name = "bad"

        def __init__(self, gateway) -> None:  # type: ignore[no-untyped-def]
            pass

    monkeypatch.setitem(filters.REGISTRY, "bad", filters.FilterSpec(WantsGateway))
    with pytest.raises(TypeError, match="asks for gateway"):
        filters.build_factory("bad", {})


class SeesExchange(Filter):
    """Records, for every hook, whether it got the exchange the chain was called with."""

    name = "sees_exchange"

    def __init__(self, ex, seen: list) -> None:  # type: ignore[no-untyped-def]
        self.ex, self.seen = ex, seen

    def _saw(self, hook: str, ex) -> None:  # type: ignore[no-untyped-def]
        self.seen.append((hook, ex is self.ex))

    async def on_request(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_request", ex)

    def on_field(self, ex, name, value) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_field", ex)

    def on_file_start(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_file_start", ex)

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_file_data", ex)

    def on_file_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_file_end", ex)

    async def on_upload_complete(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_upload_complete", ex)

    def on_response(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_response", ex)

    def on_response_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_response_data", ex)

    async def on_exchange_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        self._saw("on_exchange_end", ex)


async def test_every_hook_gets_the_exchange_it_was_called_with():
    ex, seen = exchange(), []
    await run_every_hook(FilterChain([SeesExchange(ex, seen)]), ex)
    assert seen == [(hook, True) for hook in filters.base.HOOKS]


async def test_a_chain_takes_several_appended_filters_in_order():
    log: list = []
    chain = FilterChain([Recorder(log, "a")])
    chain.append(Recorder(log, "b"))
    chain.append(Recorder(log, "c"))
    chain.on_file_end(exchange())
    assert [e[0] for e in log] == ["a", "b", "c"]
    factory_chain = ChainFactory([Shared(Recorder(log, "x"))]).create()
    factory_chain.append(Recorder(log, "y"))
    factory_chain.append(Recorder(log, "z"))
    log.clear()
    factory_chain.on_file_end(exchange())
    assert [e[0] for e in log] == ["x", "y", "z"]


async def test_a_failing_exchange_end_is_logged_naming_the_filter(caplog):
    broken = BrokenEnd()
    with caplog.at_level(logging.ERROR, logger="sluicegate"):
        await FilterChain([broken]).on_exchange_end(exchange())
    (record,) = [r for r in caplog.records if r.name == "sluicegate"]
    assert record.getMessage() == f"filter {broken!r} failed in on_exchange_end"
    assert record.exc_info[0] is RuntimeError


def test_a_missing_required_filter_is_warned_about_by_name(caplog):
    with caplog.at_level(logging.WARNING, logger="sluicegate"):
        filters.chain_names(["auth", "metrics"])
    assert [r.getMessage() for r in caplog.records] == ["filter 'provider_route' is required; adding it to the chain"]


def test_a_filter_asking_for_unknown_dependencies_names_them_and_the_allowed_ones(monkeypatch):
    class WantsMore(Filter):
        name = "bad"

        def __init__(self, gateway, app) -> None:  # type: ignore[no-untyped-def]
            pass

    monkeypatch.setitem(filters.REGISTRY, "bad", filters.FilterSpec(WantsMore))
    with pytest.raises(TypeError) as e:
        filters.build_factory("bad", {})
    assert str(e.value) == ("filter bad asks for gateway, app; filters may depend on: "
                            "auth, limits, default_provider, providers, store, metrics")


async def test_the_configured_chain_is_built_with_each_filters_dependencies(tmp_path):
    from filters.batch_jsonl import BatchJsonlFilter
    from filters.metrics import Metrics

    from .fakes import LOCAL, config, providers, sqlite_store

    cfg = config(providers=[{**LOCAL, "path": str(tmp_path / "files")}], default_provider="local")
    store = await sqlite_store(tmp_path)
    try:
        factory = filters.build_chain_factory(["batch_jsonl", "metrics"], auth=cfg.auth, limits=cfg.limits,
                                              default_provider="local", providers=providers(cfg), store=store,
                                              metrics=Metrics())
        a, b = factory.create(), factory.create()
        assert [f.name for f in a.filters] == ["auth", "provider_route", "batch_jsonl", "metrics"]
        assert isinstance(a.filters[2], BatchJsonlFilter) and a.filters[2] is not b.filters[2]
        assert a.filters[3] is b.filters[3]  # no per-exchange state: one shared instance
        ex = exchange(tenant=None)
        await a.on_request(ex)  # auth off: the default tenant; nothing named: the default provider
        assert (ex.tenant.name, ex.provider.name) == ("default", "local")
    finally:
        await store.close()


def test_every_hook_fills_a_declared_typed_list_of_the_chain():
    """The chain fills its hook lists by name (hot path: no per-hook code per exchange); each
    name must be one of its declared slots, typed by the hook's kind, or mypy checks nothing."""
    import inspect

    from filters.base import HOOKS

    declared = {name for name, value in vars(Filter).items() if name.startswith("on_") and callable(value)}
    assert set(HOOKS) == declared
    for hook in HOOKS:
        method = getattr(Filter, hook)
        params = list(inspect.signature(method).parameters)
        kind = ("AsyncHook" if inspect.iscoroutinefunction(method) else
                "FieldHook" if params == ["self", "ex", "name", "value"] else
                "DataHook" if params == ["self", "ex", "chunk"] else "ExchangeHook")
        assert FilterChain.__annotations__.get("_" + hook) == f"list[{kind}]", hook
        assert "_" + hook in FilterChain.__slots__
