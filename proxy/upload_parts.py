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

A provider hands out its store with ``Provider.part_store(ex)`` (None: the provider forwards
the Uploads API or has no store of its own). The implementations, one module each:

* ``local`` (proxy/providers/parts_local.py): files ``<path>/.uploads/<upload_id>/<part_id>``,
  on the filesystem of the provider's files (so ``copy_file_range`` can share blocks, and a
  ``shared_filesystem`` serves every replica); ``compose`` concatenates in a thread;
* ``s3``/``bedrock`` (parts_s3.py): objects ``{prefix}uploads/<upload_id>/<part_id>`` in the
  upload's bucket; ``compose`` is a multipart upload of ``UploadPartCopy`` ranges, small parts
  coalesced through a bounded buffer (S3's 5 MiB part minimum);
* ``gcs``/``vertex`` (parts_gcs.py): objects named the same way; ``compose`` is GCS
  ``compose``, 32 sources per call, through intermediate objects it removes.

Every failure is raised as the provider's OpenAI-shaped :class:`~proxy.errors.GatewayError`.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Protocol, TypeVar

from .errors import GatewayError
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
        """A sink for one part's bytes; ``complete`` returns its size and location (the
        :attr:`PartRef.location`), ``abort`` leaves nothing. ``upload_id``/``part_id`` are
        gateway-minted ids (letters, digits, ``_``, ``-``; anything else is a ValueError). The
        sink may also have ``partial_location()`` (the crash janitor's locator, as the
        provider's own sinks)."""
        ...

    def destination(self, file_id: str, *, tenant: str, filename: str, purpose: str) -> dict[str, Any]:
        """The ``dest`` of :meth:`compose` for the file ``file_id``: where and how the provider's
        own upload (``open_sink``) stores such a file (local: ``{"path"}``; S3: ``{"bucket",
        "key", "content_type", "metadata"}``; GCS: ``{"bucket", "name", "content_type",
        "metadata"}``)."""
        ...

    def read(self, parts: list[PartRef], chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
        """The parts' bytes in this order, chunk by chunk (at most ``chunk_size``). A part missing
        or of another size than its ``bytes`` raises a GatewayError (``upload_part_missing``);
        close the iterator (``contextlib.aclosing``) when stopping early, to release its
        connection."""
        ...

    async def compose(self, parts: list[PartRef], dest: dict[str, Any]) -> SinkResult:
        """Assemble ``parts`` in order into the object/file at ``dest`` (a provider locator,
        see :meth:`destination`) without the bytes passing through the gateway's memory (at
        most a bounded buffer); the parts stay until :meth:`delete`. The result's ``location``
        is what the provider's own sink records for a file (a FileRecord's ``location``). On
        any failure (or cancellation) nothing is left at ``dest``: no file, no object, no
        unfinished multipart upload."""
        ...

    async def delete(self, parts: list[PartRef]) -> None:
        """Remove these parts; idempotent, never raises for a part already gone."""
        ...


class ListedPartStore(PartStore, Protocol):
    """A part store that can list what is stored in its configured place (a bucket's
    ``{prefix}uploads/``), for the sweep of parts no upload owns (a process that died between
    storing a part and recording it)."""

    async def stored_parts(self) -> dict[str, list[PartRef]]:
        """The objects under ``uploads/``, by the upload id their name holds (sizes unknown: 0)."""
        ...


def parts_by_upload(names: list[str], root: str, location: Callable[[str], dict[str, Any]]) -> dict[str, list[PartRef]]:
    """``{prefix}uploads/<upload_id>/<name>`` names (``root`` is ``{prefix}uploads/``) grouped by
    upload id, each a PartRef located by ``location(name)``; other names are skipped."""
    found: dict[str, list[PartRef]] = {}
    for name in names:
        upload_id, _, rest = name[len(root):].partition("/")
        if name.startswith(root) and _ID.fullmatch(upload_id) and rest:
            found.setdefault(upload_id, []).append(PartRef(part_id=rest, bytes=0, location=location(name)))
    return found


_T = TypeVar("_T")
_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


def check_part_size(part: PartRef, seen: int) -> None:
    """A part read back whole must hold the bytes recorded for it (the contract's
    ``upload_part_missing``)."""
    if seen != part.bytes:
        raise GatewayError(500, f"Upload part {part.part_id[:64]} holds {seen} bytes, not {part.bytes}.",
                           code="upload_part_missing")


def checked_id(value: str, what: str) -> str:
    """``value`` if it is a gateway-minted id (safe as one path or key segment), else ValueError."""
    if not _ID.fullmatch(value):
        raise ValueError(f"{what} must be letters, digits, '_' and '-' (at most 256): {value[:64]!r}")
    return value


def part_name(upload_id: str, part_id: str) -> str:
    """``uploads/<upload_id>/<part_id>``: where a part waits, under a provider's root or prefix."""
    return f"uploads/{checked_id(upload_id, 'upload_id')}/{checked_id(part_id, 'part_id')}"


async def run_bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """The jobs' results in order, at most ``limit`` running at once (a compose's server-side
    copies); the first failure cancels the others and is raised."""
    results: dict[int, _T] = {}
    queue = iter(enumerate(jobs))

    async def worker() -> None:
        for i, job in queue:
            results[i] = await job()

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(jobs)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return [results[i] for i in range(len(jobs))]
