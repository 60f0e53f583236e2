"""The janitor: remove partial uploads that no live process owns.

A process killed mid-upload (SIGKILL, OOM, power loss) leaves its partial data — a file in
``.partial/``, an S3 multipart upload, a GCS resumable session — and its reservation row,
which would hold the tenant's quota forever. At start-up and with every expiry sweep, each
worker:

1. refreshes the heartbeat of its own reservations;
2. for each reservation whose owner is gone (this host: the pid is not running, or is another
   process now; other hosts: the heartbeat is older than ``server.orphan_upload_age``),
   removes its partial data through the provider (``cleanup_partial``) and then the row;
3. asks each provider to remove partial data no remaining reservation names
   (``sweep_partials``): local ``.partial/`` files idle for a few seconds, S3 multipart uploads
   under the gateway's prefix older than ``server.orphan_upload_age``.

Every step is idempotent: several workers may run it at once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .reservations import owner_gone, process_owner

if TYPE_CHECKING:
    from .providers.base import Provider
    from .store.base import Store

log = logging.getLogger("sluicegate.janitor")


@dataclass(slots=True)
class Cleaned:
    reservations: int = 0   # reservations of dead owners removed (with their partial data)
    partials: int = 0       # unowned partial uploads removed

    def __bool__(self) -> bool:
        return bool(self.reservations or self.partials)


async def clean_orphans(store: "Store", providers: Mapping[str, "Provider"], max_age: float) -> Cleaned:
    now = time.time()
    done = Cleaned()
    await store.touch_reservations(process_owner(), int(now))
    live = []
    for row in await store.reservations():
        if not owner_gone(row.owner, row.heartbeat, now, max_age):
            live.append(row)
            continue
        provider = providers.get(row.provider)
        try:
            if provider is not None and row.location:
                await provider.cleanup_partial(row.location)
        except Exception as exc:  # keep the row: its data is still somewhere; retry next sweep
            log.warning("could not remove the partial upload of reservation %s on %s: %s",
                        row.id, row.provider, exc)
            live.append(row)
            continue
        if await store.release_reservation(row.id):
            done.reservations += 1
    # Every live location, whatever provider it names: providers may share a bucket or a path.
    owned = [row.location for row in live]
    for provider in providers.values():
        try:
            done.partials += await provider.sweep_partials(owned, max_age)
        except Exception as exc:
            log.warning("could not sweep partial uploads on %s: %s", provider.name, exc)
    return done
