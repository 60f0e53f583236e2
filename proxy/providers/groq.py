"""Groq: OpenAI-compatible pass-through (docs/provider-facts.md §6), with Groq's differences closed.

* Base ``https://api.groq.com/openai/v1``, ``Authorization: Bearer <gsk_… key>``; the raw
  multipart body is teed upstream unchanged, exactly as for OpenAI.
* ``purpose`` must be ``batch`` (Groq's only upload purpose). The gateway refuses any other
  purpose with a 400 naming it **before anything goes upstream** (:class:`GroqUploadRules`,
  this provider's upload rules): the core's tee opens the upstream request only once the file
  starts with its purpose known — a purpose sent after the file (curl's order) is waited for
  with the file held on the gateway's disk (proxy/field_order.py).
* Size: Groq takes batch input files up to 100 MB (10^8 bytes, SDK docstring). The provider's
  ``max_file_size`` defaults to that when the config leaves it unset, so the ``size_limit``
  filter enforces ``min(limits.max_file_size, limits.max_batch_file_size, 100 MB)`` from
  ``Content-Length`` and from the running byte count, exactly as for every other limit. An
  explicit ``max_file_size`` in the config wins (lower it freely; raising it above 100 MB is
  logged as a warning, for accounts whose limit Groq has raised).
* File objects lack ``status``/``expires_at`` (and every field is optional): they are filled
  in (``status: "processed"``, ``expires_at: null``, ``object: "file"``).
* ``GET /files`` returns every file at once, without query parameters or cursors: the
  gateway filters by ``purpose`` and paginates (``limit``/``order``/``after``,
  ``has_more``/``first_id``/``last_id``) like OpenAI.
* Groq has no file expiry, so a file whose gateway ``expires_at`` passes is deleted upstream
  by the gateway's sweeper.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from filters.base import Filter

from ..errors import GatewayError
from ..units import human_size
from .configs import GROQ_MAX_FILE_SIZE, GroqConfig
from .openai import OpenAIProvider

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..store.base import FileRecord

log = logging.getLogger("sluicegate.groq")

GROQ_PURPOSES = ("batch",)
# groq-python BatchCreateParams (docs/provider-facts.md §6.1): one endpoint; windows 24h … 7d
GROQ_BATCH_ENDPOINTS = frozenset({"/v1/chat/completions"})
_WINDOW = re.compile(r"([1-9][0-9]{0,3})([hd])")


class GroqUploadRules(Filter):
    """Groq's rule on an upload: its only purpose is ``batch``."""

    name = "groq_upload_rules"

    def __init__(self, provider_name: str) -> None:  # a per-exchange filter: needs no gateway
        self.provider_name = provider_name

    def on_file_start(self, ex: "Exchange") -> None:
        if ex.purpose not in GROQ_PURPOSES:
            raise GatewayError(
                400, f"Provider '{self.provider_name}' (Groq) accepts only purpose 'batch' for file uploads; "
                f"got '{(ex.purpose or '')[:64]}'.", param="purpose", code="invalid_purpose")


class GroqProvider(OpenAIProvider):
    type = "groq"
    forwards_uploads = False   # Groq has no Uploads API: the gateway assembles (proxy/uploads_api.py)

    config: GroqConfig
    batch_endpoints = GROQ_BATCH_ENDPOINTS
    batch_list_cursors = False   # GET /batches takes no query parameters (groq-python)

    def __init__(self, config: GroqConfig) -> None:
        # max_file_size defaults to GROQ_MAX_FILE_SIZE (GroqConfig); a higher one is the operator's word
        if config.max_file_size is not None and config.max_file_size > GROQ_MAX_FILE_SIZE:
            log.warning("provider %s: max_file_size %s is above Groq's documented %s limit",
                        config.name, human_size(config.max_file_size), human_size(GROQ_MAX_FILE_SIZE))
        super().__init__(config)

    def auth_headers(self) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.config.api_key}",
             # The session does not decompress; JSON answers are parsed here.
             "Accept-Encoding": "identity"}
        h.update(self.config.headers)
        return h

    def accepts_completion_window(self, value: str) -> bool:
        m = _WINDOW.fullmatch(value)
        return m is not None and 24 <= int(m.group(1)) * (24 if m.group(2) == "d" else 1) <= 168

    # -- uploads -------------------------------------------------------------------------
    def upload_rules(self, ex: "Exchange") -> GroqUploadRules:
        return GroqUploadRules(self.name)

    # -- shapes --------------------------------------------------------------------------
    def file_object(self, body: bytes) -> bytes:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(502, f"Provider '{self.name}' answered with an unreadable body.",
                               code="upstream_bad_response") from None
        if not isinstance(obj, dict):
            raise GatewayError(502, f"Provider '{self.name}' answered with an unreadable body.",
                               code="upstream_bad_response")
        return orjson.dumps(normalise_file(obj))

    def file_list(self, body: bytes, query: dict[str, str]) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("data", []), list):
            raise GatewayError(502, f"Provider '{self.name}' answered the file list with an unreadable body.",
                               code="upstream_bad_response")
        items = [normalise_file(f) for f in data.get("data") or [] if isinstance(f, dict)]
        return orjson.dumps(paginate(items, query))

    # -- files ---------------------------------------------------------------------------
    async def list_files(self, ex: "Exchange", query: dict[str, str]) -> bytes:
        # Groq takes no query parameters on the list; everything is applied here.
        _, body = await self.upstream.request("GET", self.url("/files"))
        return self.file_list(body, query)

    async def delete_file(self, ex: "Exchange | None", rec: "FileRecord | None", file_id: str) -> bytes:
        upstream_id = (rec.upstream_id or rec.id) if rec is not None else file_id
        await self.upstream.request("DELETE", self.url(f"/files/{upstream_id}"))
        return orjson.dumps({"id": file_id, "object": "file", "deleted": True})

    async def expire_file(self, rec: "FileRecord") -> None:
        """Groq files never expire by themselves: the gateway deletes them when due."""
        await self.delete_file(None, rec, rec.id)


def normalise_file(f: dict[str, Any]) -> dict[str, Any]:
    """A Groq File object in OpenAI's shape (every Groq field is optional)."""
    out = dict(f)
    out["object"] = "file"
    out["bytes"] = int(f.get("bytes") or 0)
    created = f.get("created_at")
    out["created_at"] = int(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else 0
    out["filename"] = f.get("filename") or "upload"
    out["purpose"] = f.get("purpose") or "batch"
    out.setdefault("status", "processed")
    out.setdefault("expires_at", None)
    out.setdefault("status_details", None)
    return out


def paginate(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """OpenAI's list page over a complete list (Groq's, oldest first): ``purpose`` filter,
    ``order`` (newest first by default), ``after`` cursor (an unknown cursor gives an empty
    page), ``limit``."""
    purpose = query.get("purpose")
    if purpose:
        items = [f for f in items if f.get("purpose") == purpose]
    # Stable: files created in the same second keep Groq's (upload) order.
    items = sorted(items, key=lambda f: f.get("created_at") or 0)
    if query.get("order") != "asc":
        items.reverse()
    after = query.get("after")
    if after:
        ids = [f.get("id") for f in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(query.get("limit") or 10_000)
    page = items[:limit]
    return {
        "object": "list", "data": page,
        "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
