"""Bedrock batch inference for ``/v1/batches`` (the :class:`~proxy.batch_runner.BatchRunner` of
the ``bedrock`` type; docs/provider-facts.md §7.1, §7.3).

* **submit** — ``CreateModelInvocationJob`` through aiobotocore's ``bedrock`` client (region: the
  input file's; endpoint: ``batch_endpoint_url`` or AWS's regional one) with ``roleArn`` =
  the provider's ``batch_role_arn``, ``modelId`` and ``modelInvocationType`` as recorded when
  the file was translated, input = the stored translated object, output =
  ``s3://{bucket}/{prefix}batches/{batch id}/`` in the input's bucket, a 24-hour timeout, and
  ``clientRequestToken`` from the batch id (a retried create makes no second job). When some
  ``custom_id`` s could not be carried as ``recordId`` s, the id map goes beside the output as
  ``…/batches/{batch id}/sluicegate-ids.json`` (the store's batch row stays small).
* **poll** — ``GetModelInvocationJob``; status in OpenAI's words (``Submitted``/``Validating`` →
  ``validating``, ``Scheduled``/``InProgress`` → ``in_progress``, ``Completed``/
  ``PartiallyCompleted`` → ``completed``, ``Failed`` → ``failed``, ``Stopping`` → ``cancelling``,
  ``Stopped`` → ``cancelled``, ``Expired`` → ``expired``); ``request_counts`` from the job's
  record counts, and once it has ended from ``manifest.json.out`` (kept in the job state).
* **cancel** — ``StopModelInvocationJob`` (a job that has already ended is left as it is).
* **results** — Bedrock writes ``{output}/{job id}/{input name}.out``: streamed from S3 through
  :func:`~proxy.transforms.batch_bedrock_output.bedrock_result_translator`, successes to the
  output kind, failed records to the error kind; memory: one S3 read and one line. Records a
  stopped or expired job never ran (the manifest's total minus what it ran) are error rows too
  (``batch_cancelled`` / ``batch_expired``), found by one pass over the job's input after the
  output (holding one id per output row).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Awaitable, Literal

import aiohttp
import orjson
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, ReadTimeoutError

from ..batch_runner import BatchProgress, RequestCounts, Status
from ..errors import GatewayError
from ..transforms.batch_bedrock_output import bedrock_result_translator, input_carrier
from ..transforms.batch_output import ResultTranslator, UnrunRows
from . import s3_storage
from .batch_jobs import (TERMINAL, check_input, context, counted, note_end, read_capped, translated, unix, unrun_failure,
                         without_uris)
from .s3_storage import S3NotFound, S3StorageError

if TYPE_CHECKING:
    from ..store.base import FileRecord
    from .bedrock import BedrockProvider

IDS_NAME = "sluicegate-ids.json"
_MAX_IDS = 8 << 20  # the id map is at most 4 MiB (proxy/providers/bedrock.py), with JSON overhead
_TIMEOUT_HOURS = 24  # OpenAI's only completion window; Bedrock's minimum (docs/provider-facts.md §7.1)

_STATUS: dict[str, Status] = {
    "Submitted": "validating", "Validating": "validating", "Scheduled": "in_progress", "InProgress": "in_progress",
    "Completed": "completed", "PartiallyCompleted": "completed", "Failed": "failed", "Stopping": "cancelling",
    "Stopped": "cancelled", "Expired": "expired",
}
_AUTH = frozenset({"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
                   "ExpiredTokenException", "IncompleteSignature", "MissingAuthenticationTokenException"})


def job_name(batch_id: str) -> str:
    """``jobName``: ``[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\\+\\-\\.]){0,63}`` (no ``_``), ≤ 63 characters."""
    return ("sluicegate-" + "".join(c if c.isascii() and c.isalnum() else "-" for c in batch_id))[:63].rstrip("-")


def request_token(batch_id: str) -> str:
    """``clientRequestToken``: ``[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}``."""
    return "".join(c for c in batch_id if c.isascii() and c.isalnum())[:256] or "sluicegate"


class BedrockBatchRunner:
    """Keeps one ``bedrock`` client per region, opened on first use; no job state of its own."""

    def __init__(self, provider: "BedrockProvider") -> None:
        self.provider = provider
        self._clients: dict[str, Any] = {}
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

    async def _client(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            async with self._lock:
                client = self._clients.get(region)
                if client is None:
                    cfg = self.provider.config
                    # Create is made idempotent by clientRequestToken, so every call may be retried.
                    kwargs = s3_storage.make_client_kwargs(
                        region, cfg.batch_endpoint_url, cfg.aws_access_key_id, cfg.aws_secret_access_key,
                        max_pool_connections=8, max_retries=cfg.max_retries, timeouts=cfg.timeouts)
                    session = self.provider._session
                    assert session is not None, "provider not started"
                    client = await self._stack.enter_async_context(session.create_client("bedrock", **kwargs))
                    self._clients[region] = client
        return client

    async def _call(self, what: str, call: Awaitable[Any]) -> Any:
        """One control-plane call; its failure as the client should see it."""
        name = self.provider.name
        try:
            return await call
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code") or ""
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            message = without_uris(str(exc.response.get("Error", {}).get("Message") or code))[:512]
            self.provider.log.warning("%s: Bedrock %s failed: HTTP %s %s", name, what, status, code)
            if code in _AUTH or status in (401, 403):
                raise GatewayError(502, f"Provider '{name}': Bedrock refused the gateway's credentials or its "
                                   f"batch role ({what}).", code="upstream_auth_failed") from None
            if code == "ThrottlingException" or status == 429:
                raise GatewayError(429, f"Provider '{name}': Bedrock is rate limiting batch jobs ({what}); retry "
                                   "later.", code="rate_limit_exceeded", retryable=True,
                                   headers={"Retry-After": "5"}) from None
            if code == "ServiceQuotaExceededException":
                raise GatewayError(429, f"Provider '{name}': Bedrock's batch job quota is used up: {message}",
                                   code="upstream_quota_exceeded") from None
            if code == "ResourceNotFoundException" or status == 404:
                raise GatewayError(404, f"Provider '{name}': Bedrock has no such batch job: {message}",
                                   code="batch_not_found") from None
            if code == "ConflictException":
                raise GatewayError(409, f"Provider '{name}': {message}", code="conflict") from None
            if status >= 500 or not status:
                raise GatewayError(502, f"Provider '{name}': Bedrock failed ({what}): {message}",
                                   code="upstream_error", retryable=True) from None
            raise GatewayError(400, f"Provider '{name}': Bedrock refused the batch job ({what}): {message}",
                               code="invalid_batch") from None
        except (ReadTimeoutError, asyncio.TimeoutError):
            raise GatewayError(504, f"Provider '{name}': Bedrock did not answer in time ({what}).",
                               code="upstream_timeout", retryable=True) from None
        except (EndpointConnectionError, aiohttp.ClientError, BotoCoreError) as exc:
            self.provider.log.warning("%s: Bedrock %s failed: %s", name, what, type(exc).__name__)
            raise GatewayError(502, f"Could not reach provider '{name}' (Bedrock {what}).",
                               code="upstream_unreachable", retryable=True) from None

    # -- the contract ---------------------------------------------------------------------------

    async def submit_batch(self, *, batch_id: str, input_file: "FileRecord", endpoint: str,
                           metadata: dict[str, str]) -> dict[str, Any]:
        p = self.provider
        check_input(p.name, input_file, endpoint, needs=("bucket", "key", "model"))
        role = p.config.batch_role_arn
        if not role:
            raise GatewayError(400, f"Provider '{p.name}' (Bedrock) cannot run batches: its 'batch_role_arn' (the "
                               "service role Bedrock batch jobs run as) is not configured.",
                               code="unsupported_operation")
        loc = input_file.location
        bucket, key, model = loc["bucket"], loc["key"], loc["model"]
        region = loc.get("region") or p.region
        prefix = f"{p.prefix}batches/{batch_id}/"
        job: dict[str, Any] = {
            "batch_id": batch_id, "endpoint": endpoint, "created": int(time.time()), "region": region,
            "model": model, "bucket": bucket, "prefix": prefix, "input_key": key, "input_name": key.rpartition("/")[2],
        }
        ids = loc.get("ids")
        if ids:
            async with p.lease(region) as s3:
                try:
                    await s3_storage.put(s3, bucket, prefix + IDS_NAME, orjson.dumps(ids), "application/json")
                except S3StorageError as exc:
                    raise p.s3_error(exc, "batch id map upload") from None
            job["ids_key"] = prefix + IDS_NAME
        client = await self._client(region)
        resp = await self._call("CreateModelInvocationJob", client.create_model_invocation_job(
            jobName=job_name(batch_id), roleArn=role, clientRequestToken=request_token(batch_id), modelId=model,
            modelInvocationType=loc.get("invocation_type") or "InvokeModel",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/{key}", "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/{prefix}"}},
            timeoutDurationInHours=_TIMEOUT_HOURS))
        job["arn"] = resp["jobArn"]
        return job

    async def poll_batch(self, job: dict[str, Any]) -> BatchProgress:
        client = await self._client(job["region"])
        resp = await self._call("GetModelInvocationJob", client.get_model_invocation_job(jobIdentifier=job["arn"]))
        status = _STATUS.get(resp.get("status") or "", "in_progress")
        counts = RequestCounts(total=int(resp.get("totalRecordCount") or 0),
                               completed=int(resp.get("successRecordCount") or 0),
                               failed=int(resp.get("errorRecordCount") or 0))
        progress = BatchProgress(status=status, request_counts=counts)
        note_end(progress, resp.get("endTime"), resp.get("message"), code="bedrock_job_failed", service="Bedrock")
        if status == "cancelling" and (changed := unix(resp.get("lastModifiedTime"))) is not None:
            progress.timestamps["cancelling_at"] = changed
        if status in TERMINAL:
            updated = dict(job)
            manifest = job.get("manifest")
            if manifest is None:
                manifest = await self._manifest(job)
                if manifest is not None:
                    updated["manifest"] = manifest
            if manifest is not None:
                counts = RequestCounts(total=max(counts.total, int(manifest.get("totalRecordCount") or 0)),
                                       completed=int(manifest.get("successRecordCount") or 0),
                                       failed=int(manifest.get("errorRecordCount") or 0))
            # Records a stopped or expired job never ran: error rows of their own (open_results).
            unrun = counts.total - counts.completed - counts.failed if status in ("cancelled", "expired") else 0
            if unrun > 0:
                counts.failed += unrun
                updated["unrun"] = status
            progress.request_counts = counts
            output = await self._output_exists(job)
            progress.has_output = output and counts.completed > 0
            progress.has_errors = counts.failed > 0 and (output or unrun > 0)
            if updated != job:
                progress.job = updated
        return progress

    async def cancel_batch(self, job: dict[str, Any]) -> BatchProgress:
        client = await self._client(job["region"])
        try:
            await self._call("StopModelInvocationJob", client.stop_model_invocation_job(jobIdentifier=job["arn"]))
        except GatewayError as err:
            if err.status != 400:  # 400: the job has ended already; its status says how
                raise
        return await self.poll_batch(job)

    def open_results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        return self._results(job, kind)

    async def results_size(self, job: dict[str, Any], kind: Literal["output", "error"]) -> int:
        return await counted(self._results(job, kind))

    # -- S3 ---------------------------------------------------------------------------------------

    def _job_dir(self, job: dict[str, Any]) -> str:
        return f"{job['prefix']}{str(job['arn']).rpartition('/')[2]}/"

    async def _read_small(self, job: dict[str, Any], key: str, what: str, limit: int) -> bytes | None:
        p = self.provider
        async with p.lease(job["region"]) as s3:
            try:
                return await read_capped(s3_storage.iter_object(s3, job["bucket"], key), limit, p.name, what)
            except S3NotFound:
                return None
            except S3StorageError as exc:
                raise p.s3_error(exc, what) from None

    async def _manifest(self, job: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self._read_small(job, self._job_dir(job) + "manifest.json.out", "manifest", 1 << 20)
        try:
            manifest = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            return None
        return manifest if isinstance(manifest, dict) else None

    async def _output_exists(self, job: dict[str, Any]) -> bool:
        p = self.provider
        async with p.lease(job["region"]) as s3:
            try:
                return await s3_storage.head(s3, job["bucket"], self._out_key(job)) is not None
            except S3StorageError as exc:
                raise p.s3_error(exc, "batch output metadata request") from None

    def _out_key(self, job: dict[str, Any]) -> str:
        return f"{self._job_dir(job)}{job['input_name']}.out"

    async def _results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        ids: dict[str, str] | None = None
        if job.get("ids_key"):
            raw = await self._read_small(job, job["ids_key"], "id map", _MAX_IDS)
            ids = orjson.loads(raw) if raw else None
        ctx = context(job, ids)
        unrun = job.get("unrun") if kind == "error" else None
        translator = bedrock_result_translator(job["model"], ctx, kind, track=unrun is not None)
        async for out in self._object_rows(job, self._out_key(job), translator):
            yield out
        if unrun is not None and translator.carriers is not None and job.get("input_key"):
            rows = UnrunRows(input_carrier, translator.carriers, ctx, unrun_failure(unrun))
            async for out in self._object_rows(job, job["input_key"], rows):
                yield out

    async def _object_rows(self, job: dict[str, Any], key: str,
                           rows: ResultTranslator | UnrunRows) -> AsyncIterator[bytes]:
        """One S3 object through ``rows``; a missing object gives nothing (a job stopped before
        any record ran wrote no output; an input deleted since gives no unrun rows)."""
        p = self.provider
        async with p.lease(job["region"]) as s3:
            pieces = s3_storage.iter_object(s3, job["bucket"], key)
            try:
                async for out in translated(pieces, rows):
                    yield out
            except S3NotFound:
                return
            except S3StorageError as exc:
                raise p.s3_error(exc, "batch results download") from None
            finally:
                await pieces.aclose()
