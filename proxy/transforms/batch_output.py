"""Sans-IO streaming translation of a provider's batch results into OpenAI batch-output rows.

The provider side (Bedrock ``.jsonl.out``, Vertex ``predictions.jsonl``, Anthropic Message
Batches results) is read line by line by a :class:`ResultTranslator`: a per-provider
``RowReader`` turns one parsed line into ``(carrier id, Completion | Failure)``, and this module
writes OpenAI's row (docs/provider-facts.md §1.8)::

    {"id": "batch_req_…", "custom_id": …, "response": {"status_code", "request_id", "body"}, "error": …}

with ``body`` a ``chat.completion`` (or a ``response`` for ``/v1/responses`` batches) for a
:class:`Completion`, an OpenAI error body for a :class:`Failure` with an HTTP status, and
``response: null`` plus ``error: {code, message}`` for a failure that is not an HTTP one
(cancelled, expired). The carrier id the provider echoes (a ``recordId``, a label, an Anthropic
``custom_id``) is turned back into the client's ``custom_id`` through the input translator's
``ids`` map (carrier → custom_id; ids carried unchanged are not in it).

One translator emits one kind: ``"output"`` (successes) or ``"error"`` (failures), so the output
and error files are two passes over the same provider bytes. Every value in a row is a function
of the batch, the provider's line and its position, never of the time or a random draw, so two
passes give the same bytes: a counting pass gives the file's exact size.

Memory: one partial line (the :class:`~proxy.transforms.jsonl.LineSplitter`) plus the rows of
one fed chunk.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

import orjson

from .jsonl import LineSplitter, LineTooLong

Kind = Literal["output", "error"]

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"

# OpenAI's non-HTTP per-request failures (the codes OpenAI's own error files use).
CANCELLED = ("batch_cancelled", "This request was cancelled before it was run.")
EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")

_MAX_LINE = 64 << 20  # a provider's result line echoes its input line (≤ 16 MiB) plus the output


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated answer, whatever the provider."""

    model: str
    text: str
    finish_reason: str  # OpenAI's chat finish_reason: stop, length, content_filter, tool_calls
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """One request that produced no answer. ``status_code`` None: not an HTTP failure (the row
    gets ``response: null`` and ``error: {code, message}``)."""

    message: str
    status_code: int | None = None
    type: str | None = None  # OpenAI error type; from the status when None
    code: str | None = None


Result = Union[Completion, Failure]
# One parsed provider line → (the id it carries, or None when it carries none; its result).
RowReader = Callable[[dict[str, Any]], tuple[Union[str, None], Result]]


def as_int(value: object) -> int:
    """A token count from a provider (an int, or int64 as a decimal string in Google's JSON)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error")


@dataclass(frozen=True, slots=True)
class ResultContext:
    """What a row needs besides the provider's line: the batch (for ids), the endpoint the
    batch ran (the body's shape), the batch's creation time (the body's ``created``) and the
    input translator's id map."""

    batch_id: str
    endpoint: str = CHAT
    created: int = 0
    ids: Mapping[str, str] | None = None

    def custom_id(self, carrier: str | None) -> str | None:
        if carrier is None or not self.ids:
            return carrier
        return self.ids.get(carrier, carrier)


def openai_row(ctx: ResultContext, custom_id: str | None, line: int, result: Result) -> tuple[Kind, dict[str, Any]]:
    """The OpenAI batch-output row of one result, and which file it belongs to."""
    seed = f"{ctx.batch_id}\0{custom_id if custom_id is not None else f'line {line}'}".encode()
    digest = hashlib.blake2b(seed, digest_size=24).hexdigest()
    row_id, request_id, body_id = digest[:16], digest[16:32], digest[32:]
    row: dict[str, Any] = {"id": f"batch_req_{row_id}", "custom_id": custom_id}
    if isinstance(result, Completion):
        body = (_response(result, body_id, ctx.created) if ctx.endpoint == RESPONSES
                else _chat_completion(result, body_id, ctx.created))
        row["response"] = {"status_code": 200, "request_id": f"req_{request_id}", "body": body}
        row["error"] = None
        return "output", row
    if result.status_code is None:
        row["response"] = None
        row["error"] = {"code": result.code, "message": result.message}
        return "error", row
    error = {"message": result.message, "type": result.type or error_type(result.status_code),
             "param": None, "code": result.code}
    row["response"] = {"status_code": result.status_code, "request_id": f"req_{request_id}",
                       "body": {"error": error}}
    row["error"] = None
    return "error", row


def _chat_completion(c: Completion, body_id: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{body_id}",
        "object": "chat.completion",
        "created": created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                  "total_tokens": c.prompt_tokens + c.completion_tokens},
        "system_fingerprint": None,
    }


def _response(c: Completion, body_id: str, created: int) -> dict[str, Any]:
    """A Responses object (docs/provider-facts.md §3.4) for a ``/v1/responses`` batch."""
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(c.finish_reason)
    return {
        "id": f"resp_{body_id}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": c.model,
        "output": [{
            "id": f"msg_{body_id}",
            "type": "message",
            "status": "incomplete" if incomplete else "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": c.text, "annotations": []}],
        }],
        "usage": {"input_tokens": c.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": c.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": c.prompt_tokens + c.completion_tokens},
    }


