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


@dataclass(slots=True)
class Reservation:
    """Quota bytes held by one upload while it streams, and where its partial data lives.

    ``owner`` is ``host:pid:token`` of the process running the upload (token: that process's
    start time, so a reused pid is told apart); ``location`` is the provider's locator of the
    partial data (a file id on disk, an S3 upload id, a GCS session URI), kept so that a
    janitor can remove what a crashed process left behind. Never shown to clients.
    """

    id: str
    tenant: str
    owner: str
    provider: str
    bytes: int = 0
    location: dict[str, Any] = field(default_factory=dict)
    started_at: int = 0
    heartbeat: int = 0


@dataclass(slots=True)
class UploadRecord:
    """An Upload (``/v1/uploads``): who created it, what it declared, where it stands.

    ``status``: ``pending`` → ``completing`` (one ``complete`` at a time; back to ``pending``
    if it fails) → ``completed``; or ``cancelled``/``expired``. ``reservation`` is the quota
    reservation holding the declared ``bytes`` until the upload is settled; ``upstream_id``
    is set for a pass-through upload (the provider's id is the one clients see).
    """

    id: str
    tenant: str
    provider: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    created_at: int
    expires_at: int
    status: str = "pending"
    reservation: str | None = None
    upstream_id: str | None = None
    file_id: str | None = None                   # the completed File
    file_expires_after: int | None = None        # expires_after.seconds for the File

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def to_openai(self, status: str | None = None, file: dict[str, Any] | None = None) -> dict[str, Any]:
        """The OpenAI Upload object (openai-python ``types/upload.py``)."""
        shown = status or self.status
        return {
            "id": self.id, "object": "upload", "bytes": self.bytes, "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose,
            "status": "pending" if shown == "completing" else shown,
            "expires_at": self.expires_at, "file": file,
        }


@dataclass(slots=True)
class PartRecord:
    """One stored part of an Upload (``location``: the part store's locator, never shown)."""

    id: str
    upload_id: str
    bytes: int
    created_at: int
    location: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI UploadPart object (openai-python ``types/uploads/upload_part.py``)."""
        return {"id": self.id, "object": "upload.part", "created_at": self.created_at, "upload_id": self.upload_id}


class QuotaExceeded(Exception):
    def __init__(self, used: int, adding: int, quota: int) -> None:
        super().__init__(f"quota exceeded: {used} + {adding} > {quota}")
        self.used, self.adding, self.quota = used, adding, quota


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def add_file(self, rec: FileRecord, *, quota: int | None = None, reservation: str | None = None) -> None:
        """Insert atomically with the quota check: raise QuotaExceeded if the tenant's stored
        and reserved bytes (without ``reservation``) plus ``rec.bytes`` would exceed ``quota``.
        The ``reservation``, if given, is removed in the same transaction: its bytes become
        stored bytes."""

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

    # -- reservations: bytes in flight ------------------------------------------------------
    # Each is one atomic step (SQLite: one BEGIN IMMEDIATE transaction; PostgreSQL: one
    # statement, e.g. a CTE that locks the tenant's usage row, grants and inserts/updates).

    async def reserve(self, res: Reservation, *, minimum: int, quota: int | None) -> tuple[int, int]:
        """Insert ``res`` holding as many of ``res.bytes`` as the quota leaves, at least
        ``minimum``: returns ``(granted, used)`` (``used``: the tenant's stored and reserved
        bytes before it); raises QuotaExceeded (nothing inserted) when fewer than ``minimum`` fit."""

    async def grow_reservation(self, res_id: str, tenant: str, want: int, *, quota: int | None) -> tuple[int, int]:
        """Raise a reservation towards ``want`` bytes as far as the quota allows (never lower it)
        and refresh its heartbeat: ``(granted total, bytes used by everything else)``."""

    async def locate_reservation(self, res_id: str, location: dict[str, Any]) -> None:
        """Record where the reservation's partial data is now."""

    async def release_reservation(self, res_id: str) -> bool:
        """Drop a reservation (upload aborted, failed, or its owner is gone)."""

    async def reservations(self) -> list[Reservation]:
        """Every reservation (for the janitor)."""

    async def touch_reservations(self, owner: str, now: int) -> int:
        """Refresh the heartbeat of every reservation ``owner`` holds."""

    # -- uploads (the Uploads API) ----------------------------------------------------------

    async def add_upload(self, rec: UploadRecord) -> None: ...

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        """Never cached: an upload's status changes."""

    async def move_upload(self, upload_id: str, from_status: tuple[str, ...], to_status: str, *,
                          file_id: str | None = None) -> UploadRecord | None:
        """Atomically set ``status`` (and ``file_id`` when given) if the upload is in one of
        ``from_status``; return the record as it now is, or None if it was not (of concurrent
        moves from one status, exactly one wins)."""

    async def add_part(self, part: PartRecord, *, max_total: int, max_parts: int) -> str:
        """Insert ``part`` in one step with the checks that the upload is ``pending``, that its
        parts together stay within ``max_total`` bytes and number at most ``max_parts``:
        ``"ok"``, ``"not_pending"`` (the upload is gone or no longer pending), ``"too_large"``
        or ``"too_many"`` (nothing inserted)."""

    async def upload_parts(self, upload_id: str) -> list[PartRecord]: ...

    async def delete_parts(self, upload_id: str) -> list[PartRecord]:
        """Remove and return the upload's part rows (``DELETE … RETURNING``)."""

    async def expired_uploads(self, now: int, limit: int = 500) -> list[UploadRecord]:
        """Uploads still ``pending`` or ``completing`` whose ``expires_at`` has passed."""

    async def purge_uploads(self, before: int) -> int:
        """Drop the rows of settled uploads (completed, cancelled, expired) that expired
        before ``before``; return how many."""

    async def add_response(self, rec: ResponseRecord) -> None:
        """Return only once the record is durable (committed): the gateway sends the end of a
        response to its client after this, so a crash right after cannot lose the record.
        Concurrent calls may share one commit (group commit)."""

    async def get_response(self, response_id: str) -> ResponseRecord | None: ...

    async def delete_response(self, response_id: str) -> bool: ...
