"""What the gateway remembers: which tenant owns which file or response, and where it lives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


# In a batch file's ``location``: the endpoint its lines name (``/v1/chat/completions`` …).
BATCH_URL_KEY = "batch_url"


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


# OpenAI's batch statuses after which nothing changes (openai-python types/batch.py).
TERMINAL_BATCH_STATUSES = ("completed", "failed", "expired", "cancelled")


@dataclass(slots=True)
class BatchRecord:
    """A batch created through the gateway (``/v1/batches``): who owns it, where it runs, and
    its last known state. ``job`` is opaque to the store: the runner's job state for a batch
    the gateway runs (proxy/batch_runner.py), or ``{"object": <last batch object seen>}`` for
    a pass-through provider's batch. ``polled_at`` (unix milliseconds) is when a replica last
    asked the provider, so that replicas ask at most once per second per batch."""

    id: str                      # the id clients see (gateway-minted ``batch_…``, or the upstream's)
    tenant: str
    provider: str                # configured provider name
    input_file_id: str
    endpoint: str
    completion_window: str
    created_at: int
    status: str = "validating"
    metadata: dict[str, str] | None = None
    job: dict[str, Any] = field(default_factory=dict)
    upstream_id: str | None = None               # the provider's own batch id (pass-through)
    output_file_id: str | None = None
    error_file_id: str | None = None
    # in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
    # cancelled_at, expires_at (unix seconds), as known
    timestamps: dict[str, int] = field(default_factory=dict)
    request_counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, Any]] | None = None   # OpenAI ``errors.data`` entries
    output_expires_after: int | None = None      # seconds after an output file's creation
    polled_at: int | None = None                 # unix ms of the last provider poll


@dataclass(slots=True)
class TurnRecord:
    """One turn of a Responses conversation the gateway runs itself (proxy/bridge/state.py):
    its input items and output items (Responses items, with ids), the final Response object,
    and the SSE events it was streamed as (None if it was not streamed)."""
    id: str
    tenant: str
    previous_id: str | None
    status: str
    input_items: list[dict[str, Any]]
    output_items: list[dict[str, Any]]
    response: dict[str, Any] = field(default_factory=dict)   # empty in get_chain's answers
    events: list[dict[str, Any]] | None = None
    owner: str | None = None     # a running background turn: the process running it (host:pid:token)
    heartbeat: int = 0           # ... and when it last said so (Unix seconds)


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

    async def delete_response(self, response_id: str) -> bool:
        """Remove the response's record and its turn (if the gateway ran it), as one claim."""

    async def adopt_file(self, rec: FileRecord) -> bool:
        """Record a file the gateway did not upload (a batch's output or error file) for
        ``rec.tenant``, unless its id is recorded already (then nothing changes): True if this
        call inserted it. No quota check: the provider created the file, not the tenant."""

    # -- batches ------------------------------------------------------------------------------

    async def add_batch(self, rec: BatchRecord) -> None: ...

    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def list_batches(self, tenant: str, *, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        """The tenant's batches, newest first; ``after`` a batch id of the same tenant (an
        unknown one gives an empty page); ``(page, has_more)``."""

    async def update_batch(self, rec: BatchRecord) -> bool:
        """Store the mutable state of ``rec`` (status, job, file ids, timestamps, counts, errors),
        unless the stored batch has ended (a status in :data:`TERMINAL_BATCH_STATUSES`): an
        ended batch is final, so a slower, older poll (another replica's) never overwrites it.
        True if the row was written."""

    async def claim_batch_poll(self, batch_id: str, now_ms: int, interval_ms: int) -> bool:
        """Atomically take the right to poll the provider for ``batch_id``: True (and
        ``polled_at`` set to ``now_ms``) unless some caller, in any replica, took it less than
        ``interval_ms`` ago."""

    # -- turns of bridged responses (proxy/bridge/state.py) -------------------------------------

    async def add_turn(self, rec: ResponseRecord, turn: TurnRecord) -> None:
        """Insert (or replace) the ownership record and the turn in one transaction; returns once
        committed, so the turn's end reaches the client only after every replica can read it."""

    async def get_turn(self, response_id: str) -> TurnRecord | None: ...

    async def update_turn(self, turn: TurnRecord, *, only_if: tuple[str, ...]) -> bool:
        """Replace the turn's state (status, items, response, events, owner, heartbeat) only if
        its stored status is one of ``only_if``, atomically; whether it did (a background turn
        cancelled meanwhile is not overwritten by its runner)."""

    async def get_chain(self, response_id: str, tenant: str) -> list[TurnRecord]:
        """The turn and every turn before it (``previous_id``), oldest first, the tenant's only;
        without ``response`` and ``events``. Empty if the turn is not there."""
