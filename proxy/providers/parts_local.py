"""The ``local`` provider's parts of an Upload: files on the provider's own filesystem.

A part is written to ``<path>/.uploads/<upload_id>/.<part_id>.partial`` as it streams in,
fsync'd and renamed to ``<part_id>`` when complete (so a part that failed half-way never looks
like a part), mode 0600 like the provider's files. Parts live under the provider's ``path``
rather than elsewhere in the data directory for two reasons: ``compose`` then copies within
one filesystem, where ``copy_file_range`` can share blocks (btrfs, XFS) or copy inside the
kernel, and a ``path`` on a filesystem every replica mounts (``shared_filesystem: true``)
makes parts sent to different replicas assemble.

``compose`` concatenates the parts into ``<path>/.partial/<name>`` in a worker thread
(``os.copy_file_range``, else ``os.sendfile``, else a 1 MiB buffer: never the file in memory),
fsyncs it and renames it to ``<path>/<name>``, exactly where the provider's own upload puts a
file; a failure or cancellation removes the partial file, so nothing appears at ``dest``.

The same store, with ``uploads=<data_dir>/uploads``, is the gateway's own spool for the parts of
providers that have no storage to compose in (``anthropic``, ``groq``: only ``read``).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import threading
import time
from typing import Any, AsyncGenerator

from ..errors import GatewayError
from ..upload_parts import PartRef, checked_id
from .sink import SinkResult

log = logging.getLogger("sluicegate.local")

UPLOADS_DIR = ".uploads"
_PARTIAL_SUFFIX = ".partial"
_COPY_STEP = 64 << 20          # bytes per copy_file_range/sendfile call: stop checks in between
_BUFFER = 1 << 20              # the last fallback's buffer
# A ``.partial`` part file idle this long belongs to no live part upload (a live one writes at
# least every ``server.body_idle_timeout``): delete() removes it with the upload's parts.
_STALE_PART_SECONDS = 600.0
# copy_file_range and sendfile refuse some pairs of files (another filesystem on older
# kernels, filesystems without support): the next method is tried for these.
_UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP,
                          errno.EBADF, errno.ETXTBSY})


class Cancelled(Exception):
    """The compose was cancelled while its thread was copying."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing_part(part_id: str) -> GatewayError:
    return GatewayError(500, f"Upload part {part_id[:64]} is missing or damaged on the gateway's disk.",
                        code="upload_part_missing")


class LocalPartSink:
    """One part's bytes into ``<upload dir>/.<part_id>.partial``, renamed into place when complete."""

    __slots__ = ("directory", "part_id", "partial", "final", "relative", "fd", "bytes")

    def __init__(self, root: str, upload_id: str, part_id: str) -> None:
        self.directory = os.path.join(root, checked_id(upload_id, "upload_id"))
        self.part_id = checked_id(part_id, "part_id")
        self.partial = os.path.join(self.directory, f".{part_id}{_PARTIAL_SUFFIX}")
        self.final = os.path.join(self.directory, part_id)
        self.relative = f"{upload_id}/{part_id}"
        self.bytes = 0
        self.fd: int | None = None
        for _ in range(3):  # an abort or delete of another part may remove the empty directory meanwhile
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            try:
                self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:
                continue
        if self.fd is None:
            raise FileNotFoundError(errno.ENOENT, "upload directory keeps vanishing", self.directory)

    async def write(self, chunk: bytes | memoryview) -> None:
        # Page-cache writes of one chunk are cheaper inline than a hop to a thread (as LocalFileSink).
        fd = self.fd
        assert fd is not None, "write after complete() or abort()"
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self.bytes += len(chunk)

    async def complete(self) -> SinkResult:
        fd, self.fd = self.fd, None
        assert fd is not None, "complete after complete() or abort()"
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.final)
        await asyncio.to_thread(_fsync_dir, self.directory)
        return SinkResult(bytes=self.bytes, location={"path": self.relative})

    async def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _unlink(self.partial)
        try:
            os.rmdir(self.directory)  # only when this was the upload's only part
        except OSError:
            pass


