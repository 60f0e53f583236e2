"""The per-request object every stage reads and writes."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp.web import BaseRequest

    from .providers.base import Provider
    from .reservations import UploadReservation
    from .store.base import BatchRecord, FileRecord, ResponseRecord, UploadRecord


class Tenant:
    __slots__ = ("name", "admin")

    def __init__(self, name: str, admin: bool = False) -> None:
        self.name = name
        self.admin = admin


class Exchange:
    """One request's state. Stages communicate only through it."""

    __slots__ = (
        "request", "operation", "object_id", "tenant", "provider", "file_record", "response_record", "batch_record",
        "upload_record",
        "status", "started", "first_byte_at", "ended",
        # uploads
        "content_length", "purpose", "filename", "expires_after", "file_bytes", "body_bytes",
        "file_started", "quota_limit", "quota_used", "size_limit", "reservation",
        # JSON operations: the body the pipeline read (json_changed: a filter rewrote json_body)
        "json_body", "raw_body", "json_changed",
        # a purpose=batch upload: the endpoint (``url``) its lines name, found by batch_jsonl
        "batch_url",
        # files.list: provider_route's verdict (list upstream, or the store filtered by provider)
        "list_upstream", "list_provider",
        # responses / access log
        "model", "response_id", "usage", "error", "error_code", "response_headers",
    )

    def __init__(self, request: "BaseRequest", operation: str, object_id: str | None) -> None:
        self.request = request
        self.operation = operation
        self.object_id = object_id
        self.tenant: Tenant | None = None
        self.provider: Provider | None = None
        self.file_record: FileRecord | None = None
        self.response_record: ResponseRecord | None = None
        self.batch_record: BatchRecord | None = None
        self.upload_record: UploadRecord | None = None  # uploads.parts/complete/cancel: the path's Upload
        self.status = 0
        self.started = time.perf_counter()
        self.first_byte_at: float | None = None
        self.ended: float | None = None
        self.content_length: int | None = request.content_length
        self.purpose: str | None = None
        self.filename: str | None = None
        self.expires_after: int | None = None
        self.file_bytes = 0
        self.body_bytes = 0
        self.file_started = False
        self.quota_limit: int | None = None
        self.quota_used = 0
        self.size_limit: int | None = None
        self.reservation: UploadReservation | None = None  # quota bytes this upload holds
        self.batch_url: str | None = None
        self.json_body: dict[str, Any] | None = None
        self.raw_body: bytes | None = None
        self.json_changed = False
        self.list_upstream = False
        self.list_provider: str | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_code: str | None = None
        self.response_headers: dict[str, str] = {}

    @property
    def tenant_name(self) -> str:
        return self.tenant.name if self.tenant else "-"
