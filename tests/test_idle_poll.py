"""server.idle_poll: the loop polls for one window after the last exchange activity, then sleeps."""
from __future__ import annotations

import asyncio

import pytest

from proxy.config import ConfigError, parse_config
from proxy.idle_poll import MAX_WINDOW, IdlePoller


async def test_off_never_polls() -> None:
    poller = IdlePoller(0.0)
    assert not poller.asleep  # the request path's ``if poller.asleep`` never wakes it
    poller.activity += 1
    poller.wake()
    assert not poller.asleep and poller._loop is None  # nothing scheduled


async def test_polls_for_one_window_then_sleeps() -> None:
    loop = asyncio.get_running_loop()
    poller = IdlePoller(0.05)
    assert poller.asleep
    t0 = loop.time()
    poller.wake()
    assert not poller.asleep
    poller.wake()  # already polling: no second chain of turns
    while not poller.asleep:
        await asyncio.sleep(0.005)
        assert loop.time() - t0 < 1.0, "the poller never stopped"
    assert loop.time() - t0 >= 0.05


async def test_activity_extends_the_window() -> None:
    loop = asyncio.get_running_loop()
    poller = IdlePoller(0.04)
    poller.wake()
    t0 = loop.time()
    for _ in range(10):            # activity every 10 ms for 100 ms: never idle for a window
        await asyncio.sleep(0.01)
        poller.activity += 1
        assert not poller.asleep
    last = loop.time()
    while not poller.asleep:
        await asyncio.sleep(0.005)
        assert loop.time() - t0 < 2.0, "the poller never stopped"
    assert loop.time() - last >= 0.04 - 0.011  # (the last turn saw the last bump up to one sleep late)


class _CountingPoller(IdlePoller):
    turns = 0

    def _turn(self) -> None:
        type(self).turns += 1
        super()._turn()


async def test_the_loop_keeps_turning_while_polling() -> None:
    """While polling, an otherwise idle loop keeps turning (one poller turn per loop turn);
    asleep, it has no turn of its own."""
    poller = _CountingPoller(0.2)
    poller.wake()
    await asyncio.sleep(0.05)
    assert _CountingPoller.turns > 50 and not poller.asleep
    poller.window = 0.0        # ends at the next turn
    await asyncio.sleep(0.01)
    assert poller.asleep
    before = _CountingPoller.turns
    await asyncio.sleep(0.05)
    assert _CountingPoller.turns == before


async def test_the_gateway_counts_each_exchange_start_and_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import make_mocked_request

    from proxy.gateway import Gateway

    cfg = parse_config({"server": {"data_dir": str(tmp_path), "idle_poll": "1ms"}})
    gw = Gateway(cfg)
    await gw.start()
    try:
        assert gw.poller.window == pytest.approx(0.001) and gw.poller.asleep
        resp = await gw.handle(make_mocked_request("GET", "/v1/files/file-abc"))
        assert resp.status == 404
        assert gw.poller.activity == 2      # began and ended
        assert not gw.poller.asleep         # woken by the exchange
        await asyncio.sleep(0.05)
        assert gw.poller.asleep             # one window later, asleep again
        await gw.handle(make_mocked_request("GET", "/healthz"))
        assert gw.poller.activity == 2      # admin paths are no exchange
    finally:
        await gw.close()


def test_config() -> None:
    assert parse_config({}).server.idle_poll == pytest.approx(100e-6)
    assert parse_config({"server": {"idle_poll": 0}}).server.idle_poll == 0
    assert parse_config({"server": {"idle_poll": "250us"}}).server.idle_poll == pytest.approx(250e-6)
    assert parse_config({"server": {"idle_poll": "2ms"}}).server.idle_poll == pytest.approx(0.002)
    assert parse_config({"server": {"idle_poll": MAX_WINDOW}}).server.idle_poll == MAX_WINDOW
    for bad in ("11ms", 1, "-1us", "fast"):
        with pytest.raises(ConfigError, match="server.idle_poll"):
            parse_config({"server": {"idle_poll": bad}})
