"""Group commit of response records, shared by the SQLite and PostgreSQL stores.

``add`` returns once its record is committed. Callers that arrive together share one commit —
whoever arrives while a commit is running joins the next one — so there is no fixed delay and,
under load, one transaction (and one round trip) for many responses instead of one each.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from .base import ResponseRecord


class GroupCommit:
    def __init__(self, insert: Callable[[list[ResponseRecord]], Awaitable[None]]) -> None:
        self._insert = insert                          # writes one batch in one transaction
        self._pending: dict[str, ResponseRecord] = {}  # the next batch (the last record of an id wins)
        self._next: asyncio.Future[None] | None = None  # what the pending records' writers await
        self._flusher: asyncio.Future[None] | None = None

    async def add(self, rec: ResponseRecord) -> None:
        self._pending[rec.id] = rec
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        commit = self._next
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        # Shielded: a caller that is cancelled (its client left) does not cancel the commit
        # the others wait for.
        await asyncio.shield(commit)

    def discard(self, response_id: str) -> bool:
        """Drop a record not yet being committed; True if it was waiting."""
        return self._pending.pop(response_id, None) is not None

    async def drain(self) -> None:
        """Wait for the batch being committed (before the store closes)."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        while self._next is not None:
            batch = list(self._pending.values())  # empty if all were discarded meanwhile
            self._pending.clear()
            commit, self._next = self._next, None
            try:
                if batch:
                    await self._insert(batch)
            except Exception as exc:
                commit.set_exception(exc)
                commit.exception()  # retrieved here: no "never retrieved" warning if nobody waits
            except BaseException:
                commit.set_exception(RuntimeError("the store closed before the commit"))
                commit.exception()
                raise
            else:
                commit.set_result(None)
