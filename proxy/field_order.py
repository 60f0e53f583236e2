"""One rule for the order of an upload's form fields: ``purpose`` is known when the file starts.

Why one rule: the purpose decides which rules a file is checked by (batch JSONL, the batch size
limit, a provider's purposes) and, for several providers, what is done with its bytes (bedrock
and vertex translate batch rows while they stream, anthropic keeps batch files on the gateway's
disk). The OpenAI SDK sends ``purpose`` before the file; curl and hand-written forms often send
it after. Handling both orders in every filter and provider took seven special cases that did
not agree with each other (speculative batch validation, size and provider re-checks when the
purpose arrived, a spool in one provider, object-metadata rewrites in two others, a 400 in two
more) and still let a late ``purpose=batch`` through. Here is the one place instead:

* the form fields before the file part are read and checked first (they are bounded:
  ``MAX_FORM_PARTS`` fields of at most ``MAX_FIELD_SIZE`` each, about 1 MiB in all);
* if ``purpose`` is known when the file part starts, the file streams as always;
* if it is not, the file is held back (:class:`FileHold`): its bytes go to a :class:`Spool`, an
  anonymous temporary file on the gateway's local disk (``<server.data_dir>/spool``), bounded by
  the largest file limit any purpose could have; no filter, provider or upstream sees any of it.
  A pass-through upload holds the raw body bytes as well (:class:`RawHold`): nothing past the
  file's start goes upstream until the purpose is known;
* when ``purpose`` arrives (the file part has then ended), the held file is replayed — file
  start, its bytes in order, file end — to the filters and the provider exactly as if
  ``purpose`` had come first, and a pass-through upload then forwards the raw bytes it held,
  unchanged, with the client's ``Content-Length``;
* a body that ends without ``purpose`` is the usual 400 ``missing_required_parameter``.

So every filter and provider sees ``ex.purpose`` set at ``on_file_start``, always. A spool is
an unlinked file (``O_TMPFILE``): it is gone once closed — which the upload does on every path,
failure and client disconnect included — and also if the process dies.

The module does no I/O except the spool's own file: reading the body and driving the filters
stay in :mod:`proxy.uploads`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

#: Where spools live, under ``server.data_dir``.
SPOOL_DIR = "spool"
#: The size of the pieces a spool is read back in (the body reader's default chunk).
READ_SIZE = 256 << 10


def largest_file_limit(max_file_size: int, max_batch_file_size: int, provider_max: int | None) -> int:
    """The most file bytes an upload may carry whatever its purpose turns out to be: what a
    file held before its purpose is known may grow to (the ``size_limit`` filter applies the
    purpose's own limit when the file is replayed)."""
    limit = max(max_file_size, max_batch_file_size)
    return min(limit, provider_max) if provider_max else limit


class Spool:
    """Bytes held on local disk, in order, at most ``limit`` of them.

    The file is created on the first write, as an anonymous temporary file in ``directory``
    (created if missing), and removed by :meth:`close`, which is idempotent and never raises.
    Writes and reads are inline: page-cache writes of one chunk are cheaper than a hop to a
    thread, and a thread still writing when a cancelled upload closes the file could write to
    a reused descriptor.
    """

    __slots__ = ("directory", "limit", "too_large", "size", "_fd", "_closed")

    def __init__(self, directory: str, limit: int, too_large: Callable[[int], Exception]) -> None:
        self.directory = directory
        self.limit = limit
        self.too_large = too_large   # the error to raise past the limit (given the limit)
        self.size = 0
        self._fd: int | None = None
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise RuntimeError("spool is closed")
        if self.size + len(data) > self.limit:
            raise self.too_large(self.limit)
        if self._fd is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._fd = _anonymous_file(self.directory)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def chunks(self) -> Iterator[bytes]:
        """The bytes written so far, from the start, in pieces of at most :data:`READ_SIZE`.
        Stops early (without error) if the spool is closed meanwhile."""
        offset = 0
        while offset < self.size and not self._closed and self._fd is not None:
            piece = os.pread(self._fd, min(READ_SIZE, self.size - offset), offset)
            if not piece:
                raise OSError(f"spool file shorter than written ({offset} of {self.size} bytes)")
            offset += len(piece)
            yield piece

    def close(self) -> None:
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover - nothing left to clean up
                pass


def _anonymous_file(directory: str) -> int:
    """A read-write file in ``directory`` that has no name (so nothing is left behind)."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):  # no O_TMPFILE here (or on this filesystem): unlink at once
        fd, path = tempfile.mkstemp(dir=directory, prefix="spool-")
        os.unlink(path)
        return fd


class FileHold:
    """The file part of one upload, held back while its ``purpose`` is unknown.

    The upload driver calls :meth:`begin` when the file part starts without a purpose, then
    :meth:`data` and :meth:`end` for the file's events instead of passing them on; when the
    purpose arrives, :meth:`release` gives the held bytes back for replay. :meth:`close` frees
    the spool on every path.
    """

    __slots__ = ("spool", "holding", "ended")

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.holding = False
        self.ended = False

    def begin(self) -> None:
        self.holding = True

    def data(self, chunk: bytes | memoryview) -> None:
        self.spool.write(chunk)

    def end(self) -> None:
        self.ended = True

    def release(self) -> Iterator[bytes]:
        """Stop holding; the held file's bytes, to replay (the file part has ended: a field can
        only follow a complete part)."""
        assert self.holding and self.ended
        self.holding = False
        return self.spool.chunks()

    def close(self) -> None:
        self.spool.close()


class RawHold:
    """A pass-through upload's raw body bytes, held until they may go upstream: in memory up
    to ``memory_limit`` (the form fields before the file), then in a :class:`Spool`."""

    __slots__ = ("head", "in_memory", "memory_limit", "spool")

    def __init__(self, spool: Spool, memory_limit: int) -> None:
        self.head: list[bytes] = []
        self.in_memory = 0
        self.memory_limit = memory_limit
        self.spool = spool

    def add(self, chunk: bytes) -> None:
        if self.spool.size == 0 and self.in_memory + len(chunk) <= self.memory_limit:
            self.head.append(chunk)
            self.in_memory += len(chunk)
        else:
            self.spool.write(chunk)

    def chunks(self) -> Iterator[bytes]:
        """Everything held, in order (memory first, then the spool), each piece given once."""
        while self.head:
            yield self.head.pop(0)
        yield from self.spool.chunks()

    def close(self) -> None:
        self.head.clear()
        self.spool.close()
