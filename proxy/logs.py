"""Logging: a text log on stderr that no record can split, and a JSON-lines access log on stdout.

Every message of the text log (``sluicegate``, ``sluicegate.*``, ``aiohttp.*``, anything else)
goes through :class:`OneLineFormatter`, which escapes control characters and caps the length,
so a value a client sent (a path, an id, a model, a header quoted in an exception) can never
start a line of its own that looks like the gateway's. Tracebacks are the gateway's own text and
stay multi-line, but the message of each exception in them is escaped the same way.

The access log (``sluicegate.access``) is one JSON object per line, built once by the
``access_log`` filter with ``orjson.dumps``; :class:`AccessLineHandler` writes that line as it
is, with no formatting at all.
"""
from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from typing import IO, Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"  # the pid tells workers apart
ACCESS_LOGGER = "sluicegate.access"
MAX_MESSAGE_CHARS = 8192

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: every character
# some reader (a terminal, ``str.splitlines``, a log shipper) may treat as a line break.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` with control characters escaped, cut to ``limit`` characters (marked)."""
    if len(text) > limit:
        # Cut before escaping too, so a huge message costs no more than a short one.
        text = _CONTROL.sub(_escape_char, text[: limit + 1])
    elif _CONTROL.search(text) is None:
        return text
    else:
        text = _CONTROL.sub(_escape_char, text)
    if len(text) > limit:
        text = text[:limit] + "...[truncated]"
    return text


class OneLineFormatter(logging.Formatter):
    """The text log's formatter: a record's message is always exactly one line."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        te = traceback.TracebackException(ei[0], ei[1], ei[2], compact=True)
        _escape_exception_messages(te, set())
        return "".join(te.format()).rstrip("\n")


def _escape_exception_messages(te: traceback.TracebackException, seen: set[int]) -> None:
    """Escape the message of ``te`` and of every exception chained to it, in place.

    ``TracebackException`` keeps the message as ``_str`` (3.10 to 3.13); without it, the
    traceback still prints, unescaped messages being the lesser harm than losing it.
    """
    if id(te) in seen:
        return
    seen.add(id(te))
    message = getattr(te, "_str", None)  # private, so undeclared in typeshed: reached by name
    if isinstance(message, str):
        setattr(te, "_str", one_line(message))
    notes = getattr(te, "__notes__", None)
    if isinstance(notes, list):
        te.__notes__ = [one_line(n) if isinstance(n, str) else n for n in notes]
    for nested in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if nested is not None:
            _escape_exception_messages(nested, seen)


class AccessLineHandler(logging.Handler):
    """Writes a record whose ``msg`` is a finished access line (bytes, no newline) as it is."""

    terminator = b"\n"

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if not isinstance(msg, bytes):  # someone else's record on this logger: make it a JSON line
            msg = orjson.dumps({"time": utc_timestamp(record.created), "level": record.levelname,
                                "message": record.getMessage()})
        try:
            self.stream.write(msg + self.terminator)
            self.stream.flush()
        except Exception:  # pragma: no cover - a closed stdout must not fail the request
            self.handleError(record)


def _second_stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_stamp_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """``2026-01-01T00:00:00.000Z``; the second part is built once per second."""
    global _stamp_cache
    if now is None:
        now = time.time()
    second = int(now)
    if _stamp_cache[0] != second:
        _stamp_cache = (second, _second_stamp(second))
    return f"{_stamp_cache[1]}.{int((now - second) * 1000):03d}Z"


_installed: list[tuple[logging.Logger, logging.Handler]] = []


def setup_logging(level: str, *, text_stream: IO[str] | None = None,
                  access_stream: IO[bytes] | None = None) -> None:
    """Text log to stderr, access log (JSON lines) to stdout, both at ``level``.

    ``level`` keeps its meaning for both: at ``warning`` and above the access log is off.
    Calling it again replaces what an earlier call installed.
    """
    for logger, handler in _installed:
        logger.removeHandler(handler)
    _installed.clear()
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    text = logging.StreamHandler(text_stream or sys.stderr)
    text.setFormatter(OneLineFormatter())
    root.addHandler(text)
    access_logger = logging.getLogger(ACCESS_LOGGER)
    access = AccessLineHandler(access_stream or sys.stdout.buffer)
    access_logger.addHandler(access)
    access_logger.propagate = False
    _installed.extend(((root, text), (access_logger, access)))
