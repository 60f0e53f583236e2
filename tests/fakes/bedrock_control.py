"""Faithful fake of the Bedrock control plane's batch-inference API (docs/provider-facts.md §7.1,
§7.3; botocore's ``bedrock`` service model ``2023-04-20``, rest-json), over the real moto_server.

Driven by the real aiobotocore ``bedrock`` client with ``endpoint_url=fake.url``::

    with FakeBedrock(moto) as fake:
        client = session.create_client("bedrock", endpoint_url=fake.url, ...)

Operations (paths and shapes from the service model):

* ``CreateModelInvocationJob`` ``POST /model-invocation-job`` → ``{"jobArn"}``; required
  ``jobName``, ``roleArn``, ``modelId``, ``inputDataConfig.s3InputDataConfig.s3Uri``,
  ``outputDataConfig.s3OutputDataConfig.s3Uri``, each checked against the model's pattern;
  ``timeoutDurationInHours`` 24–168; ``modelInvocationType`` ``InvokeModel``|``Converse``;
  the same ``clientRequestToken`` again returns the same job (idempotent); a ``jobName`` in use
  → ``ConflictException``.
* ``GetModelInvocationJob`` ``GET /model-invocation-job/{jobIdentifier}`` (the ARN or its
  12-character id) → the job with ``status``, ``message``, ``submitTime``, ``lastModifiedTime``,
  ``endTime``, the record counts.
* ``ListModelInvocationJobs`` ``GET /model-invocation-jobs`` (``maxResults``, ``nextToken``,
  ``statusEquals``, ``nameContains``, ``sortOrder``) → ``{"invocationJobSummaries", "nextToken"}``.
* ``StopModelInvocationJob`` ``POST /model-invocation-job/{jobIdentifier}/stop`` → ``{}``; a job
  that has ended → ``ValidationException``.

Errors: ``x-amzn-ErrorType: <Code>`` and ``{"message"}`` with the model's status (Validation 400,
ResourceNotFound 404, Conflict 400, AccessDenied 403, Throttling 429). Requests must be SigV4
signed for service ``bedrock`` in the fake's region with the fake's access key (else 403).

A job "runs" in the fake's loop: ``Submitted`` → ``Validating`` → ``Scheduled`` → ``InProgress``
→ ``Completed`` (``Failed`` when the input cannot be read or the output written), ``step`` s apart;
``hold=True`` keeps jobs ``InProgress`` until :meth:`release` (a stop then ends them ``Stopped``).
Running reads the input object from moto line by line and writes, next to each other,
``<output s3Uri>/<job-id>/<input-name>.out`` (``{"recordId","modelInput","modelOutput"}`` or
``{…,"error":{"errorCode","errorMessage"}}``, docs §7.3; records in reverse order, since Bedrock
does not keep the input order) and ``manifest.json.out``; a record without ``recordId`` gets one.
The output goes up by multipart upload in 8 MiB parts, so a 200 MiB output costs the fake one part.

What a record answers is ``responder(job, model_input)``: by default the model family's body
(a Messages response for Claude under InvokeModel, the Converse shape for Nova and for
``Converse`` jobs) whose text is ``echo: <last user text>``, and an ``errorCode`` 400 error
for a record whose last user text contains ``FAIL`` (**choice**: a trigger the tests control).
"""
from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import orjson
from aiobotocore.session import get_session
from aiohttp import web

from ..emulator_s3 import MotoS3
from .threaded import ThreadedServer

ACCOUNT = "123456789012"
PART = 8 << 20

# Patterns from botocore's bedrock service model.
_JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_S3_URI = re.compile(r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?")
_TOKEN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
_JOB_ID = re.compile(r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?([a-z0-9]{12}))")
_CREDENTIAL = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/[0-9]{8}/([^/]+)/([^/]+)/aws4_request")
STATUSES = ("Submitted", "InProgress", "Completed", "Failed", "Stopping", "Stopped", "PartiallyCompleted",
            "Expired", "Validating", "Scheduled")
ENDED = frozenset({"Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired"})

Responder = Callable[["Job", dict[str, Any]], dict[str, Any]]


class AwsError(Exception):
    STATUS = {"ValidationException": 400, "ResourceNotFoundException": 404, "ConflictException": 400,
              "AccessDeniedException": 403, "ThrottlingException": 429, "InternalServerException": 500,
              "ServiceQuotaExceededException": 400, "UnrecognizedClientException": 403}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Job:
    arn: str
    job_id: str
    name: str
    model_id: str
    role_arn: str
    token: str | None
    input_uri: str
    output_uri: str
    invocation_type: str
    timeout_hours: int
    submit_time: float
    seq: int
    status: str = "Submitted"
    message: str | None = None
    last_modified: float = 0.0
    end_time: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stop_requested: bool = False
    released: asyncio.Event | None = None

    def view(self, *, summary: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": self.arn, "jobName": self.name, "modelId": self.model_id, "roleArn": self.role_arn,
            "status": self.status, "submitTime": _iso(self.submit_time),
            "lastModifiedTime": _iso(self.last_modified or self.submit_time),
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": self.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": self.output_uri}},
            "timeoutDurationInHours": self.timeout_hours,
            "jobExpirationTime": _iso(self.submit_time + self.timeout_hours * 3600),
            "modelInvocationType": self.invocation_type,
        }
        if self.token:
            out["clientRequestToken"] = self.token
        if self.message:
            out["message"] = self.message
        if self.end_time is not None:
            out["endTime"] = _iso(self.end_time)
        if not summary and self.counts:
            out.update(self.counts)
        return out


