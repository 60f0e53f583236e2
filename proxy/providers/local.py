"""local: files on the gateway's own disk. The embedded default; needs no account anywhere.

An upload is written to ``<path>/.partial/<id>`` and renamed into place only when complete,
so a failed or abandoned upload never looks like a file; abort removes the partial file.

With a PostgreSQL store (several replicas sharing state), a ``local`` provider's bytes are
on one replica's disk only, unless ``path`` is a shared filesystem (``shared_filesystem:
true``): :func:`replica_only_providers` names the providers start-up warns about.
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import GatewayError
from .base import Download, Provider
from .parts_local import LocalPartStore
from .sink import SinkResult

from .configs import LocalConfig

if TYPE_CHECKING:
    from ..config import Config
    from ..exchange import Exchange
    from ..store.base import FileRecord

log = logging.getLogger("sluicegate.local")

_STALE_PARTIAL_SECONDS = 24 * 3600
# A store these URLs name is shared by replicas (SQLite is one host's file).
_SHARED_STORE_SCHEMES = ("postgresql://", "postgres://")


def replica_only_providers(config: "Config") -> list[LocalConfig]:
    """The ``local`` providers whose files only this replica can read although the store is
    shared with other replicas (PostgreSQL): another replica finds the record, not the bytes.
    ``shared_filesystem: true`` says ``path`` is mounted by every replica."""
    if not config.store.url.lower().startswith(_SHARED_STORE_SCHEMES):
        return []
    return [p for p in config.providers if isinstance(p, LocalConfig) and not p.shared_filesystem]


def prepare_partial_dir(path: str) -> None:
    """Create the directory for uploads in progress and drop partial files a crash left behind
    (older than a day, so another worker's upload in progress is never touched)."""
    os.makedirs(path, exist_ok=True)
    now = time.time()
    for name in os.listdir(path):
        p = os.path.join(path, name)
        try:
            if now - os.stat(p).st_mtime > _STALE_PARTIAL_SECONDS:
                os.unlink(p)
        except FileNotFoundError:
            pass


# A partial file no reservation names is left alone this long: the upload that is creating it
# records its file id in its reservation right after its first chunk.
UNOWNED_PARTIAL_GRACE = 10.0


def _upload_of(name: str) -> str:
    """The file id a partial file belongs to (``file-…``, ``file-….spool.partial``…)."""
    return name.split(".", 1)[0]


def remove_partials(path: str, file_id: str) -> int:
    """Remove every partial file of the upload ``file_id`` in the directory ``path``."""
    removed = 0
    if not file_id or _upload_of(file_id) != file_id or "/" in file_id:
        return 0
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    for name in names:
        if _upload_of(name) == file_id:
            try:
                os.unlink(os.path.join(path, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def sweep_partial_dir(path: str, owned: set[str], grace: float = UNOWNED_PARTIAL_GRACE) -> int:
    """Remove the partial files in ``path`` of no upload in ``owned`` (file ids), unless they
    changed within ``grace`` seconds (an upload just starting)."""
    removed = 0
    now = time.time()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    for name in names:
        if _upload_of(name) in owned:
            continue
        p = os.path.join(path, name)
        try:
            if now - os.stat(p).st_mtime > grace:
                os.unlink(p)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


class LocalFileSink:
    __slots__ = ("partial", "final", "fd", "bytes")

    def __init__(self, partial: str, final: str) -> None:
        self.partial = partial
        self.final = final
        self.fd: int | None = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.bytes = 0

    async def write(self, chunk: bytes | memoryview) -> None:
        # Page-cache writes of one chunk are cheaper inline than a hop to a thread.
        fd = self.fd
        assert fd is not None, "write after complete() or abort()"
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self.bytes += len(chunk)

    async def complete(self) -> SinkResult:
        fd, self.fd = self.fd, None
        assert fd is not None
        os.close(fd)
        os.replace(self.partial, self.final)
        return SinkResult(bytes=self.bytes, location={"path": os.path.basename(self.final)})

    async def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


class LocalProvider(Provider):
    type = "local"

    def __init__(self, config: LocalConfig) -> None:
        super().__init__(config)
        self.root = config.path      # absolute: resolved against server.data_dir at load
        # os.path.join(self.root, name) for a relative name, as one concatenation (_path is on
        # every retrieve of a local file; issue 10)
        self._root_prefix = self.root if not self.root or self.root.endswith("/") else self.root + "/"
        self.partial_dir = os.path.join(self.root, ".partial")
        # An Upload's parts wait beside the files, in <path>/.uploads (one filesystem: composed
        # in the kernel; shared by replicas whenever ``path`` is).
        self.parts = LocalPartStore(self.root)

    async def start(self) -> None:
        prepare_partial_dir(self.partial_dir)

    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        remove_partials(self.partial_dir, str(location.get("file_id") or ""))

    async def sweep_partials(self, owned: list[dict[str, Any]], max_age: float) -> int:
        return sweep_partial_dir(self.partial_dir, {str(loc.get("file_id")) for loc in owned})

    def part_store(self, ex: "Exchange | None") -> LocalPartStore:
        return self.parts

    def _path(self, rec: "FileRecord") -> str:
        name = rec.location.get("path") or rec.id
        return name if name.startswith("/") else self._root_prefix + name

    async def open_sink(self, ex: "Exchange", file_id: str) -> LocalFileSink:
        return LocalFileSink(os.path.join(self.partial_dir, file_id), os.path.join(self.root, file_id))

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        assert rec is not None
        if not os.path.exists(self._path(rec)):
            # Deleted through another worker since this one cached the record.
            raise GatewayError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return orjson.dumps(rec.to_openai())

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        assert rec is not None
        try:
            os.unlink(self._path(rec))
        except FileNotFoundError:
            pass
        return orjson.dumps({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        assert rec is not None
        path = self._path(rec)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise GatewayError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found") from None
        return Download(content_type="application/octet-stream", length=size, path=path)
