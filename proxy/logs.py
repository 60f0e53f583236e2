"""Logging: a text log on stderr that no record can split, and a JSON-lines access log on stdout.

Every message of the text log (``sluicegate``, ``sluicegate.*``, ``aiohttp.*``, anything else)
goes through :class:`OneLineFormatter`, which escapes control characters and caps the length,
so a value a client sent (a path, an id, a model, a header quoted in an exception) can never
start a line of its own that looks like the gateway's. Tracebacks are the gateway's own text and
stay multi-line, but the message of each exception in them is escaped the same way.

The access log (``sluicegate.access``) is one JSON object per line, built once by the
``access_log`` filter with ``orjson.dumps`` and handed to :class:`AccessLineHandler`, which
queues it and returns: a thread of its own writes the queued lines to stdout in batches, so the
event loop never formats a record nor waits on a write (a slow disk, a pipe nobody reads).
"""
from __future__ import annotations

import collections
import logging
import os
import re
import sys
import threading
import time
import traceback
import weakref
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
    """The access log's writer: :meth:`put` queues a finished line (bytes, no newline) and
    returns; a daemon thread writes what is queued to ``stream`` in one ``write`` per batch.

    Why a thread and not a non-blocking fd on the event loop: ``O_NONBLOCK`` is a property of
    the open file *description*, which stdout shares with the shell, the supervisor and usually
    stderr (``2>&1``), whose synchronous writes would then fail with EAGAIN; and it does nothing
    for a regular file on a slow disk. The thread blocks instead, and only itself.

    Batches: the first line queued while the thread is idle wakes it (one ``Event.set``); it
    then lingers ``linger`` seconds (100 ms), or until ``BATCH_BYTES`` (64 KiB) are queued,
    and writes everything queued in one ``write``. So a line is on stdout within ~100 ms, and
    the thread wakes at most ~10 times a second plus once per 64 KiB, whatever the rate (a
    wake-up per line costs more CPU than the synchronous write it replaces). The request path
    pays a ``deque.append``, two additions and two tests (``bench/access_log_cost.py``).

    Memory is bounded: while more than ``max_pending`` bytes wait (stdout not being read), new
    lines are dropped and counted; once writes go through again a JSON line on the access log
    and a warning on the text log say how many were lost.

    A process forked with lines still queued would write them twice: before a fork the queue
    is written out, and the child starts with an empty queue and its own thread (started on its
    first line). ``flush`` (called at drain and exit) waits, bounded, until everything queued
    is written.
    """

    terminator = b"\n"
    MAX_PENDING = 4 << 20  # bytes queued before lines are dropped: ~1 s of lines at 10k/s
    BATCH_BYTES = 64 << 10  # bytes queued that end the linger early
    LINGER = 0.1  # seconds from the first line of a batch to its write

    def __init__(self, stream: IO[bytes], max_pending: int = MAX_PENDING, linger: float = LINGER) -> None:
        super().__init__()
        self.stream = stream
        self.max_pending = max_pending
        self.linger = linger
        self._reset()
        _writers.add(self)

    def _reset(self) -> None:
        """Fresh state: at construction, and in a forked child (the parent's thread is gone)."""
        self._queue: collections.deque[bytes] = collections.deque()
        # Each counter is written by one side only (the callers of put, or the thread), so
        # none needs a lock on the request path.
        self._queued = 0          # bytes ever queued
        self._written = 0         # bytes ever taken off the queue by the thread
        self._dropped = 0         # lines dropped since the last report (written by callers)
        self._reported = 0        # of _dropped, already reported (written by the thread)
        self._signalled = False   # the thread has been woken and has not yet taken the queue
        self._hurried = False     # the linger of this batch has been cut short
        self._busy = False        # the thread holds a batch it has not finished writing
        self._failing = False     # the last write failed (reported once)
        self._wake = threading.Event()  # a batch has begun
        self._now = threading.Event()   # write it now (BATCH_BYTES queued, or a flush)
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._gave_up = False     # lines were left unwritten at exit (reported)

    # -- the request path ----------------------------------------------------------------
    def put(self, line: bytes) -> None:
        """Queue one finished line. Never blocks, never formats."""
        pending = self._queued - self._written
        if pending > self.max_pending:
            self._dropped += 1
            return
        self._queue.append(line)
        self._queued += len(line) + 1
        if not self._signalled:
            self._signalled = True
            if self._thread is None:
                self._start()
            self._wake.set()
        elif pending > self.BATCH_BYTES and not self._hurried:
            self._hurried = True
            self._now.set()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if not isinstance(msg, bytes):  # someone else's record on this logger: make it a JSON line
            msg = orjson.dumps({"time": utc_timestamp(record.created), "level": record.levelname,
                                "message": record.getMessage()})
        self.put(msg)

    # -- the writer thread ---------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sluicegate-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        queue, popleft = self._queue, self._queue.popleft
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self.linger:
                self._now.wait(self.linger)  # lines queued meanwhile join this batch
            self._now.clear()
            self._hurried = False
            with self._idle:
                self._busy = True
            # From here a new line sets the event again: the loop comes back for it.
            self._signalled = False
            try:
                self._write_batch(queue, popleft)
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()

    def _write_batch(self, queue: collections.deque[bytes], popleft: Any) -> None:
        while queue:
            batch = [popleft() for _ in range(len(queue))]
            data = b"\n".join(batch) + b"\n"
            size = len(data)  # what put() counted for these lines
            dropped = self._dropped - self._reported
            if dropped:
                data += orjson.dumps({"time": utc_timestamp(), "level": "WARNING",
                                      "message": f"access log: {dropped} line(s) dropped while stdout was not "
                                                 f"taking them ({self.max_pending} bytes queued)"}) + b"\n"
            try:
                self.stream.write(data)
                self.stream.flush()
            except Exception as exc:  # a closed or broken stdout must not end the thread
                if not self._failing:  # once per failing streak, not once per batch
                    self._failing = True
                    logging.getLogger("sluicegate").warning(
                        "access log: writing to stdout failed, lines are lost until it works again: %s", exc)
            else:
                self._failing = False
                if dropped:
                    self._reported += dropped
                    logging.getLogger("sluicegate").warning(
                        "access log: %d line(s) dropped while stdout was not taking them", dropped)
            finally:
                self._written += size

    # -- drain, exit, fork ---------------------------------------------------------------
    def _give_up(self) -> None:
        """Say (once) that the lines still queued at exit will never be written."""
        self._gave_up = True
        print(f"sluicegate: access log: {len(self._queue)} line(s) not written at exit: stdout is "
              "not taking them", file=sys.stderr, flush=True)

    def flush(self) -> None:
        """logging's flush: write out what is queued (bounded wait, see :meth:`write_out`)."""
        self.write_out()

    def write_out(self, timeout: float = 5.0) -> bool:
        """Wait (up to ``timeout`` s) until every queued line is written; False if some are not
        (stdout still not taking them)."""
        if not self._queue and not self._busy:
            return True
        if self._thread is None or not self._thread.is_alive():
            self._start()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._now.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        # Short: the exit paths have already waited in flush_access_log for a stuck stdout.
        if not self._gave_up and not self.write_out(timeout=1.0):
            self._give_up()
        self._closed = True
        self._wake.set()
        self._now.set()
        _writers.discard(self)
        super().close()


