"""Neutral events between a provider dialect and the Responses emitter (sans-IO, no I/O here).

A dialect's stream decoder turns provider frames (Anthropic SSE events, Bedrock ConverseStream
events as botocore parses them, Gemini ``streamGenerateContent`` chunks) into these, in order;
a whole (non-streamed) provider answer is the same list at once. The emitter never sees a
provider format, so the OpenAI event sequence is built in one place for every provider.

Indexes: ``item`` numbers output items in the order the provider starts them (0, 1, …): one
per text message, function call or reasoning block. A dialect maps the provider's own block
index onto it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Union

if TYPE_CHECKING:
    from .request import StoredFile


@dataclass(slots=True, frozen=True)
class TextStart:
    item: int


@dataclass(slots=True, frozen=True)
class TextDelta:
    item: int
    text: str


@dataclass(slots=True, frozen=True)
class ReasoningStart:
    item: int


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    item: int
    text: str
    # opaque provider data that must travel back on the next turn (Anthropic thinking signature)
    signature: str | None = None


@dataclass(slots=True, frozen=True)
class ToolCallStart:
    item: int
    call_id: str      # the provider's tool-use id, kept as the Responses ``call_id``
    name: str


@dataclass(slots=True, frozen=True)
class ToolArgsDelta:
    item: int
    json_fragment: str


@dataclass(slots=True, frozen=True)
class ItemDone:
    item: int


@dataclass(slots=True, frozen=True)
class Usage:
    """OpenAI's meaning: ``input_tokens`` counts every input token, the cached ones included
    (a dialect adds the provider's cache reads and writes in where it counts them apart)."""
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # input tokens written to the provider's prompt cache (Responses ``cache_write_tokens``)
    cache_write_tokens: int = 0


@dataclass(slots=True, frozen=True)
class Finish:
    """The turn ended. ``reason`` is the Responses vocabulary: ``completed``, or ``incomplete``
    with ``incomplete_reason`` ``max_output_tokens`` / ``content_filter``."""
    reason: str
    usage: Usage
    incomplete_reason: str | None = None


@dataclass(slots=True, frozen=True)
class Failure:
    """The provider failed (an error frame mid-stream, or an error answer). ``code`` is an
    OpenAI error code (``server_error``, ``rate_limit_exceeded``, ``invalid_prompt`` …)."""
    code: str
    message: str


Event = Union[TextStart, TextDelta, ReasoningStart, ReasoningDelta, ToolCallStart, ToolArgsDelta,
              ItemDone, Finish, Failure]


@dataclass(slots=True)
class ProviderCall:
    """What a dialect asks the I/O layer to send: a JSON body for a path (Anthropic, Gemini),
    or the keyword arguments of a botocore operation (Bedrock ``converse`` / ``converse_stream``)."""
    stream: bool
    body: dict[str, Any]
    path: str = ""
    operation: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)


class StreamDecoder(Protocol):
    def feed(self, frame: Any) -> Iterable[Event]:
        """One provider frame (a parsed SSE event's data, a botocore event dict, a Gemini chunk)
        → the neutral events it completes, in order."""
        ...

    def close(self) -> Iterable[Event]:
        """The provider's frames ended (or broke): the events that end the turn when the frames
        said how it ended without ending it (Converse's ``messageStop`` with no ``metadata``
        after it); nothing when the turn already ended. A Failure here is only advice: the I/O
        layer fails the turn itself, with the reason it knows (a broken stream, an early end)."""
        ...


class Dialect(Protocol):
    """One provider family's translation. Unsupported request fields raise a 400
    ``GatewayError`` naming the field (``param``) — never a silent drop."""

    def build_call(self, request: dict[str, Any], history: list[dict[str, Any]], model: str,
                   *, stream: bool) -> ProviderCall:
        """``request``: the client's Responses body; ``history``: the stored input and output
        items of the previous turns, oldest first, as Responses items."""
        ...

    def decode_whole(self, answer: Any) -> list[Event]:
        """A non-streamed provider answer → the whole event list (ending in Finish or Failure)."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...

    def for_files(self, files: Mapping[str, "StoredFile"]) -> "Dialect":
        """This dialect for one request whose file ids (already the provider's own, see
        :meth:`~proxy.providers.base.Provider.bridge_file_id`) are ``files``: where each one's
        bytes live. A dialect that sends the ids as they are returns itself."""
        ...
