"""Azure OpenAI: pass-through with Azure's URL scheme, auth header and shapes.

Two URL families (docs/provider-facts.md §4.1):

* classic — ``{api_base}/openai/files?api-version=2024-10-21``; upload answers 201 with
  ``status: "pending"``; list has only ``object`` and ``data``;
* v1 — ``{api_base}/openai/v1/files`` (``api_version: v1`` or ``preview``), OpenAI's shapes.

Auth is the ``api-key`` header. Azure-specific File fields are normalised to OpenAI's
(status enum, nullable ``bytes``), and the list is paginated by the gateway when the classic
family returns everything at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .configs import AzureConfig
from .openai import OpenAIProvider

if TYPE_CHECKING:
    from ..exchange import Exchange

# Azure Global Batch runs these (docs/provider-facts.md §4.5)
AZURE_BATCH_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/responses"})

_STATUS = {"uploaded": "uploaded", "pending": "uploaded", "running": "uploaded",
           "processed": "processed", "error": "error"}


class AzureProvider(OpenAIProvider):
    type = "azure"

    config: AzureConfig
    batch_endpoints = AZURE_BATCH_ENDPOINTS

    def __init__(self, config: AzureConfig) -> None:
        super().__init__(config)
        root = config.api_base
        if root.endswith("/openai/v1"):
            root = root[: -len("/openai/v1")]
        elif root.endswith("/openai"):
            root = root[: -len("/openai")]
        self.v1 = config.api_version in ("v1", "preview")
        self.base = root + ("/openai/v1" if self.v1 else "/openai")
        # v1 takes no api-version except "preview"; classic needs it on every call.
        self.api_version = None if config.api_version == "v1" else config.api_version

    def auth_headers(self) -> dict[str, str]:
        h = {"api-key": self.config.api_key}
        h.update(self.config.headers)
        return h

    def params(self, query: Any = None) -> Any:
        if self.api_version is None:
            return query
        out = dict(query or {})
        out["api-version"] = self.api_version
        return out

    def raw_url(self, path: str, query_string: str) -> str:
        if self.api_version is not None:
            extra = "api-version=" + self.api_version
            query_string = f"{query_string}&{extra}" if query_string else extra
        return super().raw_url(path, query_string)

    def prepare_response_body(self, body: dict[str, Any]) -> bool:
        """Azure's ``model`` is the deployment name: map it through ``deployments``."""
        model = body.get("model")
        deployment = self.config.deployments.get(model) if isinstance(model, str) else None
        if deployment and deployment != model:
            body["model"] = deployment
            return True
        return False

    def file_object(self, body: bytes) -> bytes:
        return orjson.dumps(normalise_file(orjson.loads(body)))

    def upload_object(self, body: bytes) -> bytes:
        upload = orjson.loads(body)
        if isinstance(upload, dict) and isinstance(upload.get("file"), dict):
            upload["file"] = normalise_file(upload["file"])
            return orjson.dumps(upload)
        return body

    def file_list(self, body: bytes, query: dict[str, str]) -> bytes:
        data = orjson.loads(body)
        items = [normalise_file(f) for f in data.get("data") or []]
        if "has_more" in data:
            # v1 family paginates itself.
            return orjson.dumps({**data, "data": items})
        # Classic family: everything in one answer; paginate here as OpenAI does.
        items.sort(key=lambda f: (f.get("created_at") or 0, f.get("id") or ""), reverse=query.get("order") != "asc")
        after = query.get("after")
        if after:
            ids = [f.get("id") for f in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int(query.get("limit") or 10000)
        page = items[:limit]
        return orjson.dumps({
            "object": "list", "data": page,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        })

    async def list_files(self, ex: "Exchange", query: dict[str, str]) -> bytes:
        # Classic takes only ``purpose``; cursors and limits are applied here.
        upstream_query = query if self.v1 else {k: v for k, v in query.items() if k == "purpose"}
        _, body = await self.upstream.request("GET", self.url("/files"), params=self.params(upstream_query))
        return self.file_list(body, query)


def normalise_file(f: dict[str, Any]) -> dict[str, Any]:
    """An Azure File object in OpenAI's shape."""
    out = dict(f)
    out.pop("statusDetails", None)
    out["object"] = "file"
    out["bytes"] = int(f.get("bytes") or 0)
    created = f.get("created_at")
    out["created_at"] = int(created) if isinstance(created, (int, float)) else 0
    out["status"] = _STATUS.get(f.get("status") or "processed", "processed")
    out.setdefault("expires_at", None)
    out.setdefault("status_details", None)
    return out
