"""What the batch runners (bedrock, vertex, anthropic; proxy/batch_runner.py) share: the job's
result context, the translate-while-streaming loop, the counting pass and small conversions.
"""
from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..transforms.batch_output import CANCELLED, CHAT, EXPIRED, RESPONSES, ResultContext, ResultTranslator, UnrunRows

if TYPE_CHECKING:
    from ..batch_runner import BatchProgress
    from ..store.base import FileRecord

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
ENDPOINTS = (CHAT, RESPONSES)  # what the translated rows can be run as (proxy/transforms/chat_mapping.py)

_URIS = re.compile(r"\b(?:s3|gs)://\S+")


def check_input(provider: str, input_file: "FileRecord", endpoint: str, *, needs: tuple[str, ...]) -> None:
    """The stored file is a translated batch file of this provider, for an endpoint it runs."""
    if input_file.purpose != "batch" or any(not input_file.location.get(key) for key in needs):
        raise GatewayError(400, f"File {input_file.id} is not a batch file that provider '{provider}' translated; "
                           "upload it with purpose=batch to this provider.", param="input_file_id",
                           code="invalid_input_file")
    if endpoint not in ENDPOINTS:
        raise GatewayError(400, f"Provider '{provider}' runs batches for {' and '.join(ENDPOINTS)} only, "
                           f"not {endpoint[:64]}.", param="endpoint", code="unsupported_endpoint")
    # That the rows name this endpoint is checked for every provider by batches.create
    # (the file's location[BATCH_URL_KEY], recorded by batch_jsonl).


def context(job: Mapping[str, Any], ids: Mapping[str, str] | None) -> ResultContext:
    return ResultContext(batch_id=str(job["batch_id"]), endpoint=str(job.get("endpoint") or CHAT),
                         created=int(job.get("created") or 0), ids=ids)


def unrun_failure(status: str) -> tuple[str, str]:
    """What a request a job never ran failed with: the job expired, or it was cancelled."""
    return EXPIRED if status == "expired" else CANCELLED


async def translated(pieces: AsyncIterator[bytes], translator: ResultTranslator | UnrunRows) -> AsyncIterator[bytes]:
    """The provider's bytes → OpenAI rows, piece by piece (one partial line held)."""
    async for piece in pieces:
        out = translator.feed(piece)
        if out:
            yield out
    tail = translator.close()
    if tail:
        yield tail


async def counted(chunks: AsyncIterator[bytes]) -> int:
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return size


async def read_capped(pieces: AsyncGenerator[bytes, None], limit: int, provider: str, what: str) -> bytes:
    """A small object the gateway wrote itself (a job's id map, its manifest), read whole: more
    than ``limit`` bytes is a 502 (it is not what the gateway stored). ``pieces`` is closed."""
    data = bytearray()
    try:
        async for piece in pieces:
            data += piece
            if len(data) > limit:
                raise GatewayError(502, f"Provider '{provider}': the batch {what} is larger than expected.",
                                   code="upstream_bad_response")
    finally:
        await pieces.aclose()
    return bytes(data)


def unix(value: Any) -> int | None:
    """A provider timestamp (a datetime, or RFC 3339 text) as Unix seconds."""
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, str) and value:
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


def without_uris(text: str) -> str:
    """A provider's message without the bucket paths it may name (never shown to clients)."""
    return _URIS.sub("<storage location>", text)


def batch_error(code: str, message: str) -> dict[str, Any]:
    """One OpenAI ``errors.data`` entry."""
    return {"code": code, "message": message, "param": None, "line": None}


# A job's end, as the Batch timestamp its status sets.
ENDED_AT = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at", "expired": "expired_at"}


def note_end(progress: "BatchProgress", end_time: Any, failure: Any, *, code: str, service: str) -> None:
    """What a job's end adds to ``progress`` (its status already mapped): the ``<status>_at``
    timestamp of ``end_time``, and for a failed job the error ``code`` with the provider's
    ``failure`` message, without bucket paths and at most 512 characters."""
    ended = unix(end_time)
    if progress.status in ENDED_AT and ended is not None:
        progress.timestamps[ENDED_AT[progress.status]] = ended
    if progress.status == "failed":
        message = without_uris(str(failure or "the job failed"))[:512]
        progress.errors.append(batch_error(code, f"{service}: {message}"))
