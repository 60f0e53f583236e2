"""OpenAI's ``/batches`` semantics, shared by the OpenAI/Azure and Groq fakes (each wires its
own paths, ids, error shape and differences; facts and sources in tests/fakes/README.md).

A batch "runs" by the clock: ``create`` answers ``validating``; once ``duration`` seconds
have passed since the create (default 0: at the next look), the batch is run the moment
anyone looks at it (retrieve, list, cancel): each input line with a string ``body.model``
becomes an output row, answered with a ``chat.completion`` (or a ``response``, an
``embedding`` list) echoing its last message; a line without one becomes an error-file row
with ``status_code: 400`` — the fake writes both files and serves them under
``/files/{id}/content`` with ``purpose: "batch_output"``. A line whose ``url`` is not the
batch's ``endpoint`` fails the whole batch (``errors.data`` naming the line). Before that,
while ``duration`` runs, the batch is ``in_progress``.

``cancel`` of a batch not yet run → ``cancelling``; the next look → ``cancelled``, with the
first half of the lines "done before the cancel" in the output file (none: no file). Cancel
of an ended batch → 400.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

TERMINAL = ("completed", "failed", "expired", "cancelled")
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512
WINDOW = 24 * 3600


@dataclass
class FakeBatch:
    obj: dict[str, Any]           # the Batch object as the API shows it
    lines: list[dict[str, Any]]   # the input file's lines, read at create
    started: float                # monotonic time of the create
    cancel_requested: bool = False


@dataclass
class BatchEngine:
    """One fake's batches. ``read_input(file_id) -> (purpose, bytes)`` raises ``error(404, …)``
    for an unknown file; ``write_output(name, content) -> file id`` stores a ``batch_output``
    file; ``error(status, message, param, code)`` builds the fake's own error exception."""

    read_input: Callable[[str], tuple[str, bytes]]
    write_output: Callable[[str, bytes], str]
    error: Callable[[int, str, str | None, str | None], Exception]
    new_id: Callable[[], str]
    endpoints: tuple[str, ...]
    window_ok: Callable[[str], bool] = lambda w: w == "24h"
    duration: float = 0.0
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- create -----------------------------------------------------------------------------
    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise self.error(400, "The request body must be a JSON object.", None, None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise self.error(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        endpoint, window = body["endpoint"], body["completion_window"]
        if endpoint not in self.endpoints:
            raise self.error(400, f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                             f"{', '.join(self.endpoints)}.", "endpoint", "invalid_value")
        if not self.window_ok(window):
            raise self.error(400, f"Invalid value for 'completion_window': '{window}'.", "completion_window",
                             "invalid_value")
        metadata = body.get("metadata")
        if metadata is not None:
            if (not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS
                    or any(len(k) > METADATA_KEY or not isinstance(v, str) or len(v) > METADATA_VALUE
                           for k, v in metadata.items())):
                raise self.error(400, "Invalid 'metadata': at most 16 string pairs, keys up to 64 and values up "
                                 "to 512 characters.", "metadata", "invalid_value")
        purpose, content = self.read_input(body["input_file_id"])
        if purpose != "batch":
            raise self.error(400, f"The input file must have purpose 'batch', not '{purpose}'.", "input_file_id",
                             "invalid_value")
        lines = [orjson.loads(line) for line in content.splitlines() if line.strip()]
        now = int(time.time())
        obj: dict[str, Any] = {
            "id": self.new_id(), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + WINDOW, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata,
        }
        with self.lock:
            self.batches[obj["id"]] = FakeBatch(obj, lines, time.monotonic())
        return dict(obj)

    # -- looking at a batch runs it ------------------------------------------------------------
    def get(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                raise self.error(404, f"No batch found with id '{batch_id}'.", "batch_id", "batch_not_found")
            self._advance(batch)
            return dict(batch.obj)

    def all(self) -> list[dict[str, Any]]:
        """Every batch, oldest first, each advanced."""
        with self.lock:
            ids = list(self.batches)
        return [self.get(i) for i in ids]

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            self.get(batch_id)
            batch = self.batches[batch_id]
            obj = batch.obj
            if obj["status"] in TERMINAL:
                raise self.error(400, f"Cannot cancel a batch with status '{obj['status']}'.", None, "invalid_request")
            if obj["status"] != "cancelling":
                obj["status"], obj["cancelling_at"] = "cancelling", int(time.time())
                batch.cancel_requested = True
            return dict(obj)

    def _advance(self, batch: FakeBatch) -> None:
        obj = batch.obj
        if obj["status"] in TERMINAL:
            return
        now = int(time.time())
        if batch.cancel_requested:
            if obj["status"] == "cancelling" and obj["cancelling_at"] is not None and now >= obj["cancelling_at"]:
                self._run(batch, batch.lines[: len(batch.lines) // 2])
                obj["status"], obj["cancelled_at"] = "cancelled", now
            return
        if time.monotonic() - batch.started < self.duration:
            obj["status"], obj["in_progress_at"] = "in_progress", obj["in_progress_at"] or now
            return
        for n, line in enumerate(batch.lines, start=1):
            if line.get("url") != obj["endpoint"]:
                obj["status"], obj["failed_at"] = "failed", now
                obj["errors"] = {"object": "list", "data": [{
                    "code": "invalid_url", "line": n, "param": "url",
                    "message": f"The URL provided for this request does not match the batch endpoint {obj['endpoint']}."}]}
                return
        obj["in_progress_at"] = obj["in_progress_at"] or now
        self._run(batch, batch.lines)
        obj["status"], obj["finalizing_at"], obj["completed_at"] = "completed", now, now

    def _run(self, batch: FakeBatch, lines: list[dict[str, Any]]) -> None:
        obj = batch.obj
        ok: list[bytes] = []
        failed: list[bytes] = []
        for line in lines:
            body = line.get("body") if isinstance(line.get("body"), dict) else {}
            model = body.get("model")
            row: dict[str, Any] = {"id": "batch_req_" + secrets.token_hex(12), "custom_id": line.get("custom_id"),
                                   "error": None}
            if isinstance(model, str) and model:
                row["response"] = {"status_code": 200, "request_id": "req_" + secrets.token_hex(16),
                                   "body": _answer(obj["endpoint"], model, body)}
                ok.append(orjson.dumps(row) + b"\n")
            else:
                row["response"] = {"status_code": 400, "request_id": "req_" + secrets.token_hex(16), "body": {
                    "error": {"message": "you must provide a model parameter", "type": "invalid_request_error",
                              "param": None, "code": None}}}
                failed.append(orjson.dumps(row) + b"\n")
        base = obj["id"]
        if ok:
            obj["output_file_id"] = self.write_output(f"{base}_output.jsonl", b"".join(ok))
        if failed:
            obj["error_file_id"] = self.write_output(f"{base}_error.jsonl", b"".join(failed))
        obj["request_counts"] = {"total": len(batch.lines), "completed": len(ok), "failed": len(failed)}


def _last_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content if isinstance(content, str) else ""
    value = body.get("input", body.get("prompt", ""))
    return value if isinstance(value, str) else ""


def _answer(endpoint: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    text = "echo: " + _last_text(body)
    now = int(time.time())
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    if endpoint.endswith("/embeddings"):
        return {"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    if endpoint.endswith("/responses"):
        return {"id": "resp_" + secrets.token_hex(12), "object": "response", "created_at": now, "status": "completed",
                "model": model, "output": [{"type": "message", "id": "msg_" + secrets.token_hex(8), "role": "assistant",
                                            "status": "completed",
                                            "content": [{"type": "output_text", "text": text, "annotations": []}]}]}
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": now, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}], "usage": usage}
