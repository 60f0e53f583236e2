"""The sink contract: where a transformed provider writes an upload's bytes.

A sink receives the file's bytes chunk by chunk (``write``), in order, and then exactly one
of ``complete`` or ``abort``. ``write`` may apply back-pressure by awaiting; the gateway
reads the next client chunk only after ``write`` returns, so a sink bounds memory by what it
holds itself (one S3 part, one GCS chunk), never by the file size.

``abort`` must be idempotent, must never raise, and must leave nothing behind in the
backend (``AbortMultipartUpload``, cancelled GCS session, removed temp file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class SinkResult:
    """What a completed sink stored: byte count and a provider-specific locator.

    ``location`` is JSON-serialisable (e.g. ``{"bucket": "b", "key": "k"}``) and goes into the
    store; it is never shown to clients.
    """

    bytes: int
    location: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    async def write(self, chunk: bytes | memoryview) -> None: ...

    async def complete(self) -> SinkResult: ...

    async def abort(self) -> None: ...