def _last_user_text(model_input: dict[str, Any]) -> str:
    for message in reversed(model_input.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def default_responder(job: Job, model_input: dict[str, Any]) -> dict[str, Any]:
    text = _last_user_text(model_input)
    if "FAIL" in text:
        return {"error": {"errorCode": 400, "errorMessage": "Malformed input request: the fake was told to FAIL"}}
    answer = f"echo: {text}"
    tokens_in, tokens_out = max(1, len(text) // 4), max(1, len(answer) // 4)
    if job.invocation_type == "InvokeModel" and ".claude" in job.model_id:
        return {"modelOutput": {
            "id": "msg_bdrk_" + secrets.token_hex(12), "type": "message", "role": "assistant",
            "model": job.model_id.split(".", 1)[-1].rsplit("-v", 1)[0],
            "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}}
    return {"modelOutput": {
        "output": {"message": {"role": "assistant", "content": [{"text": answer}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": tokens_in, "outputTokens": tokens_out, "totalTokens": tokens_in + tokens_out}}}


class FakeBedrock:
    def __init__(self, moto: MotoS3, *, region: str = "us-east-1", step: float = 0.02, hold: bool = False,
                 responder: Responder = default_responder, expire_after: int | None = None) -> None:
        self.moto = moto
        self.region = region
        self.step = step
        self.hold = hold
        self.expire_after = expire_after  # run this many records, then the job is Expired
        self.responder = responder
        self.jobs: dict[str, Job] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, JSON body)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._faults: list[tuple[str, str]] = []
        self._server: ThreadedServer | None = None

    # -- serving ------------------------------------------------------------------------
    def __enter__(self) -> "FakeBedrock":
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/model-invocation-job", self._create)
        app.router.add_get("/model-invocation-jobs", self._list)
        app.router.add_get("/model-invocation-job/{job}", self._get)
        app.router.add_post("/model-invocation-job/{job}/stop", self._stop)
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

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- test hooks ---------------------------------------------------------------------
    def release(self, job_id: str | None = None) -> None:
        """Let held jobs (one, or all) finish."""
        assert self._server is not None
        for job in list(self.jobs.values()):
            if (job_id is None or job.job_id == job_id) and job.released is not None:
                self._server.loop.call_soon_threadsafe(job.released.set)

    def fail_next(self, code: str, message: str = "Injected failure.", times: int = 1) -> None:
        """Answer the next ``times`` requests with the AWS error ``code`` (``ThrottlingException``…)."""
        with self._lock:
            self._faults.extend([(code, message)] * times)

    def clear_faults(self) -> None:
        """Forget the failures :meth:`fail_next` queued that no request has met yet."""
        with self._lock:
            self._faults.clear()

    def job(self, arn_or_id: str) -> Job:
        return self.jobs[arn_or_id.rpartition("/")[2]]

    # -- plumbing -------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        parsed = orjson.loads(body) if body else None
        with self._lock:
            self.requests.append((request.method, request.path, parsed))
        try:
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            if fault is not None:
                raise AwsError(*fault)
            self._check_auth(request)
            request["json"] = parsed
            return await handler(request)
        except AwsError as exc:
            return web.Response(status=AwsError.STATUS[exc.code], body=orjson.dumps({"message": exc.message}),
                                content_type="application/json", headers={"x-amzn-ErrorType": exc.code})

    def _check_auth(self, request: web.Request) -> None:
        match = _CREDENTIAL.match(request.headers.get("Authorization", ""))
        if match is None:
            raise AwsError("UnrecognizedClientException", "Missing Authentication Token")
        key, region, service = match.groups()
        if key != self.moto.access_key or region != self.region or service != "bedrock":
            raise AwsError("UnrecognizedClientException", "The security token included in the request is invalid.")

    def _find(self, identifier: str) -> Job:
        identifier = unquote(identifier)
        match = _JOB_ID.fullmatch(identifier)
        if match is None:
            raise AwsError("ValidationException", "1 validation error detected: Value at 'jobIdentifier' failed "
                           "to satisfy constraint: Member must satisfy regular expression pattern")
        job = self.jobs.get(match.group(4))
        if job is None:
            raise AwsError("ResourceNotFoundException", "The specified model invocation job was not found.")
        return job

    # -- handlers -------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        body = request["json"] or {}

        def need(value: Any, name: str, pattern: re.Pattern[str] | None = None) -> str:
            if not isinstance(value, str) or not value:
                raise AwsError("ValidationException", f"1 validation error detected: '{name}' is required")
            if pattern is not None and not pattern.fullmatch(value):
                raise AwsError("ValidationException", f"1 validation error detected: Value at '{name}' failed to "
                               "satisfy constraint: Member must satisfy regular expression pattern")
            return value

        name = need(body.get("jobName"), "jobName", _JOB_NAME)
        role = need(body.get("roleArn"), "roleArn", _ROLE_ARN)
        model = need(body.get("modelId"), "modelId")
        input_uri = need(((body.get("inputDataConfig") or {}).get("s3InputDataConfig") or {}).get("s3Uri"),
                         "inputDataConfig.s3InputDataConfig.s3Uri", _S3_URI)
        output_uri = need(((body.get("outputDataConfig") or {}).get("s3OutputDataConfig") or {}).get("s3Uri"),
                          "outputDataConfig.s3OutputDataConfig.s3Uri", _S3_URI)
        token = body.get("clientRequestToken")
        if token is not None:
            need(token, "clientRequestToken", _TOKEN)
        hours = body.get("timeoutDurationInHours", 24)
        if not isinstance(hours, int) or not 24 <= hours <= 168:
            raise AwsError("ValidationException", "timeoutDurationInHours must be between 24 and 168")
        invocation = body.get("modelInvocationType", "InvokeModel")
        if invocation not in ("InvokeModel", "Converse"):
            raise AwsError("ValidationException", "modelInvocationType must be InvokeModel or Converse")
        with self._lock:
            for job in self.jobs.values():
                if token is not None and job.token == token:
                    return web.json_response({"jobArn": job.arn})
                if job.name == name:
                    raise AwsError("ConflictException", f"A job named {name} already exists.")
            job_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
            job = Job(arn=f"arn:aws:bedrock:{self.region}:{ACCOUNT}:model-invocation-job/{job_id}", job_id=job_id,
                      name=name, model_id=model, role_arn=role, token=token, input_uri=input_uri,
                      output_uri=output_uri, invocation_type=invocation, timeout_hours=hours,
                      submit_time=datetime.now(timezone.utc).timestamp(), seq=next(self._seq),
                      released=asyncio.Event())
            self.jobs[job_id] = job
        task = asyncio.ensure_future(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"jobArn": job.arn})

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._find(request.match_info["job"]).view())

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("maxResults", "1000"))
            start = int(q.get("nextToken", "0"))
        except ValueError:
            raise AwsError("ValidationException", "maxResults and nextToken must be valid") from None
        if not 1 <= limit <= 1000:
            raise AwsError("ValidationException", "maxResults must be between 1 and 1000")
        if "statusEquals" in q and q["statusEquals"] not in STATUSES:
            raise AwsError("ValidationException", "statusEquals is not a job status")
        jobs = sorted(self.jobs.values(), key=lambda j: j.seq, reverse=q.get("sortOrder") != "Ascending")
        jobs = [j for j in jobs if q.get("statusEquals") in (None, j.status)
                and q.get("nameContains", "") in j.name]
        page = jobs[start:start + limit]
        out: dict[str, Any] = {"invocationJobSummaries": [j.view(summary=True) for j in page]}
        if start + limit < len(jobs):
            out["nextToken"] = str(start + limit)
        return web.json_response(out)

    async def _stop(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job"])
        if job.status in ENDED or job.status == "Stopping":
            raise AwsError("ValidationException", f"The job cannot be stopped in its status {job.status}.")
        job.stop_requested = True
        self._set(job, "Stopping")
        assert job.released is not None
        job.released.set()
        return web.json_response({})

    # -- running a job ----------------------------------------------------------------------
    def _set(self, job: Job, status: str, message: str | None = None) -> None:
        job.status = status
        job.last_modified = datetime.now(timezone.utc).timestamp()
        if message:
            job.message = message
        if status in ENDED:
            job.end_time = job.last_modified

    async def _run(self, job: Job) -> None:
        for status in ("Validating", "Scheduled", "InProgress"):
            await asyncio.sleep(self.step)
            if job.stop_requested:
                break
            self._set(job, status)
        if self.hold and not job.stop_requested:
            assert job.released is not None
            await job.released.wait()
        session = get_session()
        async with session.create_client("s3", region_name=self.moto.region, endpoint_url=self.moto.endpoint_url,
                                         aws_access_key_id=self.moto.access_key,
                                         aws_secret_access_key=self.moto.secret_key) as s3:
            if job.stop_requested:
                try:
                    total = len(await self._records(s3, job))
                    await self._write_manifest(s3, job, {"totalRecordCount": total, "processedRecordCount": 0,
                                                         "successRecordCount": 0, "errorRecordCount": 0})
                except Exception:  # noqa: BLE001 - no input or output location: stopped all the same
                    pass
                self._set(job, "Stopped")
                return
            try:
                expired = await self._process(s3, job)
            except _InputMissing:
                self._set(job, "Failed", f"Unable to read the input data from {job.input_uri}.")
                return
            except Exception:  # noqa: BLE001 - the output location cannot be written
                self._set(job, "Failed", "Unable to write the output data to the S3 location.")
                return
        self._set(job, "Expired" if expired else "Completed")

    def _out_location(self, job: Job) -> tuple[str, str]:
        bucket, _, prefix = job.output_uri[len("s3://"):].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return bucket, f"{prefix}{job.job_id}/"

    async def _write_manifest(self, s3: Any, job: Job, counts: dict[str, int]) -> None:
        bucket, prefix = self._out_location(job)
        job.counts = dict(counts)
        await s3.put_object(Bucket=bucket, Key=prefix + "manifest.json.out", Body=orjson.dumps(
            {**counts, "inputTokenCount": 0, "outputTokenCount": 0}))

    async def _records(self, s3: Any, job: Job) -> list[bytes]:
        in_bucket, _, in_key = job.input_uri[len("s3://"):].partition("/")
        try:
            obj = await s3.get_object(Bucket=in_bucket, Key=in_key)
        except Exception as exc:  # noqa: BLE001 - NoSuchKey, NoSuchBucket: the job fails
            raise _InputMissing from exc
        records: list[bytes] = []
        buf = b""
        async with obj["Body"] as stream:
            while chunk := await stream.read(1 << 20):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                records.extend(line for line in lines if line.strip())
        if buf.strip():
            records.append(buf)
        return records

    async def _process(self, s3: Any, job: Job) -> bool:
        """Run the records; True when the job expired before it ran them all."""
        records = await self._records(s3, job)
        in_key = job.input_uri[len("s3://"):].partition("/")[2]
        run = records if self.expire_after is None else records[:self.expire_after]
        out_bucket, out_prefix = self._out_location(job)
        name = in_key.rpartition("/")[2]
        counts = {"totalRecordCount": len(records), "processedRecordCount": 0, "successRecordCount": 0,
                  "errorRecordCount": 0}
        key = f"{out_prefix}{name}.out"
        upload = await s3.create_multipart_upload(Bucket=out_bucket, Key=key)
        parts: list[dict[str, Any]] = []
        pending = bytearray()

        async def put_part() -> None:
            number = len(parts) + 1
            r = await s3.upload_part(Bucket=out_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                     Body=bytes(pending))
            parts.append({"ETag": r["ETag"], "PartNumber": number})
            pending.clear()

        for raw in reversed(run):  # Bedrock does not keep the input order (docs §7.2)
            record = orjson.loads(raw)
            record_id = record.get("recordId") or "".join(secrets.choice(string.ascii_uppercase + string.digits)
                                                          for _ in range(11))
            answer = self.responder(job, record.get("modelInput") or {})
            pending += orjson.dumps({"recordId": record_id, "modelInput": record.get("modelInput"), **answer})
            pending += b"\n"
            counts["processedRecordCount"] += 1
            counts["errorRecordCount" if "error" in answer else "successRecordCount"] += 1
            if len(pending) >= PART:
                await put_part()
        if pending or not parts:
            await put_part()
        await s3.complete_multipart_upload(Bucket=out_bucket, Key=key,
                                           UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})
        await self._write_manifest(s3, job, counts)
        return len(run) < len(records)


class _InputMissing(Exception):
    pass