class ResultTranslator:
    """Feed a provider's result file, get the OpenAI rows of one ``kind``.

    Each non-empty line is parsed and handed to ``read_row``; a line that is not a JSON object,
    or that ``read_row`` cannot read (``KeyError``/``TypeError``/``ValueError``), becomes an
    error row naming the line (``custom_id`` null), so one bad line never loses the others.
    """

    def __init__(self, read_row: RowReader, ctx: ResultContext, kind: Kind, *,
                 max_line_length: int = _MAX_LINE, track: bool = False) -> None:
        self._read_row = read_row
        self._ctx = ctx
        self._kind = kind
        self._splitter = LineSplitter(max_line_length)
        self._too_long_seen = False
        self.rows = 0  # rows of this kind emitted so far
        # track: the carriers of every line read, of either kind (for UnrunRows)
        self.carriers: set[str] | None = set() if track else None

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """The rows the data completes, each ending ``\\n``; ``b""`` if none."""
        return self._run(lambda: self._splitter.iter_feed(data))

    def close(self) -> bytes:
        """The row of the final unterminated line, if any."""
        return self._run(self._splitter.close)

    def _run(self, lines: Callable[[], Iterable[tuple[int, bytes]]]) -> bytes:
        out: list[bytes] = []
        try:
            for number, line in lines():
                if line.strip():
                    kind, row = self._translate(number, line)
                    if kind == self._kind:
                        out.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        except LineTooLong as exc:
            out.extend(self._too_long(exc))  # after the rows of the lines before it
        self.rows += len(out)
        return b"".join(out)

    def _translate(self, number: int, line: bytes) -> tuple[Kind, dict[str, Any]]:
        ctx = self._ctx
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            return openai_row(ctx, None, number, _unreadable(number, "is not valid JSON"))
        if not isinstance(parsed, dict):
            return openai_row(ctx, None, number, _unreadable(number, "is not a JSON object"))
        try:
            carrier, result = self._read_row(parsed)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return openai_row(ctx, None, number, _unreadable(number, "has an unexpected shape"))
        if self.carriers is not None and carrier is not None:
            self.carriers.add(carrier)
        return openai_row(ctx, ctx.custom_id(carrier), number, result)

    def _too_long(self, exc: LineTooLong) -> list[bytes]:
        # The splitter stays failed (every later call re-raises): one error row, then nothing.
        if self._too_long_seen:
            return []
        self._too_long_seen = True
        if self._kind != "error":
            return []
        _, row = openai_row(self._ctx, None, exc.line, _unreadable(
            exc.line, f"is longer than {exc.limit} bytes; the rest of the provider's results could not be read"))
        return [orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)]


class UnrunRows:
    """The error rows of the requests a job never ran (it expired, or was stopped), from the
    job's input file: each input row whose carrier (``carrier_of(row)``) is not in ``ran`` — the
    :attr:`ResultTranslator.carriers` of the job's results — becomes an error row without a
    response (``failure``: :data:`EXPIRED` or :data:`CANCELLED`). Memory: one partial line;
    ``ran`` holds one id per result row."""

    def __init__(self, carrier_of: Callable[[dict[str, Any]], Union[str, None]], ran: set[str],
                 ctx: ResultContext, failure: tuple[str, str], *, max_line_length: int = _MAX_LINE) -> None:
        self._carrier_of = carrier_of
        self._ran = ran
        self._ctx = ctx
        self._failure = Failure(failure[1], code=failure[0])
        self._splitter = LineSplitter(max_line_length)
        self.rows = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._run(lambda: self._splitter.iter_feed(data))

    def close(self) -> bytes:
        return self._run(self._splitter.close)

    def _run(self, lines: Callable[[], Iterable[tuple[int, bytes]]]) -> bytes:
        out: list[bytes] = []
        try:
            for number, line in lines():
                carrier = self._carrier(line)
                if carrier is not None and carrier not in self._ran:
                    self._ran.add(carrier)  # once, even if a row repeats
                    _, row = openai_row(self._ctx, self._ctx.custom_id(carrier), number, self._failure)
                    out.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        except LineTooLong:
            pass  # the input was checked line by line on upload: never longer than its limit
        self.rows += len(out)
        return b"".join(out)

    def _carrier(self, line: bytes) -> str | None:
        if not line.strip():
            return None
        try:
            row = orjson.loads(line)
            carrier = self._carrier_of(row) if isinstance(row, dict) else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None
        return carrier if isinstance(carrier, str) else None


def _unreadable(line: int, problem: str) -> Failure:
    return Failure(f"Line {line} of the provider's batch results {problem}.", code="unreadable_result")
