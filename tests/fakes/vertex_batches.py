"""Faithful fake of Vertex AI's ``batchPredictionJobs`` REST API for Gemini (docs/provider-facts.md
§8.1, §8.2; the v1 REST reference of ``projects.locations.batchPredictionJobs``), over the real
fake-gcs-server.

Paths (``{name}`` = ``projects/{project}/locations/{location}/batchPredictionJobs/{id}``):
``POST /v1/projects/{p}/locations/{l}/batchPredictionJobs`` (create → the job resource),
``GET /v1/{name}``, ``GET /v1/projects/{p}/locations/{l}/batchPredictionJobs`` (``pageSize``,
``pageToken`` → ``{batchPredictionJobs, nextPageToken}``), ``POST /v1/{name}:cancel`` (→ ``{}``;
an ended job → 400 ``FAILED_PRECONDITION``), ``DELETE /v1/{name}``.

The resource: ``name`` (with the project *number*, as Vertex answers; the project id is
accepted in paths too), ``displayName``, ``model``, ``inputConfig``, ``outputConfig``, ``state``
(``JOB_STATE_QUEUED`` → ``PENDING`` → ``RUNNING`` → ``SUCCEEDED``/``FAILED``; ``CANCELLING`` →
``CANCELLED``), ``createTime``/``startTime``/``endTime``/``updateTime`` (RFC 3339),
``completionStats`` ``{successfulCount, failedCount, incompleteCount}`` (int64 as strings, the
JSON mapping of proto int64), ``outputInfo.gcsOutputDirectory`` once it has run, ``error``
(``google.rpc.Status``) when it failed. Errors: ``{"error": {"code", "message", "status"}}``.

Create checks: ``displayName``; ``model`` a ``publishers/*/models/*`` or ``projects/*/…/models/*``
path; ``inputConfig`` ``{instancesFormat: "jsonl", gcsSource.uris: [one gs:// URI]}``;
``outputConfig`` ``{predictionsFormat: "jsonl", gcsDestination.outputUriPrefix: gs://…}``; the
location must be the fake's region and the project the fake's.

Running reads the input object from fake-gcs-server and writes
``{outputUriPrefix}prediction-model-{timestamp}/predictions.jsonl``: one line per request,
``{"status": "", "processed_time", "request", "response"}`` with a GenerateContentResponse
(``candidates[0].content.parts[0].text`` = ``echo: <last user text>``, ``finishReason: STOP``,
``usageMetadata``, ``modelVersion``), or ``{"status": "<message>", "processed_time",
"request"}`` for a request whose last user text contains ``FAIL`` (**choice**: a trigger the
tests control). ``hold=True`` keeps jobs ``RUNNING`` until :meth:`release`.

Auth: requests may come without ``Authorization`` (the gateway sends no token when its GCS is
an emulator, as for fake-gcs-server); one that sends it must use ``Bearer`` (**choice**).
"""
from __future__ import annotations

import asyncio
import itertools
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from ..emulator_gcs import FakeGCS
from .threaded import ThreadedServer

PROJECT_NUMBER = "123456789012"
_MODEL = re.compile(r"(publishers/[a-z0-9-]+/models/[A-Za-z0-9._@-]+|projects/[^/]+/locations/[^/]+/models/[^/]+)")
_STATUS_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
ENDED = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                   "JOB_STATE_PARTIALLY_SUCCEEDED"})


class GoogleError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status or _STATUS_CODES.get(code, "UNKNOWN")


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class VertexJob:
    job_id: str
    name: str
    display_name: str
    model: str
    input_uri: str
    output_prefix: str
    labels: dict[str, str]
    create_time: float
    seq: int
    state: str = "JOB_STATE_QUEUED"
    start_time: float | None = None
    end_time: float | None = None
    update_time: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    output_dir: str | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    released: asyncio.Event | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "displayName": self.display_name, "model": self.model,
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [self.input_uri]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": self.output_prefix}},
            "state": self.state, "createTime": _rfc3339(self.create_time),
            "updateTime": _rfc3339(self.update_time or self.create_time), "labels": self.labels,
        }
        if self.start_time is not None:
            out["startTime"] = _rfc3339(self.start_time)
        if self.end_time is not None:
            out["endTime"] = _rfc3339(self.end_time)
        if self.stats:
            out["completionStats"] = {k: str(v) for k, v in self.stats.items()}
        if self.output_dir:
            out["outputInfo"] = {"gcsOutputDirectory": self.output_dir}
        if self.error:
            out["error"] = self.error
        return out


