"""The contract between the Uploads API (``/v1/uploads``) and where its parts wait.

An Upload's parts are stored one by one as they arrive (each streamed, never held in memory)
and assembled at ``complete`` in the order the client names. Where parts wait depends on the
provider, so that parts sent to different replicas assemble (state is in the store, bytes in
shared storage): ``local`` → files under the data directory; ``s3``/``bedrock`` → objects
under the bucket's prefix; ``gcs``/``vertex`` → GCS objects. Pass-through providers
(``openai``, ``azure``) forward the Uploads API and use none of this.

``compose`` is the fast path when the file goes into the same backend unchanged (local
``copy_file_range``, S3 ``UploadPartCopy``, GCS ``compose``); ``read`` streams the parts in
order for everything else (a ``purpose=batch`` file validated by ``batch_jsonl`` and translated
for bedrock/vertex, a streamed upload to Anthropic or Groq).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

from .providers.sink import Sink, SinkResult


@dataclass(slots=True, frozen=True)
class PartRef:
    """A stored part: its id (``part_…``), size, and the backend's locator (JSON, never shown
    to clients)."""
    part_id: str
    bytes: int
    location: dict[str, Any] = field(default_factory=dict)


class PartStore(Protocol):
    def open_part(self, upload_id: str, part_id: str) -> Sink:
        """A sink for one part's bytes; ``complete`` returns its size and location."""
        ...

    def read(self, parts: list[PartRef], chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The parts' bytes in this order, chunk by chunk."""
        ...

    async def compose(self, parts: list[PartRef], dest: dict[str, Any]) -> SinkResult:
        """Assemble ``parts`` in order into the object/file at ``dest`` (a provider locator)
        without the bytes passing through the gateway's memory; the parts stay until
        :meth:`delete`."""
        ...

    async def delete(self, parts: list[PartRef]) -> None:
        """Remove these parts; idempotent, never raises for a part already gone."""
        ...
