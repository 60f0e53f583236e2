"""The contract between the Batches API (``/v1/batches``) and a provider that runs batches
for the gateway (bedrock, vertex, anthropic), where the gateway translates input and output.

Pass-through providers (openai, azure, groq) forward ``/batches`` and do not implement this.

The Batches API owns the batch row (id ``batch_…``, tenant, input file, endpoint, metadata,
the provider's opaque ``job`` state as JSON, the output/error gateway file ids) in the store,
so any replica serves any batch; a runner keeps no state of its own between calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal, Protocol

if TYPE_CHECKING:
    from .store.base import FileRecord

# OpenAI's batch statuses (openai-python src/openai/types/batch.py)
Status = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                 "cancelling", "cancelled"]


@dataclass(slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(slots=True)
class BatchProgress:
    """A runner's view of its job, in OpenAI's vocabulary."""
    status: Status
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    # provider timestamps (unix seconds) when known: in_progress_at, finalizing_at, completed_at,
    # failed_at, cancelling_at, cancelled_at, expired_at
    timestamps: dict[str, int] = field(default_factory=dict)
    # batch-level errors (OpenAI ``errors.data`` entries: code, message, line, param)
    errors: list[dict[str, Any]] = field(default_factory=list)
    # updated opaque job state to store back (None: unchanged)
    job: dict[str, Any] | None = None
    # terminal and the provider has results to read
    has_output: bool = False
    has_errors: bool = False


class BatchRunner(Protocol):
    async def submit_batch(self, *, batch_id: str, input_file: "FileRecord", endpoint: str,
                           metadata: dict[str, str]) -> dict[str, Any]:
        """Start the provider job for a stored (already translated) ``purpose=batch`` file.
        Returns the opaque job state to store (provider job id/ARN/name, output location…).
        Raises ``GatewayError`` (OpenAI-shaped) when the provider refuses."""
        ...

    async def poll_batch(self, job: dict[str, Any]) -> BatchProgress:
        """The job's state now. When ``progress.job`` is not None the caller stores it back: the
        runners keep there what they learn once (Bedrock's manifest counts, Vertex's output
        directory, Anthropic's ``results_url``), and :meth:`open_results` needs it."""
        ...

    async def cancel_batch(self, job: dict[str, Any]) -> BatchProgress:
        """Ask the provider to stop the job and return its state (usually ``cancelling``); a job
        that has ended already is left as it is and its state returned, not an error."""
        ...

    def open_results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        """The job's results as OpenAI batch-output rows (``{"id","custom_id","response":
        {"status_code","request_id","body"},"error"}``, one JSON line each), translated row by
        row while streamed from the provider's storage — memory flat in the output size.
        ``custom_id`` is the client's own; ``"error"`` holds the failed requests. Every pass
        over the same job gives the same bytes; nothing to read yields nothing. ``job`` is the
        state as last stored (see :meth:`poll_batch`)."""
        ...

    async def results_size(self, job: dict[str, Any], kind: Literal["output", "error"]) -> int:
        """Bytes of :meth:`open_results` (one streamed counting pass; the Batches API stores it
        as the output file's ``bytes`` once, when the job is terminal)."""
        ...
