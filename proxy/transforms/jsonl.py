"""Sans-IO JSONL: split a byte stream into lines, and validate an OpenAI Batch API input file.

Both objects are fed chunks as they arrive and never hold more than one partial line, so a
200 MB batch file streams through in constant memory. Nothing here does I/O.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

# Endpoints ``POST /v1/batches`` accepts (docs/provider-facts.md §1.8), in the order messages list them.
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_ECHO_LIMIT = 100  # characters of user input an error message may quote


def describe(value: object) -> str:
    """Show a JSON value in an error message: a scalar as JSON (strings cut to 100 chars),
    an array or object by its kind only."""
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    if isinstance(value, str) and len(value) > _ECHO_LIMIT:
        value = value[:_ECHO_LIMIT] + "…"
    return orjson.dumps(value).decode()


class LineTooLong(Exception):
    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"line {line} is longer than {limit} bytes")
        self.line = line
        self.limit = limit


class LineSplitter:
    """Feed bytes, get complete lines. Handles ``\\n`` and ``\\r\\n`` endings (strips them).

    A ``\\r`` is a line ending only right before ``\\n``; anywhere else it is part of the line.
    Lines are numbered from 1 and empty lines are returned like any other. The splitter
    buffers at most one partial line of ``max_line_length`` (+1 for a pending ``\\r``) bytes;
    a longer line raises :class:`LineTooLong` as soon as it is seen, and so does every later
    call.
    """

    def __init__(self, max_line_length: int = 16 << 20) -> None:
        self.max_line_length = max_line_length
        self._partial = bytearray()
        self._line = 1  # number of the line being assembled
        self._error: LineTooLong | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Return ``(line number, line without EOL)`` for each line the data completes."""
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes | bytearray | memoryview) -> Iterator[tuple[int, bytes]]:
        """Like :meth:`feed`, one line at a time: a consumer that stops at a bad line sees it
        before a :class:`LineTooLong` further on in the same chunk."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes):
            data = bytes(data)
        limit = self.max_line_length
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._partial:
                self._partial += memoryview(data)[start:end]
                if self._partial[-1] == _CR:
                    del self._partial[-1]
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = data[start:end - 1 if end > start and data[end - 1] == _CR else end]
            start = end + 1
            number = self._line
            self._line += 1
            if len(line) > limit:
                raise self._fail(number)
            yield number, line
        if start < len(data):
            pending = len(self._partial) + len(data) - start
            if pending > limit and not (pending == limit + 1 and data[-1] == _CR):
                raise self._fail(self._line)  # before buffering a byte of it
            self._partial += memoryview(data)[start:]

    def close(self) -> list[tuple[int, bytes]]:
        """Return the final unterminated line, if non-empty."""
        if self._error is not None:
            raise self._error
        line = bytes(self._partial)
        self._partial.clear()
        if len(line) > self.max_line_length:
            raise self._fail(self._line)
        return [(self._line, line)] if line else []

    def _fail(self, line: int) -> LineTooLong:
        self._partial = bytearray()
        self._error = LineTooLong(line, self.max_line_length)
        return self._error


class BatchLineError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message

    def sentence(self) -> str:
        """``line N: …`` ending in one period. Only a missing period is added: the text may
        quote the client's own values (``got "GET.."``), which are never rewritten."""
        text = str(self)
        return text if text.endswith(".") else text + "."


class BatchValidator:
    """Validates an OpenAI Batch API input file (JSONL) as it streams through.

    Each line must be a JSON object with a non-empty, unique string ``custom_id``,
    ``method`` ``"POST"``, a batch-endpoint ``url`` (the same on every line) and an object
    ``body``. The file may end with one newline; other empty lines are errors. The first bad
    line raises :class:`BatchLineError`, and every later call raises it again.

    ``on_request(line, request)`` is called with each validated request, in order; a
    :class:`BatchLineError` it raises fails the file like a validation error.
    """

    def __init__(
        self,
        *,
        max_lines: int = 50_000,
        max_line_length: int = 16 << 20,
        on_request: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.max_lines = max_lines
        self.lines = 0  # request lines validated so far
        self._splitter = LineSplitter(max_line_length)
        self._on_request = on_request
        self._url: str | None = None  # every line's url must equal the first line's
        # custom_id digest -> line: a fixed 16 bytes per line however long the ids are
        self._seen: dict[bytes, int] = {}
        self._error: BatchLineError | None = None

    @property
    def url(self) -> str | None:
        """The endpoint every line so far names (a batch uses one); None before the first line."""
        return self._url

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._run(lambda: self._splitter.iter_feed(data))

    def close(self) -> None:
        """Validate the last line; raise if the file holds no request at all."""
        self._run(self._splitter.close)
        if not self.lines:
            self._error = BatchLineError(1, "the file contains no requests")
            raise self._error

    def _run(self, lines: Callable[[], Iterable[tuple[int, bytes]]]) -> None:
        if self._error is not None:
            raise self._error
        try:
            for number, line in lines():
                request = self._check(number, line)
                self.lines += 1
                if self._on_request is not None:
                    self._on_request(number, request)
        except LineTooLong as exc:
            self._error = BatchLineError(exc.line, f"the line is longer than {exc.limit} bytes")
            raise self._error from None
        except BatchLineError as exc:
            self._error = exc
            raise

    def _check(self, number: int, line: bytes) -> dict[str, Any]:
        def fail(message: str) -> BatchLineError:
            return BatchLineError(number, message)

        if self.lines >= self.max_lines:
            raise fail(f"too many requests: a batch file holds at most {self.max_lines}")
        if number == 1 and line.startswith(_BOM):
            raise fail("UTF-8 byte order mark is not allowed")
        if not line.strip():
            raise fail("empty line")
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise fail(_json_problem(line, exc)) from None
        if not isinstance(request, dict):
            raise fail(f"must be a JSON object, got {describe(request)}")

        custom_id = request.get("custom_id")
        if custom_id is None:
            raise fail('"custom_id" is required')
        if not isinstance(custom_id, str):
            raise fail(f'"custom_id" must be a string, got {describe(custom_id)}')
        if not custom_id:
            raise fail('"custom_id" must not be empty')
        digest = hashlib.blake2b(custom_id.encode(), digest_size=16).digest()
        first = self._seen.setdefault(digest, number)
        if first != number:
            raise fail(f'"custom_id" {describe(custom_id)} is already used on line {first}')

        method = request.get("method")
        if method is None:
            raise fail('"method" is required')
        if method != "POST":
            raise fail(f'"method" must be "POST", got {describe(method)}')

        url = request.get("url")
        if url is None:
            raise fail('"url" is required')
        if url not in BATCH_ENDPOINTS:  # also rejects non-strings
            raise fail(f'"url" must be one of {", ".join(BATCH_ENDPOINTS)}; got {describe(url)}')
        if self._url is None:
            self._url = url
        elif url != self._url:
            raise fail(f'"url" must be "{self._url}" as on line 1 (a batch uses one endpoint), '
                       f"got {describe(url)}")

        body = request.get("body")
        if body is None:
            raise fail('"body" is required')
        if not isinstance(body, dict):
            raise fail(f'"body" must be a JSON object, got {describe(body)}')
        return request


def _json_problem(line: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        line.decode()
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte {bad.start + 1})"
    return f"not valid JSON ({exc.msg} at column {exc.colno})"
