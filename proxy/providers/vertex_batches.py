"""Vertex AI batch prediction for ``/v1/batches`` (the :class:`~proxy.batch_runner.BatchRunner` of
the ``vertex`` type; docs/provider-facts.md §8.1, §8.2).

The ``batchPredictionJobs`` REST API of the configured project, in the input file's region
(``https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/…``, or
``api_endpoint``, the same key as the Responses bridge's), with a ``cloud-platform`` access token from the provider's credentials
(none against an emulator, as for GCS):

* **submit** — ``POST …/batchPredictionJobs`` with ``model`` (the file's, as
  ``publishers/google/models/{id}`` unless it is a resource path already), ``inputConfig``
  ``{instancesFormat: "jsonl", gcsSource.uris: [the stored Gemini-format file]}`` and
  ``outputConfig`` ``{predictionsFormat: "jsonl", gcsDestination.outputUriPrefix:
  gs://{bucket}/{prefix}batches/{batch id}/}``. The label → ``custom_id`` map, when there is
  one, goes beside the output (``sluicegate-ids.json``).
* **poll** — ``GET`` the job: ``JOB_STATE_QUEUED``/``PENDING`` → ``validating``, ``RUNNING``/
  ``UPDATING``/``PAUSED`` → ``in_progress``, ``SUCCEEDED``/``PARTIALLY_SUCCEEDED`` →
  ``completed``, ``FAILED`` → ``failed``, ``CANCELLING`` → ``cancelling``, ``CANCELLED`` →
  ``cancelled``, ``EXPIRED`` → ``expired``; ``request_counts`` from ``completionStats``;
  ``outputInfo.gcsOutputDirectory`` is kept in the job state once known.
* **cancel** — ``POST {job}:cancel``.
* **results** — every ``predictions*.jsonl`` under the output directory, streamed from GCS
  through :func:`~proxy.transforms.batch_vertex_output.vertex_result_translator`; requests a
  cancelled or expired job never ran (``completionStats.incompleteCount``) are error rows
  (``batch_cancelled`` / ``batch_expired``) from one pass over the input.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import orjson
from gcloud.aio.auth import Token

from ..batch_runner import BatchProgress, RequestCounts, Status
from ..bridge.gemini import vertex_host
from ..errors import GatewayError
from ..transforms.batch_output import as_int
from ..transforms.batch_output import ResultTranslator, UnrunRows
from ..transforms.batch_vertex_output import input_carrier, vertex_result_translator
from . import gcs_storage
from .batch_jobs import TERMINAL, check_input, context, counted, note_end, read_capped, unix, unrun_failure, without_uris
from .gcs_storage import GCSNotFound, GCSStorageError
from .upstream import Upstream

if TYPE_CHECKING:
    from ..store.base import FileRecord
    from .vertex import VertexProvider

IDS_NAME = "sluicegate-ids.json"
_MAX_IDS = 8 << 20
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

_STATUS: dict[str, Status] = {
    "JOB_STATE_QUEUED": "validating", "JOB_STATE_PENDING": "validating", "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_UPDATING": "in_progress", "JOB_STATE_PAUSED": "in_progress", "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed", "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLING": "cancelling", "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "expired",
}


def model_path(model: str) -> str:
    """A model name as batchPredictionJobs takes it."""
    if model.startswith(("publishers/", "projects/")):
        return model
    return f"publishers/google/models/{model.removeprefix('models/')}"


def _gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


class VertexBatchRunner:
    def __init__(self, provider: "VertexProvider") -> None:
        self.provider = provider
        cfg = provider.config
        self.upstream = Upstream(provider=cfg.name, headers={"Accept": "application/json"},
                                 timeouts=cfg.timeouts, max_retries=cfg.max_retries)
        self._token: Token | None = None
        self._started = False

    async def close(self) -> None:
        await self.upstream.close()

    async def _headers(self) -> dict[str, str]:
        p = self.provider
        if not self._started:
            await self.upstream.start()
            self._started = True
        if p.api_is_dev:  # an emulator: no credentials, as for GCS
            return {}
        if self._token is None:
            self._token = Token(service_file=p.config.service_file, session=p.session,  # type: ignore[arg-type]
                                scopes=_SCOPES)  # gcloud-aio's Session type (proxy/providers/gcs.py)
        try:
            token = await self._token.get()
        except Exception:
            raise GatewayError(502, f"Provider '{p.name}': could not obtain a Vertex AI access token.",
                               code="upstream_auth_failed") from None
        return {"Authorization": f"Bearer {token}"}

    def _base(self, region: str) -> str:
        # The provider's one Vertex AI API key, shared with the Responses bridge (proxy/providers/vertex.py).
        return (self.provider.config.api_endpoint or vertex_host(region)).rstrip("/")

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None, *,
                    idempotent: bool = True) -> dict[str, Any]:
        headers = await self._headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            _, raw = await self.upstream.request(method, url, body=None if body is None else orjson.dumps(body),
                                                    headers=headers, idempotent=idempotent)
        except GatewayError as err:
            err.message = without_uris(err.message)
            raise
        try:
            out = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            out = None
        if not isinstance(out, dict):
            raise GatewayError(502, f"Provider '{self.provider.name}' answered with an unreadable batch job.",
                               code="upstream_bad_response")
        return out

    # -- the contract ---------------------------------------------------------------------------

    async def submit_batch(self, *, batch_id: str, input_file: "FileRecord", endpoint: str,
                           metadata: dict[str, str]) -> dict[str, Any]:
        p = self.provider
        check_input(p.name, input_file, endpoint, needs=("bucket", "name"))
        loc = input_file.location
        model = loc.get("model")
        if not model:
            raise GatewayError(400, f"Provider '{p.name}' (Vertex AI) needs a model to run this batch: upload the "
                               "file with the x-tfy-provider-model header or configure the provider's 'model'.",
                               param="input_file_id", code="missing_model")
        region = str(loc.get("region") or p.region)
        bucket = loc["bucket"]
        prefix = f"{p.prefix}batches/{batch_id}/"
        job: dict[str, Any] = {"batch_id": batch_id, "endpoint": endpoint, "created": int(time.time()),
                               "region": region, "model": model, "bucket": bucket, "input_name": loc["name"]}
        if loc.get("ids"):
            assert p.storage is not None
            try:
                await p._token_ready()
                await gcs_storage.put(p.storage, bucket, prefix + IDS_NAME, orjson.dumps(loc["ids"]),
                                      "application/json")
            except GCSStorageError as exc:
                raise p.gcs_error(exc, "batch id map upload") from None
            job["ids_key"] = prefix + IDS_NAME
        parent = f"{self._base(region)}/v1/projects/{p.project_id}/locations/{region}"
        created = await self._call("POST", f"{parent}/batchPredictionJobs", {
            "displayName": f"sluicegate-{batch_id}"[:128],
            "model": model_path(model),
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"gs://{bucket}/{loc['name']}"]}},
            "outputConfig": {"predictionsFormat": "jsonl",
                             "gcsDestination": {"outputUriPrefix": f"gs://{bucket}/{prefix}"}},
            "labels": {"sluicegate-batch": batch_id.lower()[:63]},
        }, idempotent=False)
        name = created.get("name")
        if not isinstance(name, str) or "/batchPredictionJobs/" not in name:
            raise GatewayError(502, f"Provider '{p.name}' answered the batch job without its name.",
                               code="upstream_bad_response")
        job["name"] = name
        return job

    async def poll_batch(self, job: dict[str, Any]) -> BatchProgress:
        resource = await self._call("GET", f"{self._base(job['region'])}/v1/{job['name']}")
        status = _STATUS.get(str(resource.get("state")), "in_progress")
        stats = resource.get("completionStats") or {}
        ok, failed = as_int(stats.get("successfulCount")), as_int(stats.get("failedCount"))
        progress = BatchProgress(status=status, request_counts=RequestCounts(
            total=ok + failed + as_int(stats.get("incompleteCount")), completed=ok, failed=failed))
        started = unix(resource.get("startTime"))
        if started is not None and status != "validating":
            progress.timestamps["in_progress_at"] = started
        error = resource.get("error")
        note_end(progress, resource.get("endTime"), error.get("message") if isinstance(error, dict) else None,
                 code="vertex_job_failed", service="Vertex AI")
        updated = dict(job)
        directory = (resource.get("outputInfo") or {}).get("gcsOutputDirectory")
        if isinstance(directory, str) and directory:
            updated["output_dir"] = directory
        # Requests a cancelled or expired job never ran: error rows of their own (open_results).
        unrun = progress.request_counts.total - ok - failed if status in ("cancelled", "expired") else 0
        if unrun > 0:
            progress.request_counts.failed += unrun
            updated["unrun"] = status
        if status in TERMINAL:
            progress.has_output = ok > 0 and bool(updated.get("output_dir"))
            progress.has_errors = (failed > 0 and bool(updated.get("output_dir"))) or unrun > 0
        if updated != job:
            progress.job = updated
        return progress

    async def cancel_batch(self, job: dict[str, Any]) -> BatchProgress:
        try:
            await self._call("POST", f"{self._base(job['region'])}/v1/{job['name']}:cancel", {})
        except GatewayError as err:
            if err.status != 400:  # FAILED_PRECONDITION: the job has ended already
                raise
        return await self.poll_batch(job)

    def open_results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        return self._results(job, kind)

    async def results_size(self, job: dict[str, Any], kind: Literal["output", "error"]) -> int:
        return await counted(self._results(job, kind))

    # -- GCS ---------------------------------------------------------------------------------------

    async def _results(self, job: dict[str, Any], kind: Literal["output", "error"]) -> AsyncIterator[bytes]:
        p = self.provider
        assert p.storage is not None
        directory = job.get("output_dir")
        unrun = job.get("unrun") if kind == "error" else None
        if not directory and unrun is None:
            return
        ctx = context(job, await self._ids(job))
        translator = vertex_result_translator(ctx, kind, default_model=str(job.get("model") or ""),
                                              track=unrun is not None)
        names: list[str] = []
        if directory:
            bucket, name = _gs(directory)
            try:
                await p._token_ready()
                names = await gcs_storage.list_names(p.storage, bucket, name.rstrip("/") + "/")
            except GCSStorageError as exc:
                raise p.gcs_error(exc, "batch results listing") from None
        for obj in names:
            base = obj.rpartition("/")[2]
            if base.startswith("predictions") and base.endswith(".jsonl"):
                async for out in self._object_rows(bucket, obj, translator):
                    yield out
                out = translator.feed(b"\n")  # a file that does not end its last line still ends it
                if out:
                    yield out
        tail = translator.close()
        if tail:
            yield tail
        if unrun is not None and translator.carriers is not None and job.get("input_name"):
            rows = UnrunRows(input_carrier, translator.carriers, ctx, unrun_failure(unrun))
            async for out in self._object_rows(job["bucket"], job["input_name"], rows):
                yield out
            tail = rows.close()
            if tail:
                yield tail

    async def _object_rows(self, bucket: str, name: str, rows: ResultTranslator | UnrunRows) -> AsyncIterator[bytes]:
        """One GCS object fed to ``rows`` (not closed: a caller may feed it more); a missing
        object gives nothing."""
        p = self.provider
        assert p.storage is not None
        pieces = gcs_storage.iter_object(p.storage, bucket, name)
        try:
            async for piece in pieces:
                out = rows.feed(piece)
                if out:
                    yield out
        except GCSNotFound:
            return
        except GCSStorageError as exc:
            raise p.gcs_error(exc, "batch results download") from None
        finally:
            await pieces.aclose()

    async def _ids(self, job: dict[str, Any]) -> dict[str, str] | None:
        if not job.get("ids_key"):
            return None
        p = self.provider
        assert p.storage is not None
        try:
            data = await read_capped(gcs_storage.iter_object(p.storage, job["bucket"], job["ids_key"]),
                                                _MAX_IDS, p.name, "id map")
        except GCSNotFound:
            return None
        except GCSStorageError as exc:
            raise p.gcs_error(exc, "batch id map download") from None
        ids = orjson.loads(data)
        return ids if isinstance(ids, dict) else None

