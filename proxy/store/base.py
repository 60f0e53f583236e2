"""What the gateway remembers: which tenant owns which file or response, and where it lives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class FileRecord:
    id: str                      # the id clients see (gateway-minted, or the upstream's for pass-through)
    tenant: str
    provider: str                # configured provider name
    filename: str
    purpose: str
    bytes: int
    created_at: int
    upstream_id: str | None = None               # the provider's own id, when it has one
    location: dict[str, Any] = field(default_factory=dict)  # bucket/key/path; never shown to clients
    expires_at: int | None = None
    status: str = "processed"
    seq: int | None = None       # the store's insertion order (list order); set by delete_file

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI File object for this record."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": None,
        }


@dataclass(slots=True)
class ResponseRecord:
    id: str
    tenant: str
    provider: str
    model: str | None
    created_at: int


class QuotaExceeded(Exception):
    def __init__(self, used: int, adding: int, quota: int) -> None:
        super().__init__(f"quota exceeded: {used} + {adding} > {quota}")
        self.used, self.adding, self.quota = used, adding, quota


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def add_file(self, rec: FileRecord, *, quota: int | None = None) -> None:
        """Insert atomically with the quota check: raise QuotaExceeded if the tenant's stored
        bytes plus ``rec.bytes`` would exceed ``quota``."""

    async def get_file(self, file_id: str) -> FileRecord | None: ...

    async def list_files(
        self, tenant: str, *, purpose: str | None, limit: int, order: str, after: str | None,
        provider: str | None = None,
    ) -> tuple[list[FileRecord], bool]: ...

    async def expired_files(self, now: int, limit: int = 500) -> list[FileRecord]: ...

    async def delete_file(self, file_id: str) -> FileRecord | None:
        """Remove the row atomically and return it (``DELETE … RETURNING``): of concurrent
        deletes of one id, in any process, exactly one gets the record; the others get None."""

    async def restore_file(self, rec: FileRecord) -> None:
        """Put back a record ``delete_file`` returned (same list position), without a quota
        check: used when the file's bytes could not be removed, so its bytes never left."""

    async def tenant_usage(self, tenant: str) -> int: ...

    async def add_response(self, rec: ResponseRecord) -> None:
        """Return only once the record is durable (committed): the gateway sends the end of a
        response to its client after this, so a crash right after cannot lose the record.
        Concurrent calls may share one commit (group commit)."""

    async def get_response(self, response_id: str) -> ResponseRecord | None: ...

    async def delete_response(self, response_id: str) -> bool: ...
