"""size_limit: 512 MiB per file, 200 MiB for purpose=batch (configurable; OpenAI's own limits,
docs/provider-facts.md §1.3 and §1.8).

Rejects as early as the information allows: from Content-Length before any body byte is read
(the body may exceed the file limit only by FORM_ALLOWANCE of form fields and framing), and
from the running byte count the moment it passes the limit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.errors import GatewayError
from proxy.limits import FORM_ALLOWANCE
from proxy.units import size_and_bytes

from .base import Chunk, Filter

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.config import LimitsConfig


class SizeLimitFilter(Filter):
    name = "size_limit"

    def __init__(self, limits: "LimitsConfig") -> None:
        self.max_file = limits.max_file_size
        self.max_batch = limits.max_batch_file_size
        self.max_upload = limits.max_upload_size

    def _limit_for(self, ex: "Exchange") -> int:
        """The file limit: the provider's cap always; for an Upload's file (``uploads.*``)
        ``max_upload_size`` when set, else the limits of a single upload."""
        provider_max = ex.provider.config.max_file_size if ex.provider else None
        if self.max_upload is not None and ex.operation.startswith("uploads."):
            limit = self.max_upload
        else:
            limit = self.max_file
            if ex.purpose == "batch":
                limit = min(limit, self.max_batch)
        if provider_max:
            limit = min(limit, provider_max)
        return limit

    def _too_large(self, ex: "Exchange", limit: int) -> GatewayError:
        what = "batch files" if ex.purpose == "batch" else "files"
        return GatewayError(413, f"File is too large: the limit for {what} is {size_and_bytes(limit)}.",
                            param="file", code="file_too_large")

    async def on_request(self, ex: "Exchange") -> None:
        if ex.operation == "uploads.create":
            self._declared(ex)
            return
        if ex.operation != "files.create":
            return
        ex.size_limit = self._limit_for(ex)
        if ex.content_length is not None and ex.content_length > ex.size_limit + FORM_ALLOWANCE:
            raise self._too_large(ex, ex.size_limit)

    def _declared(self, ex: "Exchange") -> None:
        """An Upload declares its size at create: refused there, before any part is sent."""
        body = ex.json_body or {}
        purpose, declared = body.get("purpose"), body.get("bytes")
        ex.purpose = purpose if isinstance(purpose, str) else None
        ex.size_limit = self._limit_for(ex)
        if isinstance(declared, int) and not isinstance(declared, bool) and declared > ex.size_limit:
            err = self._too_large(ex, ex.size_limit)
            err.param = "bytes"
            raise err

    def on_file_start(self, ex: "Exchange") -> None:
        # The purpose is known now, always (proxy/field_order.py): the limit is final.
        ex.size_limit = self._limit_for(ex)
        # What is left of the body bounds the file from above, plus framing and any fields
        # after it; far beyond the limit means the file cannot fit.
        if ex.content_length is not None and ex.content_length - ex.body_bytes > ex.size_limit + FORM_ALLOWANCE:
            raise self._too_large(ex, ex.size_limit)

    def on_file_data(self, ex: "Exchange", chunk: Chunk) -> None:
        limit = ex.size_limit  # set by on_file_start, always before the file's data
        if limit is not None and ex.file_bytes > limit:
            raise self._too_large(ex, limit)
