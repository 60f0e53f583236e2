"""provider_route: which provider serves this exchange.

Order: the owner record of an id the gateway has seen (the header is then optional) → the
``x-tfy-provider-name`` header → ``custom-llm-provider`` (a configured name first, else a
provider *type* that exactly one configured provider has) → a ``provider/model`` prefix on a
Responses ``model`` → ``default_provider``.

Tenancy lives here too: another tenant's id is a 404, exactly as an id that does not exist.
Ids the gateway never saw reach a provider only with auth off, for ``admin`` keys, or on
providers marked ``shared``; for everyone else they are a 404 and nothing goes upstream.
The ids inside a request body (:mod:`proxy.references`: ``previous_response_id``, an input
file's ``file_id``, ``vector_store_ids``…) get the same check as a path id, with the 404
naming the field; a recorded one also routes the request when nothing else names a provider.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping

from proxy.errors import GatewayError
from proxy.ids import is_wellformed_id
from proxy.references import RECORDED_KINDS, Reference, body_references
from proxy.store.base import BatchRecord, FileRecord, ResponseRecord

from .base import Filter

if TYPE_CHECKING:
    from proxy.config import AuthConfig
    from proxy.exchange import Exchange, Tenant
    from proxy.providers.base import Provider
    from proxy.store.base import Store

#: A body reference with the store's record of it (None: the gateway never recorded it).
Found = list[tuple[Reference, "FileRecord | ResponseRecord | None"]]

PROVIDER_HEADER = "x-tfy-provider-name"
LITELLM_HEADER = "custom-llm-provider"


class ProviderRouteFilter(Filter):
    name = "provider_route"

    def __init__(self, providers: Mapping[str, "Provider"], default_provider: str, auth: "AuthConfig",
                 store: "Store") -> None:
        self.providers = providers
        self.store = store
        self.by_type: dict[str, list[Provider]] = {}
        for p in self.providers.values():
            self.by_type.setdefault(p.type, []).append(p)
        self.default = self.providers[default_provider]
        self.auth_enabled = auth.enabled

    def named(self, ex: "Exchange") -> "Provider | None":
        headers = ex.request.headers
        name = headers.get(PROVIDER_HEADER)
        if name:
            p = self.providers.get(name)
            if p is None:
                raise self._unknown(name, PROVIDER_HEADER)
            return p
        name = headers.get(LITELLM_HEADER)
        if name:
            p = self.providers.get(name)
            if p is not None:
                return p
            same_type = self.by_type.get(name, [])
            if len(same_type) == 1:
                return same_type[0]
            if len(same_type) > 1:
                raise GatewayError(
                    400, f"{LITELLM_HEADER}: '{name}' matches several providers "
                    f"({', '.join(p.name for p in same_type)}); name one with {PROVIDER_HEADER}.",
                    param=LITELLM_HEADER, code="ambiguous_provider")
            raise self._unknown(name, LITELLM_HEADER)
        return None

    def _unknown(self, name: str, header: str) -> GatewayError:
        return GatewayError(400, f"{header}: unknown provider '{name[:64]}'. Configured: "
                            f"{', '.join(sorted(self.providers))}.", param=header, code="unknown_provider")

    def may_reach_unseen(self, ex: "Exchange", provider: "Provider") -> bool:
        return provider.serves_unseen_ids and (
            not self.auth_enabled or _tenant(ex).admin or provider.config.shared)

    async def on_request(self, ex: "Exchange") -> None:
        op = ex.operation
        if ex.object_id is not None:
            await self._route_by_id(ex)
            if ex.json_body is not None:
                # A body next to a path id (none of today's operations) is checked the same way.
                self._check_references(ex, await self._look_up(ex, body_references(op, ex.json_body)))
            return
        provider = self.named(ex)
        if provider is None and op == "responses.create":
            provider = self._from_model_prefix(ex)
        found = await self._look_up(ex, body_references(op, ex.json_body))
        if provider is None:
            provider = self._routed_by_reference(op, found)
        ex.provider = provider or self.default
        if op.startswith("responses.") and not ex.provider.serves_responses:
            raise self._unsupported(ex.provider, op)
        self._check_references(ex, found)
        if op == "files.list":
            # Pass-through listings show the provider's own files; only callers that may see
            # ids the gateway never recorded get them. Everyone else lists what they created.
            ex.list_upstream = self.may_reach_unseen(ex, ex.provider)
            ex.list_provider = provider.name if provider is not None else None
        elif op == "batches.list":
            # Batches of every provider are listed from the store; a provider's own listing
            # (batches the gateway never saw) only when a header names it, for those callers.
            ex.list_upstream = provider is not None and self.may_reach_unseen(ex, provider)

    async def _route_by_id(self, ex: "Exchange") -> None:
        object_id = ex.object_id
        assert object_id is not None  # on_request routes by id only when the path has one
        if not is_wellformed_id(object_id):
            raise self._not_found(ex)  # no provider has such an id; nothing goes upstream
        store = self.store
        if ex.operation.startswith("uploads."):
            await self._route_upload(ex, object_id)
            return
        kind = ex.operation.split(".", 1)[0]
        rec: FileRecord | ResponseRecord | BatchRecord | None
        if kind == "files":
            rec = await store.get_file(object_id)
        elif kind == "batches":
            rec = await store.get_batch(object_id)
        else:
            rec = await store.get_response(object_id)
        if rec is not None:
            if rec.tenant != _tenant(ex).name or (isinstance(rec, FileRecord) and rec.expired(time.time())):
                raise self._not_found(ex)
            provider = self.providers.get(rec.provider)
            if provider is None:
                raise GatewayError(502, f"The provider '{rec.provider}' that holds {ex.object_id} is no longer configured.",
                                   code="provider_not_configured")
            ex.provider = provider
            if isinstance(rec, FileRecord):
                ex.file_record = rec
            elif isinstance(rec, BatchRecord):
                ex.batch_record = rec
            else:
                ex.response_record = rec
            return
        provider = self.named(ex) or self.default
        if not self.may_reach_unseen(ex, provider):
            raise self._not_found(ex)
        ex.provider = provider

    async def _route_upload(self, ex: "Exchange", upload_id: str) -> None:
        """An Upload belongs to the tenant that created it: anyone else's, or an unknown one,
        is a 404 on every operation. Ids the gateway never saw go only to a pass-through
        provider, for callers that may reach unseen ids."""
        up = await self.store.get_upload(upload_id)
        if up is not None:
            if up.tenant != _tenant(ex).name:
                raise self._not_found(ex)
            provider = self.providers.get(up.provider)
            if provider is None:
                raise GatewayError(502, f"The provider '{up.provider}' that holds {upload_id} is no longer configured.",
                                   code="provider_not_configured")
            ex.provider = provider
            ex.upload_record = up
            return
        provider = self.named(ex) or self.default
        if not (provider.forwards_uploads and self.may_reach_unseen(ex, provider)):
            raise self._not_found(ex)
        ex.provider = provider

    # -- ids inside the body ------------------------------------------------------------

    async def _look_up(self, ex: "Exchange", refs: list[Reference]) -> Found:
        """Each reference with its store record (None: the gateway never recorded it). Another
        tenant's (or an expired) record is a 404 at once, exactly like a path id."""
        store = self.store
        found: Found = []
        now = time.time()
        for ref in refs:
            rec: FileRecord | ResponseRecord | None = None
            if ref.kind == "file":
                rec = await store.get_file(ref.id)
                if rec is not None and rec.expired(now):
                    raise _reference_not_found(ref)
            elif ref.kind == "response":
                rec = await store.get_response(ref.id)
            if rec is not None and rec.tenant != _tenant(ex).name:
                raise _reference_not_found(ref)
            found.append((ref, rec))
        return found

    def _routed_by_reference(self, op: str, found: Found) -> "Provider | None":
        """The provider of the first recorded id that can serve ``op`` (a recorded id routes by
        itself, like a path id), else None."""
        for _ref, rec in found:
            p = self.providers.get(rec.provider) if rec is not None else None
            if p is not None and (p.serves_responses or not op.startswith("responses.")):
                return p
        return None

    def _check_references(self, ex: "Exchange", found: Found) -> None:
        provider = ex.provider
        assert provider is not None  # routed before the references are checked
        for ref, rec in found:
            if rec is None:
                if not self.may_reach_unseen(ex, provider):
                    raise _reference_not_found(ref)
            elif rec.provider != provider.name:
                # Only the owner gets here (another tenant's id was a 404), so naming where it
                # lives reveals nothing; the other provider could only answer "not found".
                raise GatewayError(
                    400, f"{ref.param}: {_LABELS.get(ref.kind, ref.kind)} {ref.id[:128]} lives on provider "
                    f"'{rec.provider}', but this request goes to '{provider.name}'. Send it to '{rec.provider}' "
                    "(or name no provider: a recorded id routes the request by itself).",
                    param=ref.param, code="reference_on_other_provider")

    def _unsupported(self, provider: "Provider", op: str) -> GatewayError:
        serving = [f"{p.name} ({p.type})" for p in self.providers.values() if p.serves_responses]
        hint = (f"Configured providers that do: {', '.join(serving)}." if serving else
                "No configured provider does; the OpenAI-compatible types (openai, azure, groq) and anthropic do.")
        return GatewayError(400, f"Provider '{provider.name}' (type {provider.type}) does not support {op}. {hint}",
                            code="unsupported_operation")

    @staticmethod
    def _not_found(ex: "Exchange") -> GatewayError:
        if ex.operation.startswith("uploads."):
            return GatewayError(404, f"No such Upload object: {(ex.object_id or '')[:128]}", param="upload_id",
                                code="upload_not_found")
        kind = {"files": "file", "batches": "batch"}.get(ex.operation.split(".", 1)[0], "response")
        return GatewayError(404, f"No such {kind.capitalize()} object: {(ex.object_id or '')[:128]}",
                            param=f"{kind}_id", code=f"{kind}_not_found")

    def _from_model_prefix(self, ex: "Exchange") -> "Provider | None":
        body = ex.json_body
        if not isinstance(body, dict):
            return None
        model = body.get("model")
        if not isinstance(model, str) or "/" not in model:
            return None
        prefix, rest = model.split("/", 1)
        provider = self.providers.get(prefix)
        if provider is None:
            raise GatewayError(400, f"model: unknown provider prefix '{prefix[:64]}' in '{model[:128]}'. "
                               f"Configured providers: {', '.join(sorted(self.providers))}.",
                               param="model", code="unknown_provider")
        body["model"] = rest
        ex.json_changed = True
        return provider


def _tenant(ex: "Exchange") -> "Tenant":
    """Who is asking: auth runs before this filter (both are required, in that order)."""
    tenant = ex.tenant
    assert tenant is not None
    return tenant


_LABELS = {"file": "File", "response": "Response", "conversation": "Conversation", "vector_store": "VectorStore",
           "container": "Container", "prompt": "Prompt", "item": "Item", "skill": "Skill", "mcp_tunnel": "MCP tunnel"}


def _reference_not_found(ref: Reference) -> GatewayError:
    """The 404 for an id in a body: the same text as for that id in a path (nothing tells another
    tenant's id from one that does not exist); kinds the gateway never records say why."""
    label = _LABELS.get(ref.kind, ref.kind)
    message = f"No such {label} object: {ref.id[:128]}"
    if ref.kind not in RECORDED_KINDS:
        message += (f" (the gateway keeps no record of {label} ids; ids it has not seen are forwarded only "
                    "for admin keys or to providers marked shared)")
    return GatewayError(404, message, param=ref.param, code=f"{ref.kind}_not_found")
