"""anthropic: files in Anthropic's Files API, behind gateway-minted OpenAI-looking ids.

Anthropic's Files API (docs/provider-facts.md §5) differs from OpenAI's in ways a client of the
gateway must never see, so this provider is *gateway-managed* (``passthrough = False``): the
gateway mints ``file-…`` ids, keeps ``purpose`` and ownership in its store, and maps each id
to Anthropic's ``file_…`` id (``FileRecord.location["anthropic_id"]``).

Calls go to ``{api_base}/v1/files…`` with ``x-api-key``, ``anthropic-version`` (``2023-06-01``)
and ``anthropic-beta: files-api-2025-04-14`` from the config, through one pooled session
(:class:`AnthropicUpstream`, a :class:`~proxy.providers.upstream.Upstream` that reads
Anthropic's error shape). No client header is forwarded: the client speaks OpenAI's API,
and its headers mean nothing to Anthropic.

Uploads (any purpose but ``batch``)
    :class:`AnthropicUploadSink` re-encodes the file as Anthropic's multipart body — one part
    ``file`` with the client's filename and a content type guessed from the extension — and
    streams it to ``POST /v1/files`` while the client is still sending: ``write`` hands each
    chunk to a small bounded queue that feeds the request body (chunked transfer encoding,
    the length is not known up front), so the client is read only as fast as Anthropic
    takes the bytes. ``abort`` cancels the request; if Anthropic had already received the
    whole body, the file it creates is deleted in the background. Anthropic takes files up
    to 500 MB (5·10^8 bytes): that is this provider's default ``max_file_size``, which the
    ``size_limit`` filter enforces from ``Content-Length`` and the running byte count.

``purpose=batch``
    Anthropic has no batch *input files* — Message Batches take their requests inline in
    one JSON ``POST /v1/messages/batches`` — and files uploaded to Anthropic can never be
    downloaded again. So a batch file does not go to Anthropic at all: its OpenAI batch lines
    are translated while they stream in (:func:`~proxy.transforms.batch_anthropic.anthropic_batch_translator`,
    default model ``model`` from the config) into Message Batches request rows
    ``{"custom_id", "params"}`` and the translated JSONL is kept on the gateway's disk under
    ``path`` (default ``<server.data_dir>/anthropic-batches``), written to ``.partial/`` and
    renamed into place when complete. ``files.content`` returns those translated rows, and
    the File object's ``bytes`` is their size. ``custom_id`` s Anthropic cannot carry
    (1–64 of ``[A-Za-z0-9_-]``) are rewritten; the map back to the client's ids is kept
    next to the file (``<id>.ids.json``).

The purpose decides where the bytes go; it is always known when the sink opens (a file sent
before its ``purpose`` field is held by the core until it arrives, proxy/field_order.py).

Other operations
    retrieve → ``GET /v1/files/{id}`` translated to OpenAI's File (``size_bytes`` → ``bytes``,
    RFC 3339 ``created_at`` → Unix seconds, ``purpose`` from the store, ``status:
    "processed"``); batch files answer from the store. list → the gateway store (the core does
    it for gateway-managed providers). delete → ``DELETE /v1/files/{id}`` (an upstream 404
    counts as already gone) or removal of the local batch file. content → batch files stream
    from disk; uploaded files are refused with a 400, because Anthropic does not allow
    downloading them — unless Anthropic's metadata says ``downloadable: true``, when
    ``GET /v1/files/{id}/content`` is streamed through.

Errors ``{"type":"error","error":{"type","message"}}`` become OpenAI's shape
(docs/provider-facts.md §9.4): 404 → 404 ``file_not_found``; 429 → 429 ``rate_limit_exceeded``
with ``Retry-After``; 529 overloaded → 503 ``upstream_overloaded``; 401/403 → 502 (the
gateway's key was refused); other 5xx → 502, timeouts 504. The gateway's key never appears
in a message.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator

import orjson

from ..bridge.anthropic import AnthropicDialect, gateway_error_for
from ..errors import GatewayError, error_type_for
from ..transforms.batch_anthropic import anthropic_batch_translator
from ..transforms.jsonl import BatchLineError
from .base import Download, Provider
from .batch_jobs import ENDPOINTS as BATCH_ENDPOINTS
from .configs import ANTHROPIC_FILES_BETA, AnthropicConfig
from .local import LocalFileSink, prepare_partial_dir, remove_partials, sweep_partial_dir
from .sink import SinkResult
from .upstream import Upstream, json_events

if TYPE_CHECKING:
    from ..bridge.events import ProviderCall
    from .anthropic_batches import AnthropicBatchRunner
    from ..exchange import Exchange
    from ..store.base import FileRecord
    from ..transforms.batch_translate import BatchTranslator

log = logging.getLogger("sluicegate.anthropic")

ANTHROPIC_MAX_BATCH_REQUESTS = 100_000         # per Message Batch (docs/provider-facts.md §5.7)
FILES_BETA = ANTHROPIC_FILES_BETA
BATCH_KIND = "anthropic_batch"

_QUEUE_DEPTH = 4                    # chunks in flight between the client and Anthropic
_ABORT_ANSWER_WAIT = 30.0           # an aborted upload whose body was all sent: wait this long for the id

_CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

NOT_DOWNLOADABLE = ("Anthropic does not allow downloading files uploaded through its Files API, "
                    "so the content of {id} cannot be returned; keep your own copy of the file.")


def content_type_for(filename: str) -> str:
    """The part Content-Type Anthropic gets: from the extension, ``application/octet-stream`` else."""
    return _CONTENT_TYPES.get(os.path.splitext(filename)[1].lower(), "application/octet-stream")


def _quote_filename(filename: str) -> str:
    # HTML's multipart/form-data encoding (what browsers and httpx send): UTF-8, with the
    # three characters that would break the quoted-string percent-encoded.
    return filename.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


def rfc3339_to_unix(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def _file_not_found(file_id: str) -> GatewayError:
    return GatewayError(404, f"No such File object: {file_id[:128]}", param="file_id", code="file_not_found")


# =========================================================================== errors


class AnthropicUpstream(Upstream):
    """:class:`Upstream` (pool, retries, scrubbing) reading Anthropic's error shape."""

    @staticmethod
    def _parse_error(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Upstream._parse_error(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and data.get("type") == "error":
            details = err.get("details")
            code = details.get("error_code") if isinstance(details, dict) else None
            return (str(err.get("message") or "") or None, err.get("type"), None,
                    None if code is None else str(code))
        return Upstream._parse_error(body)

    def error_from_response(self, status: int, body: bytes, headers: Any) -> GatewayError:
        message, kind, _, code = self._parse_error(body)
        message = self.scrub(message or f"HTTP {status}")
        retry_after = headers.get("Retry-After") if headers is not None else None
        extra = {"Retry-After": retry_after} if retry_after else {}
        if status in (401, 403):
            return super().error_from_response(status, body, headers)   # 502, logged, no detail
        if status == 529 or kind == "overloaded_error":
            return GatewayError(503, f"Provider '{self.provider}' (Anthropic) is overloaded; retry later.",
                                type="server_error", code="upstream_overloaded", retryable=True, headers=extra)
        if status == 404:
            return GatewayError(404, message, type="invalid_request_error", param="file_id",
                                code=code or "file_not_found")
        if status == 429:
            return GatewayError(429, f"Provider '{self.provider}' (Anthropic) rate limit reached: {message}",
                                type="rate_limit_error", code="rate_limit_exceeded", retryable=True,
                                headers=extra)
        if status == 504 or kind == "timeout_error":
            return GatewayError(504, f"Provider '{self.provider}' (Anthropic) timed out: {message}",
                                code="upstream_timeout", retryable=True)
        if status >= 500:
            return GatewayError(502, f"Provider '{self.provider}' (Anthropic) failed (HTTP {status}): {message}",
                                code="upstream_error", retryable=True)
        if status == 413:
            return GatewayError(413, message, param="file", code=code or "file_too_large")
        return GatewayError(status, message, type=error_type_for(status), code=code,
                            retryable=status in (408, 409), headers=extra)


# =========================================================================== sinks


class AnthropicUploadSink:
    """Streams one file to ``POST /v1/files`` as Anthropic's multipart body while it arrives."""

    def __init__(self, provider: "AnthropicProvider", filename: str) -> None:
        self.provider = provider
        self.filename = filename
        boundary = "sluicegate-" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self.head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{_quote_filename(filename)}"\r\n'
                     f"Content-Type: {content_type_for(filename)}\r\n\r\n").encode("utf-8")
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_QUEUE_DEPTH)
        self.bytes = 0
        self.body_sent = False
        self.finished = False
        self.anthropic_id: str | None = None
        self.task: asyncio.Task[bytes] = asyncio.ensure_future(self._run())

    async def _body(self) -> AsyncIterator[bytes]:
        yield self.head
        while (chunk := await self.queue.get()) is not None:
            yield chunk
        yield self.tail
        self.body_sent = True

    async def _run(self) -> bytes:
        p = self.provider
        resp = await p.upstream.open("POST", p.url("/v1/files"), data=self._body(),
                                     headers={"Content-Type": self.content_type}, idempotent=False)
        try:
            return await resp.read()
        finally:
            resp.release()

    def _failure(self) -> GatewayError:
        task = self.task
        if task.cancelled():
            return GatewayError(502, f"The upload to provider '{self.provider.name}' was cancelled.",
                                code="upstream_error", retryable=True)
        exc = task.exception()
        if isinstance(exc, GatewayError):
            return exc
        if exc is not None:
            log.warning("upload to %s failed: %r", self.provider.name, exc)
            return self.provider.upstream.error_from_exception(exc)
        return GatewayError(502, f"Provider '{self.provider.name}' answered before the upload was complete.",
                            code="upstream_bad_response", retryable=True)

    async def _put(self, item: bytes | None) -> None:
        if self.task.done():
            raise self._failure()
        try:
            self.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.queue.put(item))
        try:
            await asyncio.wait((put, self.task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            raise self._failure()

    async def write(self, chunk: bytes | memoryview) -> None:
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        if not chunk:
            return
        self.bytes += len(chunk)
        await self._put(chunk)

    async def complete(self) -> SinkResult:
        await self._put(None)
        # Shielded: a client gone now leaves the answer to abort(), which deletes the file.
        try:
            raw = await asyncio.shield(self.task)
        except GatewayError:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            raise self._failure() from None
        try:
            meta = orjson.loads(raw)
            file_id = meta["id"]
            if not isinstance(file_id, str) or not file_id:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise GatewayError(502, f"Provider '{self.provider.name}' answered the upload with an unreadable body.",
                               code="upstream_bad_response") from None
        self.anthropic_id = file_id
        size = meta.get("size_bytes")
        if isinstance(size, int) and size != self.bytes:
            raise GatewayError(502, f"Provider '{self.provider.name}' stored {size} bytes of a {self.bytes}-byte "
                               "upload; the file was discarded.", code="upstream_bad_response", retryable=True)
        self.finished = True
        location: dict[str, Any] = {"anthropic_id": file_id}
        if isinstance(meta.get("mime_type"), str):
            location["mime_type"] = meta["mime_type"]
        return SinkResult(bytes=self.bytes, location=location)

    async def abort(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            p = self.provider
            if self.anthropic_id is not None:
                p.spawn(p.delete_upstream(self.anthropic_id))
            elif not self.task.done():
                if self.body_sent:
                    # Anthropic has the whole body: it will create the file; learn its id, then delete it.
                    p.spawn(p.reap_upload(self.task))
                else:
                    self.task.cancel()
            elif not self.task.cancelled() and self.task.exception() is None:
                p.spawn(p.reap_upload(self.task))
        except Exception:  # pragma: no cover - abort never raises
            log.exception("aborting an upload to %s", self.provider.name)


class BatchTranslatingSink:
    """Translates OpenAI batch lines to Message Batches rows while they arrive, onto disk."""

    def __init__(self, translator: "BatchTranslator", local: LocalFileSink, ids_path: str) -> None:
        self.translator = translator
        self.local = local
        self.ids_path = ids_path

    @staticmethod
    def _invalid(err: BatchLineError) -> GatewayError:
        return GatewayError(400, f"Invalid batch file for Anthropic: {err.sentence()}",
                            param="file", code="invalid_batch_file")

    async def write(self, chunk: bytes | memoryview) -> None:
        try:
            out = self.translator.feed(chunk)
        except BatchLineError as err:
            raise self._invalid(err) from None
        if out:
            await self.local.write(out)

    async def complete(self) -> SinkResult:
        try:
            out = self.translator.close()
        except BatchLineError as err:
            raise self._invalid(err) from None
        if out:
            await self.local.write(out)
        location: dict[str, Any] = {"kind": BATCH_KIND}
        if self.translator.ids:
            # custom_ids Anthropic cannot carry were rewritten: keep the way back.
            tmp = self.ids_path + ".partial"
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps(self.translator.ids))
            os.replace(tmp, self.ids_path)
            location["custom_ids"] = os.path.basename(self.ids_path)
        try:
            result = await self.local.complete()
        except BaseException:
            _unlink(self.ids_path)
            raise
        location["path"] = result.location["path"]
        return SinkResult(bytes=result.bytes, location=location)

    async def abort(self) -> None:
        await self.local.abort()
        _unlink(self.ids_path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# =========================================================================== provider


_DIALECT = AnthropicDialect()


class AnthropicProvider(Provider):
    type = "anthropic"
    passthrough = False
    serves_unseen_ids = False
    serves_responses = True          # through the bridge (proxy/bridge): Messages API
    batch_endpoints = frozenset(BATCH_ENDPOINTS)  # run by proxy/providers/anthropic_batches.py

    def __init__(self, config: AnthropicConfig) -> None:
        super().__init__(config)
        base = config.api_base
        self.base = base[:-3] if base.endswith("/v1") else base
        self.root = config.path      # absolute: resolved against server.data_dir at load
        self.partial_dir = os.path.join(self.root, ".partial")
        self.default_model = config.model
        headers = {
            "x-api-key": config.api_key,
            "anthropic-version": config.anthropic_version,
            "Accept": "application/json",
            "Accept-Encoding": "identity",   # the pooled session does not decompress
        }
        if config.anthropic_beta:
            headers["anthropic-beta"] = config.anthropic_beta
        if config.anthropic_version == "2023-06-01" and FILES_BETA not in config.anthropic_beta.replace(" ", "").split(","):
            log.warning("provider %s: anthropic_beta does not include %s, which the Files API needs under "
                        "anthropic-version 2023-06-01", config.name, FILES_BETA)
        headers.update(config.headers)
        self.upstream = AnthropicUpstream(
            provider=config.name, headers=headers, timeouts=config.timeouts, max_retries=config.max_retries,
            secrets=[config.api_key], proxy=config.proxy, tls=config.tls,
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._batches: "AnthropicBatchRunner | None" = None

    def url(self, path: str) -> str:
        return self.base + path

    async def start(self) -> None:
        prepare_partial_dir(self.partial_dir)
        await self.upstream.start()

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        await self.upstream.close()

    # -- batches (proxy/providers/anthropic_batches.py) --------------------------------------
    def batch_runner(self) -> "AnthropicBatchRunner":
        if self._batches is None:
            from .anthropic_batches import AnthropicBatchRunner

            self._batches = AnthropicBatchRunner(self)
        return self._batches

    # -- crash leftovers (batch files in .partial/) ---------------------------------------
    async def cleanup_partial(self, location: dict[str, Any]) -> None:
        remove_partials(self.partial_dir, str(location.get("file_id") or ""))

    async def sweep_partials(self, owned: list[dict[str, Any]], max_age: float) -> int:
        return sweep_partial_dir(self.partial_dir, {str(loc.get("file_id")) for loc in owned})

    # -- background clean-up -------------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def delete_upstream(self, anthropic_id: str) -> None:
        """Delete a file at Anthropic; never raises (used for clean-up)."""
        try:
            await self.upstream.request("DELETE", self.url(f"/v1/files/{anthropic_id}"))
        except GatewayError as err:
            if err.status != 404:
                log.warning("could not delete %s from %s: %s", anthropic_id, self.name, err.message)
        except Exception:
            log.exception("could not delete %s from %s", anthropic_id, self.name)

    async def reap_upload(self, task: "asyncio.Task[bytes]") -> None:
        """An abandoned upload that Anthropic may still complete: delete what it creates."""
        try:
            raw = await asyncio.wait_for(asyncio.shield(task), _ABORT_ANSWER_WAIT)
            file_id = orjson.loads(raw).get("id")
        except asyncio.TimeoutError:
            task.cancel()
            log.warning("an abandoned upload to %s did not answer; it may have left a file", self.name)
            return
        except Exception:
            return   # the upload failed: nothing was created
        if isinstance(file_id, str) and file_id:
            await self.delete_upstream(file_id)

    # -- uploads -------------------------------------------------------------------------
    async def open_sink(self, ex: "Exchange", file_id: str) -> Any:
        if ex.purpose == "batch":
            translator = anthropic_batch_translator(default_model=self.default_model,
                                                    max_lines=ANTHROPIC_MAX_BATCH_REQUESTS)
            local = LocalFileSink(os.path.join(self.partial_dir, file_id), os.path.join(self.root, file_id))
            return BatchTranslatingSink(translator, local, os.path.join(self.root, file_id + ".ids.json"))
        return AnthropicUploadSink(self, ex.filename or "upload")

    # -- files ---------------------------------------------------------------------------
    @staticmethod
    def _is_batch(rec: "FileRecord") -> bool:
        return rec.location.get("kind") == BATCH_KIND

    def _local_path(self, rec: "FileRecord") -> str:
        return os.path.join(self.root, rec.location.get("path") or rec.id)

    @staticmethod
    def _anthropic_id(rec: "FileRecord") -> str:
        aid = rec.location.get("anthropic_id") or rec.upstream_id
        if not aid:
            raise _file_not_found(rec.id)
        return aid

    async def _metadata(self, rec: "FileRecord") -> dict[str, Any]:
        try:
            _, body = await self.upstream.request("GET", self.url(f"/v1/files/{self._anthropic_id(rec)}"))
        except GatewayError as err:
            if err.status == 404:
                raise _file_not_found(rec.id) from None
            raise
        try:
            meta = orjson.loads(body)
            if not isinstance(meta, dict):
                raise ValueError
        except ValueError:
            raise GatewayError(502, f"Provider '{self.name}' answered with an unreadable file object.",
                               code="upstream_bad_response") from None
        return meta

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        if rec is None:
            raise _file_not_found(file_id)
        if self._is_batch(rec):
            if not os.path.exists(self._local_path(rec)):
                raise _file_not_found(file_id)
            return orjson.dumps(rec.to_openai())
        meta = await self._metadata(rec)
        size = meta.get("size_bytes")
        expires_at = rec.expires_at if rec.expires_at is not None else rfc3339_to_unix(meta.get("expires_at"))
        return orjson.dumps({
            "id": rec.id,
            "object": "file",
            "bytes": size if isinstance(size, int) and not isinstance(size, bool) else rec.bytes,
            "created_at": rfc3339_to_unix(meta.get("created_at")) or rec.created_at,
            "expires_at": expires_at,
            "filename": meta.get("filename") or rec.filename,
            "purpose": rec.purpose,
            "status": "processed",
            "status_details": None,
        })

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        if rec is None:
            raise _file_not_found(file_id)
        if self._is_batch(rec):
            _unlink(self._local_path(rec))
            if rec.location.get("custom_ids"):
                _unlink(os.path.join(self.root, rec.location["custom_ids"]))
        else:
            try:
                await self.upstream.request("DELETE", self.url(f"/v1/files/{self._anthropic_id(rec)}"))
            except GatewayError as err:
                if err.status != 404:   # already gone at Anthropic: the record is all that is left
                    raise
        return orjson.dumps({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        if rec is None:
            raise _file_not_found(file_id)
        if self._is_batch(rec):
            path = self._local_path(rec)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise _file_not_found(file_id) from None
            return Download(content_type="application/octet-stream", length=size, path=path)
        meta = await self._metadata(rec)
        if meta.get("downloadable") is not True:
            raise GatewayError(400, NOT_DOWNLOADABLE.format(id=file_id), param="file_id",
                               code="file_not_downloadable")
        try:
            return await self.upstream.download(self.url(f"/v1/files/{self._anthropic_id(rec)}/content"),
                                                headers={"Accept": "application/binary"})
        except GatewayError as err:
            if err.status == 404:
                raise _file_not_found(file_id) from None
            raise

    # -- responses, through the bridge (proxy/bridge/anthropic.py translates) ------------------
    def responses_dialect(self) -> AnthropicDialect:
        return _DIALECT

    async def bridge_call(self, ex: "Exchange", call: "ProviderCall") -> Any:
        try:
            _, data = await self.upstream.request(
                "POST", self.url(call.path), body=orjson.dumps(call.body),
                headers={"Content-Type": "application/json", **call.extra_headers}, idempotent=False)
        except GatewayError as err:
            raise gateway_error_for(err) from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GatewayError(502, f"Provider '{self.name}' answered with a body that is not JSON.",
                               code="upstream_bad_response") from None

    async def bridge_stream(self, ex: "Exchange", call: "ProviderCall") -> AsyncGenerator[Any, None]:
        try:
            st = await self.upstream.stream(
                "POST", self.url(call.path), body=orjson.dumps(call.body),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream", **call.extra_headers},
                idempotent=False)
        except GatewayError as err:
            raise gateway_error_for(err) from None
        return json_events(st, self.upstream)

    def bridge_file_id(self, rec: "FileRecord") -> str | None:
        if self._is_batch(rec):
            return None     # a translated batch file lives on the gateway's disk, not at Anthropic
        aid = rec.location.get("anthropic_id") or rec.upstream_id
        return aid if isinstance(aid, str) else None
