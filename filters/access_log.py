"""access_log: one logfmt line per exchange on the ``sluicegate.access`` logger.

Never logs credentials or bodies: method, path, operation, status, tenant, provider, bytes,
duration, time to first byte, object id, model, token usage, error code.
"""
from __future__ import annotations

import logging
import time

from .base import Filter

log = logging.getLogger("sluicegate.access")


class AccessLogFilter(Filter):
    name = "access_log"

    async def on_exchange_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        if not log.isEnabledFor(logging.INFO):
            return
        end = ex.ended or time.perf_counter()
        ttfb = f"{(ex.first_byte_at - ex.started) * 1000:.2f}" if ex.first_byte_at else "-"
        usage = ex.usage or {}
        req = ex.request
        log.info(
            'method=%s path="%s" op=%s status=%d tenant=%s provider=%s upload_bytes=%d duration_ms=%.2f '
            "ttfb_ms=%s id=%s model=%s input_tokens=%s output_tokens=%s error=%s",
            req.method, req.path, ex.operation, ex.status, ex.tenant_name,
            ex.provider.name if ex.provider else "-", ex.file_bytes, (end - ex.started) * 1000, ttfb,
            ex.response_id or ex.object_id or "-", ex.model or "-",
            usage.get("input_tokens", "-"), usage.get("output_tokens", "-"), ex.error_code or "-",
        )