def _last_user_text(request: dict[str, Any]) -> str:
    for content in reversed(request.get("contents") or []):
        if content.get("role", "user") == "user":
            return "".join(p.get("text", "") for p in content.get("parts") or [])
    return ""


def default_responder(job: VertexJob, request: dict[str, Any]) -> dict[str, Any]:
    text = _last_user_text(request)
    if "FAIL" in text:
        return {"status": "Bad Request: {\"error\": {\"code\": 400, \"message\": \"the fake was told to FAIL\"}}"}
    answer = f"echo: {text}"
    return {"status": "", "response": {
        "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": max(1, len(text) // 4), "candidatesTokenCount": max(1, len(answer) // 4),
                          "totalTokenCount": max(1, len(text) // 4) + max(1, len(answer) // 4)},
        "modelVersion": job.model.rpartition("/")[2]}}


class FakeVertex:
    def __init__(self, gcs: FakeGCS, *, project: str = "test-project", region: str = "us-central1",
                 step: float = 0.02, hold: bool = False, responder: Any = default_responder) -> None:
        self.gcs = gcs
        self.project = project
        self.region = region
        self.step = step
        self.hold = hold
        self.responder = responder
        self.jobs: dict[str, VertexJob] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None, str | None]] = []  # + Authorization
        self._lock = threading.Lock()
        self._ids = itertools.count(4_000_000_000_000_000_000)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: ThreadedServer | None = None

    def __enter__(self) -> "FakeVertex":
        app = web.Application(middlewares=[self._middleware])
        base = "/v1/projects/{project}/locations/{location}/batchPredictionJobs"
        app.router.add_post(base, self._create)
        app.router.add_get(base, self._list)
        app.router.add_get(base + "/{job}", self._get)
        app.router.add_post(base + "/{job}", self._cancel)   # {job} is "<id>:cancel"
        app.router.add_delete(base + "/{job}", self._delete)
        self._server = ThreadedServer(app).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.call(self._cancel_tasks())
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def release(self) -> None:
        assert self._server is not None
        for job in list(self.jobs.values()):
            if job.released is not None:
                self._server.loop.call_soon_threadsafe(job.released.set)

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing -------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        auth = request.headers.get("Authorization")
        with self._lock:
            self.requests.append((request.method, request.path, body, auth))
        try:
            if auth is not None and not auth.startswith("Bearer "):
                raise GoogleError(401, "Request had invalid authentication credentials.")
            info = request.match_info
            if info.get("project") not in (self.project, PROJECT_NUMBER):
                raise GoogleError(403, f"Permission denied on resource project {info.get('project')}.")
            if info.get("location") != self.region:
                raise GoogleError(400, f"Location {info.get('location')} is not supported for this job.")
            request["json"] = body
            return await handler(request)
        except GoogleError as exc:
            return web.json_response({"error": {"code": exc.code, "message": exc.message, "status": exc.status}},
                                     status=exc.code)

    def _find(self, job_id: str) -> VertexJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise GoogleError(404, f"The BatchPredictionJob does not exist: {job_id}.")
        return job

    # -- handlers -------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        body = request["json"]
        if not isinstance(body, dict):
            raise GoogleError(400, "Invalid JSON payload received.")
        display = body.get("displayName")
        if not isinstance(display, str) or not display:
            raise GoogleError(400, "displayName is required.")
        model = body.get("model")
        if not isinstance(model, str) or not _MODEL.fullmatch(model):
            raise GoogleError(400, "model must be a publisher model (publishers/google/models/…) or a model resource.")
        inp = body.get("inputConfig") or {}
        uris = (inp.get("gcsSource") or {}).get("uris")
        if inp.get("instancesFormat") != "jsonl" or not isinstance(uris, list) or len(uris) != 1 \
                or not str(uris[0]).startswith("gs://"):
            raise GoogleError(400, "inputConfig must be {instancesFormat: jsonl, gcsSource.uris: [one gs:// URI]}.")
        out = body.get("outputConfig") or {}
        prefix = (out.get("gcsDestination") or {}).get("outputUriPrefix")
        if out.get("predictionsFormat") != "jsonl" or not isinstance(prefix, str) or not prefix.startswith("gs://"):
            raise GoogleError(400, "outputConfig must be {predictionsFormat: jsonl, gcsDestination.outputUriPrefix}.")
        job_id = str(next(self._ids))
        now = datetime.now(timezone.utc).timestamp()
        job = VertexJob(job_id=job_id, name=f"projects/{PROJECT_NUMBER}/locations/{self.region}/batchPredictionJobs/"
                        f"{job_id}", display_name=display, model=model, input_uri=uris[0], output_prefix=prefix,
                        labels=dict(body.get("labels") or {}), create_time=now, seq=len(self.jobs),
                        released=asyncio.Event())
        with self._lock:
            self.jobs[job_id] = job
        task = asyncio.ensure_future(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(job.view())

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._find(request.match_info["job"]).view())

    async def _list(self, request: web.Request) -> web.Response:
        try:
            size = int(request.query.get("pageSize", "100"))
            start = int(request.query.get("pageToken", "0"))
        except ValueError:
            raise GoogleError(400, "Invalid pageSize or pageToken.") from None
        jobs = sorted(self.jobs.values(), key=lambda j: j.seq, reverse=True)
        out: dict[str, Any] = {"batchPredictionJobs": [j.view() for j in jobs[start:start + size]]}
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return web.json_response(out)

    async def _cancel(self, request: web.Request) -> web.Response:
        job_id, colon, verb = request.match_info["job"].partition(":")
        if not colon or verb != "cancel":
            raise GoogleError(404, "The requested URL was not found on this server.")
        job = self._find(job_id)
        if job.state in ENDED:
            raise GoogleError(400, f"The BatchPredictionJob is in state {job.state} and cannot be cancelled.",
                              "FAILED_PRECONDITION")
        job.cancel_requested = True
        self._set(job, "JOB_STATE_CANCELLING")
        assert job.released is not None
        job.released.set()
        return web.json_response({})

    async def _delete(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job"])
        with self._lock:
            self.jobs.pop(job.job_id, None)
        return web.json_response({"name": f"{job.name}/operations/1", "done": True})

    # -- running a job ----------------------------------------------------------------------
    def _set(self, job: VertexJob, state: str) -> None:
        job.state = state
        job.update_time = datetime.now(timezone.utc).timestamp()
        if state == "JOB_STATE_RUNNING":
            job.start_time = job.update_time
        if state in ENDED:
            job.end_time = job.update_time

    async def _run(self, job: VertexJob) -> None:
        for state in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
            await asyncio.sleep(self.step)
            if job.cancel_requested:
                break
            self._set(job, state)
        if self.hold and not job.cancel_requested:
            assert job.released is not None
            await job.released.wait()
        async with aiohttp.ClientSession() as session:
            bucket, _, name = job.input_uri[len("gs://"):].partition("/")
            async with session.get(f"{self.gcs.api_root}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                                   params={"alt": "media"}) as resp:
                if resp.status != 200:
                    job.error = {"code": 5, "message": f"Failed to read the input file {job.input_uri}."}
                    self._set(job, "JOB_STATE_FAILED")
                    return
                data = await resp.read()
            lines = [line for line in data.split(b"\n") if line.strip()]
            if job.cancel_requested:  # nothing ran: every request is incomplete
                job.stats = {"successfulCount": 0, "failedCount": 0, "incompleteCount": len(lines)}
                self._set(job, "JOB_STATE_CANCELLED")
                return
            out = bytearray()
            ok = failed = 0
            for raw in lines:
                row = orjson.loads(raw)
                request = row.get("request") or {}
                answer = self.responder(job, request)
                failed += bool(answer.get("status"))
                ok += not answer.get("status")
                out += orjson.dumps({"status": answer.get("status", ""), "processed_time": _rfc3339(
                    datetime.now(timezone.utc).timestamp()), "request": request,
                    **({"response": answer["response"]} if "response" in answer else {})}) + b"\n"
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out_bucket, _, out_prefix = job.output_prefix[len("gs://"):].partition("/")
            if out_prefix and not out_prefix.endswith("/"):
                out_prefix += "/"
            directory = f"{out_prefix}prediction-model-{stamp}"
            async with session.post(f"{self.gcs.api_root}/upload/storage/v1/b/{out_bucket}/o",
                                    params={"uploadType": "media", "name": f"{directory}/predictions.jsonl"},
                                    data=bytes(out), headers={"Content-Type": "application/jsonl"}) as resp:
                assert resp.status == 200, await resp.text()
        job.stats = {"successfulCount": ok, "failedCount": failed, "incompleteCount": 0}
        job.output_dir = f"gs://{out_bucket}/{directory}"
        self._set(job, "JOB_STATE_SUCCEEDED")
