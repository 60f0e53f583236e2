"""Idle polling: the event loop keeps turning for a short window after the last request activity
instead of putting the process to sleep at once (``server.idle_poll``; 0 turns it off).

A gateway worker that blocks in ``epoll_wait`` the moment it has nothing to run pays for it when
the next event arrives: the kernel must wake the process, on a virtual machine the vCPU may have
been halted; the request that follows runs on cold caches. For a proxy each exchange has
two such gaps (waiting for the upstream's answer, then for the client's next request), each of
tens of microseconds against a near-by upstream. Polling through them — each turn of the loop is
an ``epoll_wait`` with a zero timeout, then this one callback — keeps the worker hot, as
Seastar's reactor (``--idle-poll-time-us``, 200 µs by default) and Go's runtime (spinning
threads before parking) do. Measured on this project's bench (issue 10; README, Benchmarks):
``POST /v1/responses`` at c=1 went from p50 0.37-0.48 ms to 0.25-0.35 ms (direct: 0.03 ms);
at c=64 a worker that is busy anyway rarely sleeps, and the effect was within the box's noise.

What it costs: at most one window of CPU after each burst of activity (an idle gateway polls
for nothing); at a steady trickle of requests spaced further apart than the window, up to two
windows per request (one while the upstream works, one after the answer). Activity is the start
or the end of an exchange (:meth:`Gateway.handle` counts both), so a long upstream call (a model
generating for seconds) is polled through for one window, then slept through as before.
"""
from __future__ import annotations

import asyncio

# A window longer than this would mostly burn CPU: the gaps it bridges are tens of µs.
MAX_WINDOW = 0.01


class IdlePoller:
    """Keeps the running loop polling while :attr:`activity` changed within the last ``window``
    seconds. The request path does ``poller.activity += 1`` and, if :attr:`asleep`,
    :meth:`wake` — nothing else."""

    __slots__ = ("window", "activity", "asleep", "_seen", "_last", "_loop")

    def __init__(self, window: float) -> None:
        self.window = window
        self.activity = 0
        self.asleep = window > 0   # polling is on and not running (off: never asleep, never woken)
        self._seen = 0
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Start polling (from a coroutine or callback of the running loop)."""
        if not self.asleep:
            return
        loop = self._loop = asyncio.get_running_loop()
        self.asleep = False
        self._seen = self.activity
        self._last = loop.time()
        loop.call_soon(self._turn)

    def _turn(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if self.activity != self._seen:
            self._seen = self.activity
            self._last = now
        elif now - self._last >= self.window:
            self.asleep = True
            return
        loop.call_soon(self._turn)
