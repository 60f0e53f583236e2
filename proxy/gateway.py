"""The gateway: config, store, providers and filter chain, and the request dispatcher."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable


from aiohttp import web

from filters import build_chain
from filters.metrics import Metrics

from . import files_api, openapi, responses_api
from .body_checks import check_body
from .errors import GatewayError
from .exchange import Exchange
from .janitor import clean_orphans
from .providers import create_provider
from .routes import Router
from .startup import StartupError, reason
from .store import open_store

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("sluicegate")

Operation = Callable[["Gateway", Exchange], Awaitable[web.StreamResponse]]

OPERATIONS: dict[str, Operation] = {
    "files.create": files_api.files_create,
    "files.list": files_api.files_list,
    "files.retrieve": files_api.files_retrieve,
    "files.delete": files_api.files_delete,
    "files.content": files_api.files_content,
    "responses.create": responses_api.responses_create,
    "responses.retrieve": responses_api.responses_retrieve,
    "responses.delete": responses_api.responses_delete,
    "responses.cancel": responses_api.responses_cancel,
    "responses.input_items": responses_api.responses_input_items,
}

# Filters the core cannot run without: who is asking, and which provider answers.
REQUIRED_FILTERS = ("auth", "provider_route")

DRAIN_RETRY_AFTER = "5"


class Gateway:
    def __init__(self, config: "Config") -> None:
        self.config = config
        self.store = open_store(config.store.url, pool_min=config.store.pool_min, pool_max=config.store.pool_max,
                                statement_timeout=config.store.statement_timeout)
        self.providers = {p.name: create_provider(p) for p in config.providers}
        self.router = Router(sorted({"/v1", config.server.base_path}))
        self.openapi_document = openapi.document_bytes(config)  # built once, served as is
        self.metrics = Metrics()
        names = list(config.filters)
        for required in reversed(REQUIRED_FILTERS):
            if required not in names:
                log.warning("filter '%s' is required; adding it to the chain", required)
                names.insert(0, required)
        self.chain = build_chain(names, self)
        self._draining = False
        self.inflight = 0
        self.ready = False
        self._sweeper: asyncio.Task | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.metrics.draining.set(int(value))  # seen by a scrape any worker answers

    async def start(self) -> None:
        """Open the store and start the providers; a failure is a :class:`StartupError` naming
        what could not start (the caller closes the gateway)."""
        try:
            await self.store.open()
        except Exception as exc:
            raise StartupError(f"cannot open store {self.config.store.masked_url}: {reason(exc)}") from exc
        for p in self.providers.values():
            try:
                await p.start()
            except Exception as exc:
                raise StartupError(f"cannot start provider {p.name} (type {p.type}): {reason(exc)}") from exc
        # What a crashed process left: partial uploads and the quota their reservations hold.
        await self.clean_orphans()
        self._sweeper = asyncio.ensure_future(self._sweep_forever())
        self.ready = True

    async def sweep_expired(self) -> int:
        """Delete files past their ``expires_at``. Each row is claimed first (``delete_file``
        hands it to one caller, in any worker or replica), so sweepers running everywhere never
        expire one file twice; the claimed file's bytes are then removed, and if that fails the
        row is put back (its bytes are still stored) for a later sweep."""
        removed = 0
        for candidate in await self.store.expired_files(int(time.time())):
            rec = await self.store.delete_file(candidate.id)
            if rec is None:  # another sweeper (or a client's delete) took it
                continue
            provider = self.providers.get(rec.provider)
            try:
                if provider is not None:
                    await provider.expire_file(rec)
            except GatewayError as err:
                if err.status != 404:
                    log.warning("could not expire %s on %s: %s", rec.id, rec.provider, err.message)
                    await self.store.restore_file(rec)
                    continue
            except Exception:
                log.exception("could not expire %s on %s", rec.id, rec.provider)
                await self.store.restore_file(rec)
                continue
            except BaseException:  # cancelled (shutdown): the file stays, for the next sweep
                await self.store.restore_file(rec)
                raise
            removed += 1
        return removed

    async def clean_orphans(self) -> None:
        try:
            done = await clean_orphans(self.store, self.providers, self.config.server.orphan_upload_age)
        except Exception:
            log.exception("partial-upload clean-up failed")
            return
        if done:
            log.info("removed %d abandoned upload reservation(s) and %d unowned partial upload(s)",
                     done.reservations, done.partials)

    async def _sweep_forever(self) -> None:
        interval = self.config.server.expiry_sweep_interval
        while True:
            await asyncio.sleep(interval)
            try:
                n = await self.sweep_expired()
                if n:
                    log.info("removed %d expired file(s)", n)
            except Exception:  # pragma: no cover - keep sweeping
                log.exception("expiry sweep failed")
            await self.clean_orphans()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        for p in self.providers.values():
            try:
                await p.close()
            except Exception:  # pragma: no cover
                log.exception("closing provider %s", p.name)
        await self.store.close()

    # -- responses -----------------------------------------------------------------------

    def before_send(self, ex: Exchange, resp: web.StreamResponse) -> None:
        """Response-side filters run once the status is known, before headers go out."""
        ex.status = resp.status
        if ex.first_byte_at is None:
            ex.first_byte_at = time.perf_counter()
        self.chain.on_response(ex)
        if ex.response_headers:
            resp.headers.update(ex.response_headers)

    def json_response(self, ex: Exchange, body: bytes, status: int = 200) -> web.Response:
        resp = web.Response(body=body, status=status, content_type="application/json")
        self.before_send(ex, resp)
        return resp

    @staticmethod
    def error_response(err: GatewayError) -> web.Response:
        return web.Response(body=err.body(), status=err.status, headers=err.response_headers())

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            op, object_id = self.router.match(request.method, request.path)
        except GatewayError as err:
            return self.error_response(err)
        if op.startswith("admin."):
            return self.admin(op)
        if self.draining:
            return self.error_response(GatewayError(
                503, "The gateway is shutting down; retry shortly.", code="draining", retryable=True,
                headers={"Retry-After": DRAIN_RETRY_AFTER}))
        ex = Exchange(request, op, object_id)
        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            try:
                if op == "responses.create":
                    await responses_api.read_json_body(ex, self.config.limits.max_json_body)
                    check_body(op, ex.extra["json"])
                await self.chain.on_request(ex)
                resp = await OPERATIONS[op](self, ex)
            except GatewayError as err:
                resp = self._failed(ex, err)
            except Exception:
                log.exception("unhandled error in %s", op)
                resp = self._failed(ex, GatewayError(500, "The gateway failed to handle the request.",
                                                     code="internal_error", retryable=True))
            return resp
        except asyncio.CancelledError:
            ex.status = ex.status or 499  # the client went away (nginx's "client closed request")
            raise
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
            ex.ended = time.perf_counter()
            await self.chain.on_exchange_end(ex)

    def _failed(self, ex: Exchange, err: GatewayError) -> web.Response:
        ex.error = err.message
        ex.error_code = err.code or err.type
        resp = self.error_response(err)
        self.before_send(ex, resp)
        return resp

    def admin(self, op: str) -> web.Response:
        if op == "admin.healthz":
            return web.Response(body=b'{"status":"ok"}', content_type="application/json")
        if op == "admin.readyz":
            if self.draining or not self.ready:
                return web.Response(status=503, body=b'{"status":"draining"}', content_type="application/json",
                                    headers={"Retry-After": DRAIN_RETRY_AFTER})
            return web.Response(body=b'{"status":"ready"}', content_type="application/json")
        if op == "admin.openapi":
            return web.Response(body=self.openapi_document, content_type="application/json")
        # Not counted in the metrics (admin paths never are): all workers' samples, merged.
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})


