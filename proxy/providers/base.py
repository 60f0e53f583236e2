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
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Awaitable, Callable

from ..errors import GatewayError

if TYPE_CHECKING:
    from filters.base import Filter

    from ..batch_runner import BatchRunner
    from ..bridge.events import Dialect, ProviderCall
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
    forwards_uploads = False       # the upstream has the Uploads API (/v1/uploads) itself: forwarded
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

    def part_store(self, ex: "Exchange | None") -> "PartStore | None":
        """Where the parts of an Upload (``/v1/uploads``) to this provider wait, in this
        provider's own backend, so that ``complete`` can ``compose`` them into a file there;
        None: the gateway keeps them on its own disk and streams them into :meth:`open_sink`
        (proxy/upload_parts.py). ``ex`` is None when the sweeper asks (expiry, outside a request)."""
        return None

    async def upload_passthrough(
        self, ex: "Exchange", body: AsyncIterator[bytes], content_type: str
    ) -> UploadResult:
        raise self.unsupported("files.create")

    # -- the Uploads API, pass-through types only -------------------------------------------
    async def uploads_call(self, ex: "Exchange", suffix: str, body: bytes | None) -> bytes:
        """``POST /uploads{suffix}`` upstream (create, ``/{id}/complete``, ``/{id}/cancel``)
        with a JSON body: the 2xx answer in OpenAI's Upload shape."""
        raise self.unsupported(ex.operation)

    async def upload_part_passthrough(self, ex: "Exchange", upload_id: str, body: AsyncIterator[bytes],
                                      content_type: str) -> bytes:
        """``POST /uploads/{id}/parts`` upstream with the client's multipart body, streamed."""
        raise self.unsupported(ex.operation)

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

    # -- batches -------------------------------------------------------------------------
    # Two families (proxy/batches_api.py): a provider whose :meth:`batch_runner` is not None
    # has its batches run by the gateway (bedrock, vertex, anthropic); otherwise one with
    # ``batch_endpoints`` forwards ``/batches`` (:meth:`call_batches`: openai, azure, groq).
    # Neither: the Batches API answers 400 for it.

    #: the batch ``endpoint`` values (OpenAI's names) this provider runs; empty: none
    batch_endpoints: frozenset[str] = frozenset()
    #: pass-through: the provider's batch list takes ``after``/``limit`` (else it answers
    #: every batch at once and the gateway paginates)
    batch_list_cursors = True

    def batch_runner(self) -> "BatchRunner | None":
        """The runner of this provider's batches when the gateway runs them; None otherwise."""
        return None

    def accepts_completion_window(self, value: str) -> bool:
        """OpenAI's only window is ``24h`` (docs/provider-facts.md §1.9)."""
        return value == "24h"

    async def call_batches(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str,
    ) -> tuple[int, bytes]:
        """Pass-through: a buffered call on the provider's ``/batches{suffix}``, ``(status,
        body)`` of a 2xx answer."""
        raise self.unsupported(ex.operation)

    # -- responses run by the gateway (proxy/bridge) -------------------------------------------
    # A provider without a Responses API of its own returns its dialect here (and sets
    # ``serves_responses``); the bridge then runs every Responses operation, calling the
    # provider only through the two methods below.
    def responses_dialect(self) -> "Dialect | None":
        return None

    async def bridge_call(self, ex: "Exchange", call: "ProviderCall") -> Any:
        """Send a non-streamed call; its answer, parsed (JSON body, botocore dict). Errors:
        GatewayError in OpenAI's shape."""
        raise self.unsupported(ex.operation)

    async def bridge_stream(self, ex: "Exchange", call: "ProviderCall") -> AsyncGenerator[Any, None]:
        """Open a streamed call (errors before it starts raise GatewayError) and return its
        frames as they arrive (one parsed SSE event's data, one botocore event, ...). A failure
        mid-stream raises GatewayError from the iteration; ``aclose()`` closes the upstream call."""
        raise self.unsupported(ex.operation)

    def bridge_file_id(self, rec: "FileRecord") -> str | None:
        """This provider's own id for a gateway file given as model input; None: not usable."""
        return None

    # -- helpers -------------------------------------------------------------------------
    def unsupported(self, operation: str) -> GatewayError:
        return GatewayError(
            400, f"Provider '{self.name}' (type {self.type}) does not support {operation}.",
            code="unsupported_operation",
        )