class LocalPartStore:
    """The :class:`~proxy.upload_parts.PartStore` of a ``local`` provider whose files are in ``root``."""

    def __init__(self, root: str, uploads: str | None = None) -> None:
        self.root = root
        # ``uploads``: another directory for the parts (the gateway's own spool of the
        # providers that have no part store, whose parts are only ever ``read``).
        self.uploads = uploads or os.path.join(root, UPLOADS_DIR)
        self.partial_dir = os.path.join(root, ".partial")

    def open_part(self, upload_id: str, part_id: str) -> LocalPartSink:
        return LocalPartSink(self.uploads, upload_id, part_id)

    def destination(self, file_id: str, *, tenant: str, filename: str, purpose: str) -> dict[str, Any]:
        return {"path": checked_id(file_id, "file_id")}

    def _part_path(self, part: PartRef) -> str:
        upload_id, _, part_id = str(part.location.get("path", "")).partition("/")
        return os.path.join(self.uploads, checked_id(upload_id, "upload_id"), checked_id(part_id, "part_id"))

    async def read(self, parts: list[PartRef], chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
        for part in parts:
            try:
                fd = os.open(self._part_path(part), os.O_RDONLY)
            except FileNotFoundError:
                raise _missing_part(part.part_id) from None
            try:
                left = part.bytes
                while left > 0:
                    chunk = await asyncio.to_thread(os.read, fd, min(chunk_size, left))
                    if not chunk:
                        raise _missing_part(part.part_id)  # shorter than recorded
                    left -= len(chunk)
                    yield chunk
            finally:
                os.close(fd)

    async def compose(self, parts: list[PartRef], dest: dict[str, Any]) -> SinkResult:
        name = checked_id(str(dest.get("path", "")), "dest path")
        sources = [(self._part_path(p), p.bytes, p.part_id) for p in parts]
        partial = os.path.join(self.partial_dir, name)
        stop = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(_concatenate, sources, partial, stop))
        try:
            total = await asyncio.shield(work)
            os.replace(partial, os.path.join(self.root, name))
        except BaseException:
            stop.set()
            try:
                await work          # the thread stops at its next step and removes what it wrote
            except BaseException:
                pass
            _unlink(partial)
            raise
        await asyncio.to_thread(_fsync_dir, self.root)
        return SinkResult(bytes=total, location={"path": name})

    async def delete(self, parts: list[PartRef]) -> None:
        directories: set[str] = set()
        for part in parts:
            try:
                path = self._part_path(part)
            except ValueError:
                continue   # not a locator of this store: nothing of it here
            _unlink(path)
            directories.add(os.path.dirname(path))
        for directory in directories:
            _remove_stale_partials(directory)
            try:
                os.rmdir(directory)
            except OSError:
                pass  # gone already, or parts of this upload not named here remain

    def remove_upload(self, upload_id: str) -> None:
        """Everything an upload left here, parts still being written included (cancel, expiry,
        the sweep of what a crashed process left)."""
        try:
            directory = os.path.join(self.uploads, checked_id(upload_id, "upload_id"))
        except ValueError:
            return   # no directory of this store has such a name
        shutil.rmtree(directory, ignore_errors=True)

    def upload_ids(self) -> list[str]:
        """The uploads that have a directory here (for the sweep of leftovers)."""
        try:
            return sorted(n for n in os.listdir(self.uploads) if os.path.isdir(os.path.join(self.uploads, n)))
        except FileNotFoundError:
            return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_stale_partials(directory: str) -> None:
    """Partial part files a crashed or killed process left in ``directory``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    now = time.time()
    for name in names:
        if name.startswith(".") and name.endswith(_PARTIAL_SUFFIX):
            path = os.path.join(directory, name)
            try:
                if now - os.stat(path).st_mtime > _STALE_PART_SECONDS:
                    os.unlink(path)
            except FileNotFoundError:
                pass


# -- the copy, in a worker thread --------------------------------------------------------------


def _concatenate(sources: list[tuple[str, int, str]], partial: str, stop: threading.Event) -> int:
    """Write the ``(path, size, part_id)`` sources one after the other into ``partial`` (created
    new, mode 0600) and fsync it; on any failure, or once ``stop`` is set, remove it and raise."""
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    total = 0
    try:
        for path, size, part_id in sources:
            try:
                src = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise _missing_part(part_id) from None
            try:
                if os.fstat(src).st_size != size:
                    raise _missing_part(part_id)
                _copy(src, out, size, total, stop)
            finally:
                os.close(src)
            total += size
        os.fsync(out)
    except BaseException:
        os.close(out)
        _unlink(partial)
        raise
    os.close(out)
    return total


def _copy(src: int, out: int, size: int, out_offset: int, stop: threading.Event) -> None:
    """Copy ``size`` bytes from the start of ``src`` to ``out`` at ``out_offset``."""
    done = 0
    method = "copy_file_range"
    while done < size:
        if stop.is_set():
            raise Cancelled()
        step = min(_COPY_STEP, size - done)
        try:
            if method == "copy_file_range":
                n = os.copy_file_range(src, out, step, done, out_offset + done)
            elif method == "sendfile":
                os.lseek(out, out_offset + done, os.SEEK_SET)
                n = os.sendfile(out, src, done, step)
            else:
                n = _buffered(src, out, step, done, out_offset + done)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED or method == "buffered":
                raise
            method = "sendfile" if method == "copy_file_range" else "buffered"
            continue
        if n == 0:
            raise OSError(errno.EIO, "the part ended before its recorded size")
        done += n


def _buffered(src: int, out: int, step: int, src_offset: int, out_offset: int) -> int:
    done = 0
    while done < step:
        chunk = os.pread(src, min(_BUFFER, step - done), src_offset + done)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            n = os.pwrite(out, view, out_offset + done)
            view = view[n:]
            done += n
    return done
