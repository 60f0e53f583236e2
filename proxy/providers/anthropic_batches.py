"""Anthropic Message Batches for ``/v1/batches`` (the :class:`~proxy.batch_runner.BatchRunner` of
the ``anthropic`` type; docs/provider-facts.md §5.7).

A ``purpose=batch`` file uploaded to this provider is kept on the gateway's disk as Message
Batches request rows (proxy/providers/anthropic.py), because Message Batches take their requests
inline:

* **submit** — ``POST /v1/messages/batches`` with ``{"requests": [those rows]}``, the body
  streamed from the file (one row at a time, never the whole file in memory). The map back to
  the client's ``custom_id`` s (``<id>.ids.json``, only for ids Anthropic cannot carry) is
  copied into the job state, so deleting the input file later loses nothing.
* **poll** — ``GET /v1/messages/batches/{id}``: ``in_progress`` → ``in_progress``, ``canceling`` →
  ``cancelling``, ``ended`` → ``cancelled`` when a cancel was asked for, ``expired`` when
  requests expired, else ``completed``; ``request_counts``: ``completed`` = succeeded,
  ``failed`` = errored + canceled + expired (those rows are in the error file).
* **cancel** — ``POST …/{id}/cancel`` (a batch that has ended is left as it is).
* **results** — the batch's ``results_url`` (only on the configured ``api_base``'s origin: the
  key is never sent elsewhere), streamed through
  :func:`~proxy.transforms.batch_anthropic_output.anthropic_result_translator`.
"""
from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..batch_runner import BatchProgress, RequestCounts, Status
from ..errors import GatewayError
from ..transforms.batch_anthropic_output import anthropic_result_translator
from .batch_jobs import batch_error, check_input, context, counted, translated, unix

if TYPE_CHECKING:
    from ..store.base import FileRecord
    from .anthropic import AnthropicProvider

_READ = 256 << 10
_MAX_IDS = 64 << 20
_ENDED_AT = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}


def _origin(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0]}".lower()


class AnthropicBatchRunner:
    def __init__(self, provider: "AnthropicProvider") -> None:
        self.provider = provider

    async def _json(self, method: str, path: str, *, idempotent: bool = True) -> dict[str, Any]:
        p = self.provider
        _, raw = await p.upstream.request(method, p.url(path), idempotent=idempotent)
        return self._batch_object(raw)

    def _batch_object(self, raw: bytes) -> dict[str, Any]:
        try:
            batch = orjson.loads(raw)
        except orjson.JSONDecodeError:
            batch = None
        if not isinstance(batch, dict) or not isinstance(batch.get("id"), str):
            raise GatewayError(502, f"Provider '{self.provider.name}' answered with an unreadable message batch.",
                               code="upstream_bad_response")
        return batch

    # -- the contract ---------------------------------------------------------------------------

    async def submit_batch(self, *, batch_id: str, input_file: "FileRecord", endpoint: str,
                           metadata: dict[str, str]) -> dict[str, Any]:
        p = self.provider
        check_input(p.name, input_file, endpoint, needs=("kind", "path"))
        path = os.path.join(p.root, input_file.location["path"])
        if not os.path.exists(path):
            raise GatewayError(404, f"No such File object: {input_file.id}", param="input_file_id",
                               code="file_not_found")
        ids: dict[str, str] = {}
        if input_file.location.get("custom_ids"):
            with open(os.path.join(p.root, input_file.location["custom_ids"]), "rb") as fh:
                ids = orjson.loads(fh.read(_MAX_IDS))
        resp = await p.upstream.open("POST", p.url("/v1/messages/batches"), data=_requests_body(path),
                                     headers={"Content-Type": "application/json"}, idempotent=False)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        batch = self._batch_object(raw)
        job: dict[str, Any] = {"batch_id": batch_id, "endpoint": endpoint, "created": int(time.time()),
                               "anthropic_id": batch["id"]}
        if ids:
            job["ids"] = ids
        return job

    async def poll_batch(self, job: dict[str, Any]) -> BatchProgress:
        return self._progress(job, await self._json("GET", f"/v1/messages/batches/{job['anthropic_id']}"))

    async def cancel_batch(self, job: dict[str, Any]) -> BatchProgress:
        try:
            batch = await self._json("POST", f"/v1/messages/batches/{job['anthropic_id']}/cancel", idempotent=False)
        except GatewayError as err:
            if err.status not in (400, 409):  # the batch has ended already: its status says how
                raise
            return await self.poll_batch(job)
        return self._progress(job, batch)

    def _progress(self, job: dict[str, Any], batch: dict[str, Any]) -> BatchProgress:
        counts = batch.get("request_counts") or {}

        def count(key: str) -> int:
            value = counts.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        succeeded, errored, canceled, expired = (count("succeeded"), count("errored"), count("canceled"),
                                                 count("expired"))
        state = batch.get("processing_status")
        status: Status
        if state == "ended":
            status = ("cancelled" if batch.get("cancel_initiated_at") else "expired" if expired else "completed")
        elif state == "canceling":
            status = "cancelling"
        else:
            status = "in_progress"
        progress = BatchProgress(status=status, request_counts=RequestCounts(
            total=count("processing") + succeeded + errored + canceled + expired, completed=succeeded,
            failed=errored + canceled + expired))
        if (created := unix(batch.get("created_at"))) is not None:
            progress.timestamps["in_progress_at"] = created
        if (cancelling := unix(batch.get("cancel_initiated_at"))) is not None:
            progress.timestamps["cancelling_at"] = cancelling
        if status in _ENDED_AT and (ended := unix(batch.get("ended_at"))) is not None:
            progress.timestamps[_ENDED_AT[status]] = ended
        if state == "ended":
            url = batch.get("results_url")
            if isinstance(url, str) and url and url != job.get("results_url"):
                progress.job = {**job, "results_url": url}
            progress.has_output = succeeded > 0
            progress.has_errors = errored + canceled + expired > 0
            if not isinstance(url, str) or not url:
                progress.errors.append(batch_error("anthropic_no_results", "Anthropic gave no results for the batch."))
        return progress

    def open_results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        return self._results(job, kind)

    async def results_size(self, job: dict[str, Any], kind: Literal["output", "error"]) -> int:
        return await counted(self._results(job, kind))

    async def _results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        p = self.provider
        url = job.get("results_url")
        if not url:
            return
        if _origin(url) != _origin(p.url("/")):
            raise GatewayError(502, f"Provider '{p.name}' (Anthropic) named a results location outside its API; "
                               "the gateway does not send its key there.", code="upstream_bad_response")
        download = await p.upstream.download(url, headers={"Accept": "application/binary"})
        assert download.chunks is not None
        translator = anthropic_result_translator(context(job, job.get("ids")), kind,
                                                 default_model=p.default_model or "")
        try:
            async for out in translated(download.chunks, translator):
                yield out
        finally:
            if download.release is not None:
                await download.release()


async def _requests_body(path: str) -> AsyncIterator[bytes]:
    """``{"requests": [row, row, …]}`` from a JSONL file of rows, streamed: one read at a time."""
    yield b'{"requests":['
    first = True
    pending = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ):
            data = pending + chunk
            body, _, pending = data.rpartition(b"\n")
            rows = [row for row in body.split(b"\n") if row.strip()] if body else []
            if rows:
                yield (b"" if first else b",") + b",".join(rows)
                first = False
    if pending.strip():
        yield (b"" if first else b",") + pending
    yield b"]}"
