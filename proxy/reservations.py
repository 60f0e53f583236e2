"""Bytes in flight: the quota an upload holds while it streams, and who owns its partial data.

An upload reserves quota before it reads its body — what ``Content-Length`` announces, else
nothing — and grows the reservation as bytes arrive, in steps (at least 1 MiB, an eighth of
what it holds for large files), so that the store is asked a handful of times per upload, not
once per chunk. The store grants atomically against the tenant's stored *and* reserved bytes,
so concurrent uploads are refused the moment they would pass the quota together, not after
their bodies. At commit the reservation becomes the stored file (one transaction); on any
failure, cancellation or disconnect it is released.

Each reservation names its owner (``host:pid:start-token``) and where its partial data lives,
so that the janitor (:mod:`proxy.janitor`) can remove what a crashed process left behind.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from .ids import new_id
from .store.base import QuotaExceeded, Reservation

if TYPE_CHECKING:
    from .providers.sink import Sink
    from .store.base import Store

log = logging.getLogger("sluicegate.reservations")

MIN_STEP = 1 << 20


# -- who owns an upload ----------------------------------------------------------------------


def _start_token(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, Linux ``/proc/<pid>/stat`` field 22):
    unique per process on a host, and readable by the other processes there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


_owner: tuple[int, str] | None = None


def process_owner() -> str:
    """This process's owner id, ``host:pid:token`` (computed again after a fork)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        token = _start_token(pid) or "r" + secrets.token_hex(8)
        _owner = (pid, f"{socket.gethostname()}:{pid}:{token}")
    return _owner[1]


def owner_gone(owner: str, heartbeat: int, now: float, max_age: float) -> bool:
    """Whether no live process can own a reservation of ``owner``: on this host, its pid is not
    running or is another process now (start token differs); elsewhere (or when the token cannot
    be checked), its heartbeat is older than ``max_age``."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return owner != process_owner()
        if not token.startswith("r"):
            return _start_token(pid) != token
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return now - heartbeat > max_age


# An Upload's quota is held from its create to its complete/cancel/expiry, across requests and
# processes: its reservation is owned by no process (``upload:<id>``, never this host) and its
# heartbeat is the upload's expiry, so the janitor leaves it alone until then plus
# ``server.orphan_upload_age``; the uploads sweeper settles it first (proxy/uploads_api.py).
UPLOAD_OWNER = "upload:"


# -- one upload's reservation ------------------------------------------------------------------


class UploadReservation:
    """The handle of one upload's reservation (its row lives in the store)."""

    __slots__ = ("store", "tenant", "quota", "row", "bytes", "used", "settled", "opened")

    def __init__(self, store: Store, tenant: str, provider: str, quota: int | None, *,
                 owner: str | None = None, heartbeat: int | None = None) -> None:
        """``owner``/``heartbeat``: this process and now, unless the reservation outlives the
        request (an Upload's: owner ``upload:<id>``, heartbeat its expiry, see
        :data:`UPLOAD_OWNER`)."""
        now = int(time.time())
        self.store = store
        self.tenant = tenant
        self.quota = quota
        self.row = Reservation(id=new_id("rsv-"), tenant=tenant, owner=owner or process_owner(), provider=provider,
                               started_at=now, heartbeat=now if heartbeat is None else heartbeat)
        self.bytes = 0        # granted so far
        self.used = 0         # the tenant's other stored and reserved bytes, at the last grant
        self.settled = False  # converted to a stored file, or released
        self.opened = False

    @classmethod
    def held(cls, store: Store, tenant: str, provider: str, quota: int | None, res_id: str,
             granted: int) -> "UploadReservation":
        """A handle on a reservation an earlier request opened (an Upload's, at complete)."""
        res = cls(store, tenant, provider, quota)
        res.row.id = res_id
        res.bytes = granted
        res.opened = True
        return res

    @property
    def id(self) -> str:
        return self.row.id

    async def open(self, want: int, minimum: int) -> None:
        """Reserve up to ``want`` bytes, at least ``minimum`` (else QuotaExceeded). Shielded: a
        cancellation cannot leave a row this handle does not know about."""
        self.row.bytes = want
        self.opened = True
        try:
            self.bytes, self.used = await asyncio.shield(
                self.store.reserve(self.row, minimum=minimum, quota=self.quota))
        except QuotaExceeded:
            self.settled = True  # nothing was inserted
            raise

    async def cover(self, need: int) -> None:
        """Grow towards ``need`` bytes plus a step; the quota may grant less (the caller checks
        ``bytes`` against what it really received)."""
        want = max(need, self.bytes + max(MIN_STEP, self.bytes >> 3))
        self.bytes, self.used = await asyncio.shield(
            self.store.grow_reservation(self.row.id, self.tenant, want, quota=self.quota))

    async def track(self, file_id: str, sink: Sink) -> None:
        """Record where the upload's partial data is, when that changed (the sink opened, an S3
        multipart upload or a GCS session started): a handful of writes per upload."""
        location: dict[str, Any] = {"file_id": file_id}
        partial = getattr(sink, "partial_location", None)
        if partial is not None:
            location.update(partial())
        if location != self.row.location:
            self.row.location = location
            await asyncio.shield(self.store.locate_reservation(self.row.id, location))

    async def locate(self, location: dict[str, Any]) -> None:
        """Record ``location`` as what this reservation owns (an Upload's: its id while parts
        arrive, the file's id while ``complete`` composes it), so the janitor leaves that
        partial data alone (``sweep_partials``)."""
        self.row.location = location
        await asyncio.shield(self.store.locate_reservation(self.row.id, location))

    def converted(self) -> None:
        """The store turned the reservation into a file row."""
        self.settled = True

    async def release(self) -> None:
        """Idempotent; shielded, so that it completes even when the exchange is cancelled
        (client gone) while it waits."""
        if self.settled or not self.opened:
            return
        self.settled = True
        try:
            await asyncio.shield(self.store.release_reservation(self.row.id))
        except asyncio.CancelledError:
            raise
        except Exception:  # the janitor removes it once this process is gone
            log.exception("could not release reservation %s", self.row.id)

