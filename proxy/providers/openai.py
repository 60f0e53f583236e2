"""OpenAI: pass-through. The client's bytes go upstream unchanged, the gateway injects the key."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson

from ..errors import GatewayError
from .base import Download, Provider, UploadResult
from .configs import HttpProviderConfig, OpenAIConfig
from .headers import forward_headers
from .upstream import Upstream

if TYPE_CHECKING:
    from .h1 import H1Stream
    from ..exchange import Exchange
    from ..store.base import FileRecord


# openai-python BatchCreateParams.endpoint (docs/provider-facts.md §1.9)
OPENAI_BATCH_ENDPOINTS = frozenset({
    "/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
    "/v1/images/generations", "/v1/images/edits", "/v1/videos"})


class OpenAIProvider(Provider):
    type = "openai"
    passthrough = True
    forwards_uploads = True        # azure too (its own paths); not groq, which has no Uploads API
    serves_unseen_ids = True
    serves_responses = True        # azure and groq inherit it

    config: HttpProviderConfig  # azure and groq narrow it to their own model

    def __init__(self, config: HttpProviderConfig) -> None:
        super().__init__(config)
        self.base = config.api_base          # without a trailing "/" (config_values.to_url)
        self.upstream = Upstream(
            provider=config.name,
            headers=self.auth_headers(),
            timeouts=config.timeouts,
            max_retries=config.max_retries,
            secrets=[config.api_key],
            proxy=config.proxy,
            tls=config.tls,
        )

    def auth_headers(self) -> dict[str, str]:
        cfg = self.config
        assert isinstance(cfg, OpenAIConfig)  # azure and groq have their own auth_headers
        h = {"Authorization": f"Bearer {cfg.api_key}"}
        if cfg.organization:
            h["OpenAI-Organization"] = cfg.organization
        if cfg.project:
            h["OpenAI-Project"] = cfg.project
        h.update(cfg.headers)
        return h

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    # -- URL scheme (Azure overrides) ----------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def params(self, query: Any = None) -> Any:
        return query

    def raw_url(self, path: str, query_string: str) -> str:
        """A URL whose query string reaches the upstream exactly as the client wrote it
        (``include%5B%5D=…`` stays bracketed and encoded): a plain string, as :meth:`url`'s, for
        the gateway's own HTTP/1.1 client (:meth:`Upstream.request`/``stream``), which splits
        it and sends the target as it is. (A ``yarl.URL`` of it cost ~1 µs per call for the same
        bytes; issue 10.)"""
        qs = query_string
        return self.url(path) + "?" + qs if qs else self.url(path)

    # -- response shape (Azure overrides) ------------------------------------------------
    def file_object(self, body: bytes) -> bytes:
        return body

    def file_list(self, body: bytes, query: dict[str, str]) -> bytes:
        return body

    # -- files ---------------------------------------------------------------------------
    async def expire_file(self, rec: "FileRecord") -> None:
        """The provider expires its own files (``expires_after`` was forwarded to it)."""

    async def upload_passthrough(
        self, ex: "Exchange", body: AsyncIterator[bytes], content_type: str
    ) -> UploadResult:
        headers = forward_headers(ex.request.headers)
        headers["Content-Type"] = content_type
        if ex.content_length is not None:
            # The tee forwards the client's bytes unchanged, so its length is the upstream's.
            headers["Content-Length"] = str(ex.content_length)
        resp = await self.upstream.open("POST", self.url("/files"), params=self.params(), data=body,
                                        headers=headers, idempotent=False)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        try:
            obj = orjson.loads(self.file_object(raw))
            if not isinstance(obj, dict) or not obj.get("id"):
                raise ValueError
        except ValueError:
            raise GatewayError(502, f"Provider '{self.name}' answered the upload with an unreadable body.",
                               code="upstream_bad_response") from None
        return UploadResult(file=obj)

    # -- uploads (docs/provider-facts.md §1.7; Azure: the same paths under its base, §4.1) ---
    async def uploads_call(self, ex: "Exchange", suffix: str, body: bytes | None) -> bytes:
        headers = forward_headers(ex.request.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        # Each call changes upstream state (a new upload, a completed file): never sent twice.
        _, data = await self.upstream.request("POST", self.url("/uploads" + suffix), params=self.params(),
                                                 body=body, headers=headers, idempotent=False)
        return self.upload_object(data)

    async def upload_part_passthrough(self, ex: "Exchange", upload_id: str, body: AsyncIterator[bytes],
                                      content_type: str) -> bytes:
        headers = forward_headers(ex.request.headers)
        headers["Content-Type"] = content_type
        if ex.content_length is not None:
            headers["Content-Length"] = str(ex.content_length)
        resp = await self.upstream.open("POST", self.url(f"/uploads/{upload_id}/parts"), params=self.params(),
                                        data=body, headers=headers, idempotent=False)
        try:
            return await resp.read()
        finally:
            resp.release()

    def upload_object(self, body: bytes) -> bytes:
        """An Upload as the client gets it (Azure normalises its nested File)."""
        return body

    async def list_files(self, ex: "Exchange", query: dict[str, str]) -> bytes:
        _, body = await self.upstream.request("GET", self.url("/files"), params=self.params(query),
                                                 headers=forward_headers(ex.request.headers))
        return self.file_list(body, query)

    async def retrieve_file(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> bytes:
        _, body = await self.upstream.request("GET", self.url(f"/files/{_upstream_id(rec, file_id)}"),
                                                 params=self.params(), headers=forward_headers(ex.request.headers))
        return self.file_object(body)

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        assert ex is not None  # only a client's delete: the provider expires its files (expire_file)
        _, body = await self.upstream.request("DELETE", self.url(f"/files/{_upstream_id(rec, file_id)}"),
                                                 params=self.params(), headers=forward_headers(ex.request.headers))
        return body

    async def file_content(self, ex: "Exchange", rec: "FileRecord | None", file_id: str) -> Download:
        return await self.upstream.download(self.url(f"/files/{_upstream_id(rec, file_id)}/content"),
                                            params=self.params(), headers=forward_headers(ex.request.headers))


    # -- batches -------------------------------------------------------------------------
    batch_endpoints = OPENAI_BATCH_ENDPOINTS

    async def call_batches(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str,
    ) -> tuple[int, bytes]:
        headers = forward_headers(ex.request.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, data = await self.upstream.request(
            method, self.raw_url("/batches" + suffix, query), body=body, headers=headers,
            # create and cancel change state upstream: never sent twice
            idempotent=method == "GET")
        return status, data

    # -- responses -----------------------------------------------------------------------
    async def call_responses(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str,
    ) -> tuple[int, bytes]:
        headers = forward_headers(ex.request.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, data = await self.upstream.request(
            method, self.raw_url("/responses" + suffix, query), body=body, headers=headers,
            # create and cancel may have started work upstream: never sent twice
            idempotent=method in ("GET", "DELETE"))
        return status, data

    async def open_responses(
        self, ex: "Exchange", method: str, suffix: str, *, body: bytes | None, query: str, stream: bool,
    ) -> "H1Stream":
        headers = forward_headers(ex.request.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        # A stream may legitimately run for minutes: timeouts.read bounds the gap between events.
        return await self.upstream.stream(
            method, self.raw_url("/responses" + suffix, query), body=body, headers=headers,
            idempotent=method in ("GET", "DELETE"),
        )

def _upstream_id(rec: "FileRecord | None", file_id: str) -> str:
    return (rec.upstream_id or rec.id) if rec is not None else file_id

