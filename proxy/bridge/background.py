"""Background turns (``background: true``): the gateway runs the turn after it has answered.

``create`` stores the turn ``queued`` (owner: this process, ``host:pid:token``; heartbeat: now)
and answers at once; a task of this worker then runs it — at most
``limits.background_concurrency`` at a time per worker, the others wait ``queued`` — through the
same dialect, streamed call and emitter as a foreground turn, refreshing the heartbeat every
:data:`HEARTBEAT` s, and stores the final Response. ``retrieve`` polls the stored turn.

``cancel`` (any replica) writes ``cancelled`` if the turn is still queued or running; the
runner's writes are conditional on the status it expects, so a cancelled turn stays cancelled.
The runner stops at once when it runs in the cancelling process, else at its next heartbeat
(which finds the turn no longer running); either way the upstream call is closed.

A turn whose runner is gone — its process died or restarted (this host: the pid is not that
process any more), or on another host its heartbeat is older than :data:`STALE` s — is marked
``failed`` the first time anyone reads it, so it never stays ``in_progress`` forever.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..reservations import owner_gone, process_owner
from ..store.base import ResponseRecord, TurnRecord
from .emitter import Emitter, EmitterError, end_of_frames

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..providers.base import Provider
    from ..store.base import Store
    from .events import Dialect, ProviderCall

log = logging.getLogger("sluicegate.bridge")

HEARTBEAT = 2.0
STALE = 30.0
RUNNING = ("queued", "in_progress")

_tasks: dict[str, "asyncio.Task[None]"] = {}
_slots: dict[int, asyncio.Semaphore] = {}


def _slot(limit: int) -> asyncio.Semaphore:
    sem = _slots.get(limit)
    if sem is None:
        sem = _slots[limit] = asyncio.Semaphore(limit)
    return sem


def _turn(record: ResponseRecord, response: dict[str, Any], input_items: list[dict[str, Any]],
          events: list[dict[str, Any]] | None = None, *, running: bool) -> TurnRecord:
    return TurnRecord(id=record.id, tenant=record.tenant, previous_id=response.get("previous_response_id"),
                      status=str(response["status"]), input_items=input_items,
                      output_items=list(response.get("output") or []), response=response, events=events,
                      owner=process_owner() if running else None, heartbeat=int(time.time()) if running else 0)


async def start(store: "Store", ex: "Exchange", provider: "Provider", dialect: "Dialect", call: "ProviderCall",
                response: dict[str, Any], record: ResponseRecord, input_items: list[dict[str, Any]],
                limit: int) -> dict[str, Any]:
    """Store the turn ``queued`` and start running it; the Response object to answer with."""
    response["status"] = "queued"
    await store.add_turn(record, _turn(record, response, input_items, running=True))
    task = asyncio.ensure_future(_run(store, ex, provider, dialect, call, dict(response), record, input_items,
                                      limit))
    _tasks[record.id] = task
    task.add_done_callback(lambda _: _tasks.pop(record.id, None))
    return response


async def _run(store: "Store", ex: "Exchange", provider: "Provider", dialect: "Dialect", call: "ProviderCall",
               response: dict[str, Any], record: ResponseRecord, input_items: list[dict[str, Any]],
               limit: int) -> None:
    try:
        async with _slot(limit):
            response["status"] = "in_progress"
            em = Emitter(response)
            em.start()
            if not await store.update_turn(_turn(record, response, input_items, running=True), only_if=("queued",)):
                return   # cancelled while it waited
            runner = asyncio.current_task()
            assert runner is not None
            beat = asyncio.ensure_future(_heartbeat(store, record, response, input_items, runner))
            try:
                await _call(ex, provider, dialect, call, em)
            finally:
                beat.cancel()
            await store.update_turn(_turn(record, em.response, input_items, em.events, running=False),
                                    only_if=("in_progress",))
    except asyncio.CancelledError:
        raise     # cancelled: the canceller stored the outcome
    except Exception as exc:   # a store failure: the turn is settled as failed on its next read
        log.error("background response %s: %s", record.id, type(exc).__name__)


async def _call(ex: "Exchange", provider: "Provider", dialect: "Dialect", call: "ProviderCall", em: Emitter) -> None:
    decoder = dialect.stream_decoder()
    try:
        frames = await provider.bridge_stream(ex, call)
        try:
            async for frame in frames:
                for event in decoder.feed(frame):
                    em.feed(event)
                    if em.finished:
                        return
        finally:
            await frames.aclose()
        end_of_frames(em, decoder)
        if not em.finished:
            em.fail("server_error", f"The stream from provider '{provider.name}' ended before the response was "
                                    "complete.")
    except GatewayError as err:
        try:   # a broken stream: the decoder may still know how the turn ended
            end_of_frames(em, decoder)
        except EmitterError:
            pass
        if not em.finished:
            em.fail("rate_limit_exceeded" if err.status == 429 else "server_error", err.message)
    except EmitterError as err:
        em.fail("server_error", f"The provider's stream could not be translated: {err}")


async def _heartbeat(store: "Store", record: ResponseRecord, response: dict[str, Any],
                     input_items: list[dict[str, Any]], runner: "asyncio.Task[Any]") -> None:
    while True:
        await asyncio.sleep(HEARTBEAT)
        if not await store.update_turn(_turn(record, response, input_items, running=True), only_if=("in_progress",)):
            runner.cancel()   # cancelled through another replica
            return


async def cancel(store: "Store", turn: TurnRecord) -> TurnRecord:
    if turn.status in RUNNING:
        response = {**turn.response, "status": "cancelled"}
        await store.update_turn(TurnRecord(
            id=turn.id, tenant=turn.tenant, previous_id=turn.previous_id, status="cancelled",
            input_items=turn.input_items, output_items=[], response=response, events=None), only_if=RUNNING)
        task = _tasks.pop(turn.id, None)
        if task is not None:
            task.cancel()     # closes the upstream call now
    return await store.get_turn(turn.id) or turn


async def settle_orphan(store: "Store", turn: TurnRecord) -> TurnRecord:
    """A running turn whose runner is gone becomes ``failed`` (see the module docstring)."""
    if turn.status not in RUNNING or turn.id in _tasks:
        return turn
    owner = turn.owner
    if owner is not None and owner != process_owner() and not owner_gone(owner, turn.heartbeat, time.time(), STALE):
        return turn   # another live process runs it
    response = {**turn.response, "status": "failed", "error": {
        "code": "server_error", "message": "The gateway running this background response stopped before it finished."}}
    await store.update_turn(TurnRecord(
        id=turn.id, tenant=turn.tenant, previous_id=turn.previous_id, status="failed", input_items=turn.input_items,
        output_items=[], response=response, events=None), only_if=RUNNING)
    return await store.get_turn(turn.id) or turn
