"""The gateway's lifecycle: the store, the providers, the expiry sweeper and the orphan janitor,
draining and readiness, the admin endpoints; and, per request, the router's verdict handed to
the exchange :class:`~proxy.pipeline.Pipeline` it builds (which runs everything else)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from filters import build_chain_factory
from filters.metrics import Metrics

from . import openapi
from .batch_files import results_of
from .bytes_response import BytesResponse
from .context import error_response
from .errors import GatewayError
from .idle_poll import IdlePoller
from .janitor import clean_orphans
from .upload_expiry import sweep_uploads
from .pipeline import Pipeline
from .providers import create_provider
from .routes import Router
from .startup import StartupError, reason
from .store import open_store

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("sluicegate")

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
        chains = build_chain_factory(config.filters, auth=config.auth, limits=config.limits,
                                     default_provider=config.default_provider, providers=self.providers,
                                     store=self.store, metrics=self.metrics)
        self.pipeline = Pipeline(chains, self.store, config.limits, data_dir=config.server.data_dir,
                                 providers=self.providers)
        self._draining = False
        self.inflight = 0
        self._inflight_pending = False  # a write of the in-flight gauge is scheduled
        self.ready = False
        self._sweeper: asyncio.Task[None] | None = None
        self.poller = IdlePoller(config.server.idle_poll)

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
        await self.sweep_uploads()
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
                # A gateway-run batch's results file is only a record: nothing to remove.
                if provider is not None and results_of(rec) is None:
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

    async def sweep_uploads(self) -> None:
        """Expire pending Uploads (``/v1/uploads``) with their parts; remove crash leftovers."""
        try:
            n = await sweep_uploads(self.store, self.providers, self.config.server.data_dir)
        except Exception:
            log.exception("upload sweep failed")
            return
        if n:
            log.info("removed %d expired upload(s)", n)

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
            await self.sweep_uploads()

    async def close(self) -> None:
        self.metrics.flush()  # what the last loop turn counted
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

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            op, object_id = self.router.match(request.method, request.path)
        except GatewayError as err:
            return error_response(err)
        if op.startswith("admin."):
            return self.admin(op)
        if self.draining:
            return error_response(GatewayError(
                503, "The gateway is shutting down; retry shortly.", code="draining", retryable=True,
                headers={"Retry-After": DRAIN_RETRY_AFTER}))
        self.inflight += 1
        poller = self.poller
        poller.activity += 1
        if poller.asleep:
            poller.wake()
        if not self._inflight_pending:
            self._publish_inflight_soon()
        try:
            return await self.pipeline.handle(request, op, object_id)
        finally:
            self.inflight -= 1
            poller.activity += 1
            if not self._inflight_pending:
                self._publish_inflight_soon()

    def _publish_inflight_soon(self) -> None:
        """The in-flight gauge is written once per event-loop turn, whatever number of requests
        began or ended in it (a sample write each costs more than the request's own counting;
        issue 10); a scrape sees the count as of the last turn."""
        self._inflight_pending = True
        asyncio.get_running_loop().call_soon(self._publish_inflight)

    def _publish_inflight(self) -> None:
        self._inflight_pending = False
        self.metrics.inflight.set(self.inflight)

    def admin(self, op: str) -> web.Response:
        if op == "admin.healthz":
            return BytesResponse(body=b'{"status":"ok"}', content_type="application/json")
        if op == "admin.readyz":
            if self.draining or not self.ready:
                return BytesResponse(status=503, body=b'{"status":"draining"}', content_type="application/json",
                                    headers={"Retry-After": DRAIN_RETRY_AFTER})
            return BytesResponse(body=b'{"status":"ready"}', content_type="application/json")
        if op == "admin.openapi":
            return BytesResponse(body=self.openapi_document, content_type="application/json")
        # Not counted in the metrics (admin paths never are): all workers' samples, merged.
        return BytesResponse(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})


