"""quota: an org-wide storage quota per tenant (100 GB by default), released on delete.

Uploads count while they stream: each holds a reservation in the store (proxy/reservations.py)
that the store grants atomically against the tenant's stored *and* reserved bytes — before
the body is read (what Content-Length announces), then as bytes arrive. So concurrent uploads
are refused the moment they would pass the quota together, not after their bodies; at commit
the reservation becomes the stored file in one transaction. This filter names the limit and
refuses a chunk that carries more file bytes than the reservation could be grown to. A quota
error is a 429 with ``x-should-retry: false``: the OpenAI SDK would otherwise re-send the
whole body twice more.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.errors import quota_error

from .base import Chunk, Filter

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.config import LimitsConfig


# Operations that store bytes: an upload of a file, an Upload's quota reserved at create and
# its file recorded at complete.
_STORING = frozenset({"files.create", "uploads.create", "uploads.complete"})


class QuotaFilter(Filter):
    name = "quota"

    def __init__(self, limits: "LimitsConfig") -> None:
        self.quota = limits.tenant_storage_quota

    async def on_request(self, ex: "Exchange") -> None:
        if ex.operation in _STORING:
            ex.quota_limit = self.quota

    def on_file_data(self, ex: "Exchange", chunk: Chunk) -> None:
        res = ex.reservation
        if res is not None and ex.file_bytes > res.bytes:
            raise quota_error(ex.tenant_name, res.used, ex.file_bytes, self.quota)
