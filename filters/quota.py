"""quota: an org-wide storage quota per tenant (100 GB by default), released on delete.

Checked before the body is read (stored bytes + what Content-Length announces), while the
bytes stream (stored + received so far), and finally, atomically, when the store records the
file (two concurrent uploads cannot both squeeze under the limit). A quota error is a 429 with
``x-should-retry: false``: the OpenAI SDK would otherwise re-send the whole body twice more.
"""
from __future__ import annotations

from proxy.errors import quota_error

from .base import Filter
from .size_limit import FORM_ALLOWANCE


class QuotaFilter(Filter):
    name = "quota"

    def __init__(self, gateway) -> None:  # type: ignore[no-untyped-def]
        super().__init__(gateway)
        self.quota = gateway.config.limits.tenant_storage_quota

    async def on_request(self, ex) -> None:  # type: ignore[no-untyped-def]
        if ex.operation != "files.create":
            return
        ex.quota_limit = self.quota
        ex.quota_used = used = await self.gateway.store.tenant_usage(ex.tenant.name)
        announced = max(0, (ex.content_length or 0) - FORM_ALLOWANCE)
        if used + announced > self.quota or used >= self.quota:
            raise quota_error(ex.tenant.name, used, announced, self.quota)

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        if ex.quota_used + ex.file_bytes > self.quota:
            raise quota_error(ex.tenant.name, ex.quota_used, ex.file_bytes, self.quota)
