"""Expiry of Uploads (``/v1/uploads``, proxy/uploads_api.py), run by the gateway's sweeper.

A pending upload expires one hour after its creation: its parts go (rows and bytes) and the
quota it reserved is released. Each upload is claimed first (``move_upload`` to ``expired``), so
sweepers running in every worker and replica never expire one twice. A ``complete`` that died
with its process (the upload stuck in ``completing``) is expired an hour later. Then the
upload directories on the gateway's disks, and the objects under a bucket provider's
``{prefix}uploads/``, that no pending upload owns (a part being written, or stored but not yet
recorded, when its process died) are removed, so a restart leaks nothing; settled upload rows are purged
a week after their expiry.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Mapping, cast

from .providers.parts_local import LocalPartStore
from .uploads_api import disk_parts, part_store_for, settle

if TYPE_CHECKING:
    from .providers.base import Provider
    from .store.base import Store
    from .upload_parts import ListedPartStore

log = logging.getLogger("sluicegate.uploads")

# A ``complete`` still running this long after its upload's expiry is taken to have died with
# its process: the sweeper expires the upload then.
COMPLETING_GRACE = 3600
# Settled upload rows are kept this long after their expiry (they answer "not pending" errors),
# then purged.
SETTLED_RETENTION = 7 * 24 * 3600


async def _live(store: "Store", upload_id: str) -> bool:
    rec = await store.get_upload(upload_id)
    return rec is not None and rec.status in ("pending", "completing")


async def sweep_uploads(store: "Store", providers: Mapping[str, "Provider"], data_dir: str) -> int:
    """One sweep (see the module docstring); returns how many uploads expired."""
    now = int(time.time())
    expired = 0
    for up in await store.expired_uploads(now):
        if up.status == "completing" and up.expires_at > now - COMPLETING_GRACE:
            continue
        claimed = await store.move_upload(up.id, (up.status,), "expired")
        if claimed is None:
            continue
        provider = providers.get(up.provider)
        # Forwarded uploads: the upstream expires its own parts.
        parts = part_store_for(provider, None, data_dir) if provider and not provider.forwards_uploads else None
        await settle(store, parts, claimed, "expired", None, release=True)
        expired += 1
    disks = [disk_parts(data_dir)]
    buckets: list[ListedPartStore] = []
    for provider in providers.values():
        own = None if provider.forwards_uploads else provider.part_store(None)
        if isinstance(own, LocalPartStore):
            disks.append(own)
        elif own is not None and hasattr(own, "stored_parts"):
            buckets.append(cast("ListedPartStore", own))
    # (A part is written only once its upload's row exists: a part no live upload owns is a leftover.)
    for disk in disks:
        for upload_id in disk.upload_ids():
            if not await _live(store, upload_id):
                disk.remove_upload(upload_id)
    for bucket in buckets:
        try:
            for upload_id, leftovers in (await bucket.stored_parts()).items():
                if not await _live(store, upload_id):
                    await bucket.delete(leftovers)
        except Exception:
            log.exception("could not sweep the leftover upload parts in a bucket")
    await store.purge_uploads(now - SETTLED_RETENTION)
    return expired
