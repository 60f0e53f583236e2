"""The provider interface: one method per operation, the same for every provider type.

Two families implement it:

* pass-through types (``openai``, ``azure``) forward the client's bytes and keep the
  upstream's ids (``passthrough = True``): an upload is a tee, the raw multipart body goes
  upstream unchanged while the gateway's parser only observes it;
* gateway-managed types (``local``, and the storage-backed ones) mint their own ids and take
  the file's bytes through a :class:`~proxy.providers.sink.Sink`.

JSON operations return the OpenAI-shaped body as ``bytes`` (pass-through types return the
upstream's bytes untouched when no translation is needed: no re-serialisation on the hot
path). Failures raise :class:`proxy.errors.GatewayError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from ..errors import GatewayError

if TYPE_CHECKING:
    from filters.base import Filter

    from ..config import ProviderConfig
    from ..exchange import Exchange
    from ..splice import BodyHandover
    from ..store.base import FileRecord
    from ..upload_parts import PartStore
    from .h1 import H1Stream
    from .sink import Sink


@dataclass(slots=True)
class Download:
    """A file's content, streamed to the client. Exactly one of ``path`` or ``chunks``."""

    content_type: str
    length: int | None
    chunks: AsyncIterator[bytes] | None = None
    path: str | None = None
    release: Callable[[], Awaitable[None]] | None = None  # close the upstream stream
    # The rest of the body as a socket to splice from (proxy/splice.py), or None; tried
    # before ``chunks`` is read, it hands back None when the body cannot be spliced.
    hand_over: Callable[[], BodyHandover | None] | None = None


@dataclass(slots=True)
class UploadResult:
    """What a pass-through upload created upstream, already in OpenAI's File shape."""

    file: dict[str, Any]


class Provider:
    type = "base"
    passthrough = False            # uploads are a raw-byte tee to the upstream
    serves_unseen_ids = False      # can answer for ids the gateway never recorded
    serves_responses = False       # implements the Responses API (call_responses/open_responses)

    def __init__(self, config: "ProviderConfig") -> None:
        self.config = config
        self.name = config.name

    async def start(self) -> None:
        """Open pooled connections."""

    async def close(self) -> None:
        """Close pooled connections."""

    # -- files ---------------------------------------------------------------------------
    def upload_rules(self, ex: "Exchange") -> "Filter | None":
        """This provider's own rules on one upload (e.g. the purposes it accepts), as a filter
        the upload appends to its chain (hooks ``on_file_start``, ``on_file_data``,
        ``on_upload_complete``…; ``ex.purpose`` is always known at ``on_file_start``, see
        proxy/field_order.py); None: no rules of its own. Sizes are not a provider rule: a
        provider's cap is its ``max_file_size``, which the ``size_limit`` filter applies."""
        return None

    async def open_sink(self, ex: "Exchange", file_id: str) -> "Sink":
        raise self.unsupported("files.create")

    async def upload_passthrough(
        self, ex: "Exchange", body: AsyncIterator[bytes], content_type: str
    ) -> UploadResult:
        raise self.unsupported("files.create")

    async def list_files(self, ex: "Exchange", query: dict[str, str]) -> bytes:
        """Upstream listing (pass-through types only, for ids the gateway never saw)."""
        raise self.unsupported("files.list")

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        raise self.unsupported("files.retrieve")

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        """``ex`` is None when the gateway deletes on its own (:meth:`expire_file`)."""
        raise self.unsupported("files.delete")

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        raise self.unsupported("files.content")

    async def expire_file(self, rec: "FileRecord") -> None:
        """Remove an expired file's bytes. Gateway-managed providers delete what they store;
        pass-through providers override this (the provider expires its files itself)."""
        await self.delete_file(None, rec, rec.id)

    def part_store(self, ex: "Exchange") -> "PartStore | None":
        """Where the parts of an Upload (``/v1/uploads``) wait for this provider, and how they
        are assembled (proxy/upload_parts.py); None: no store of its own (pass-through types
        forward the Uploads API). ``ex`` chooses the bucket where headers may (bedrock, vertex)."""
        return None

    # -- crash leftovers ------------------------------------------------------------------
    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        """Remove the partial data of an upload no live process owns: ``location`` is its
        reservation's (``file_id``, plus what its sink's ``partial_location()`` said). Data
        already gone is fine; failures may raise (the janitor logs and retries later)."""

    async def sweep_partials(self, owned: list[dict[str, Any]], max_age: float) -> int:
        """Remove partial uploads in this provider's backend that no live reservation location
        in ``owned`` (of any provider: providers may share a bucket) names and that are older
        than ``max_age`` seconds; return how many."""
        return 0

    # -- responses -----------------------------------------------------------------------
    def prepare_response_body(self, body: dict[str, Any]) -> bool:
        """Adjust a responses.create body for this provider in place; True if it changed."""
        return False

    async def call_responses(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str,
    ) -> tuple[int, bytes]:
        """A buffered call on ``/responses{suffix}``: ``(status, body)`` of a 2xx answer."""
        raise self.unsupported(ex.operation)

    async def open_responses(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str, stream: bool,
    ) -> "H1Stream":
        """Call ``/responses{suffix}`` upstream and return the live 2xx body stream (SSE)."""
        raise self.unsupported(ex.operation)

    # -- helpers -------------------------------------------------------------------------
    def unsupported(self, operation: str) -> GatewayError:
        return GatewayError(
            400, f"Provider '{self.name}' (type {self.type}) does not support {operation}.",
            code="unsupported_operation",
        )