# The writers of this process (a WeakSet: a handler that was replaced goes away with it).
_writers: "weakref.WeakSet[AccessLineHandler]" = weakref.WeakSet()


def _before_fork() -> None:
    for w in list(_writers):
        w.write_out(timeout=1.0)


def _after_fork_in_child() -> None:
    for w in list(_writers):
        w._reset()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def access_writer() -> AccessLineHandler | None:
    """The writer :func:`setup_logging` installed, or None (an embedding's own logging)."""
    return _access_writer


def flush_access_log(timeout: float = 5.0) -> bool:
    """Write out every queued access line (every exit path calls it, after the drain). A stdout
    still stuck after ``timeout`` s gets its lines given up, with a line on stderr."""
    ok = True
    for w in list(_writers):
        if not w.write_out(timeout):
            w._give_up()
            ok = False
    return ok


def _second_stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_stamp_cache: tuple[int, str] = (-1, "")
_ms_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """``2026-01-01T00:00:00.000Z``; the second part is built once per second, the whole stamp
    once per millisecond (at 10,000 lines a second most lines reuse the previous one's)."""
    global _stamp_cache, _ms_cache
    if now is None:
        now = time.time()
    ms = int(now * 1000)
    if _ms_cache[0] == ms:
        return _ms_cache[1]
    second = ms // 1000
    if _stamp_cache[0] != second:
        _stamp_cache = (second, _second_stamp(second))
    stamp = f"{_stamp_cache[1]}.{ms - second * 1000:03d}Z"
    _ms_cache = (ms, stamp)
    return stamp


_installed: list[tuple[logging.Logger, logging.Handler]] = []
_access_writer: AccessLineHandler | None = None


def setup_logging(level: str, *, text_stream: IO[str] | None = None,
                  access_stream: IO[bytes] | None = None) -> None:
    """Text log to stderr, access log (JSON lines) to stdout, both at ``level``.

    ``level`` keeps its meaning for both: at ``warning`` and above the access log is off.
    Calling it again replaces what an earlier call installed.
    """
    global _access_writer
    reset_logging()
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    text = logging.StreamHandler(text_stream or sys.stderr)
    text.setFormatter(OneLineFormatter())
    root.addHandler(text)
    access_logger = logging.getLogger(ACCESS_LOGGER)
    access = AccessLineHandler(access_stream or sys.stdout.buffer)
    access_logger.addHandler(access)
    access_logger.propagate = False
    _access_writer = access
    _installed.extend(((root, text), (access_logger, access)))


def reset_logging() -> None:
    """Undo :func:`setup_logging` (the access log's queued lines are written first)."""
    global _access_writer
    _access_writer = None
    for logger, handler in _installed:
        logger.removeHandler(handler)
        if isinstance(handler, AccessLineHandler):
            handler.close()
    _installed.clear()
    logging.getLogger(ACCESS_LOGGER).propagate = True
