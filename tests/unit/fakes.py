"""Shared pieces of the fast in-process tests: a request stand-in, exchanges built on it, real
config sections, a real SQLite store, real (unstarted) providers, and a filter that records
the hooks it sees. Nothing here opens a socket."""
from __future__ import annotations

import tempfile
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from filters.base import Filter
from proxy.config import Config, parse_config
from proxy.exchange import Exchange, Tenant
from proxy.providers import create_provider
from proxy.store import open_store
from proxy.store.base import Store


class FakeRequest:
    """What filters read of a request: method, path, headers, Content-Length."""

    def __init__(self, method: str = "POST", path: str = "/v1/files", headers: dict[str, str] | None = None,
                 content_length: int | None = None) -> None:
        self.method = method
        self.path = path
        self.headers = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.content_length = content_length
        self.transport = None


def exchange(operation: str = "files.create", *, object_id: str | None = None, headers: dict[str, str] | None = None,
             content_length: int | None = None, tenant: str | None = "team-a", admin: bool = False,
             method: str = "POST", path: str = "/v1/files") -> Exchange:
    ex = Exchange(FakeRequest(method, path, headers, content_length), operation, object_id)  # type: ignore[arg-type]
    if tenant is not None:
        ex.tenant = Tenant(tenant, admin)
    return ex


def config(**data: Any) -> Config:
    """A real parsed config; paths under a fresh temporary data directory."""
    data.setdefault("server", {"data_dir": tempfile.mkdtemp(prefix="sg-unit-")})
    return parse_config(data, env={})


def providers(cfg: Config) -> dict[str, Any]:
    """The config's providers, constructed but not started (no connection is opened)."""
    return {p.name: create_provider(p) for p in cfg.providers}


OPENAI_A = {"name": "oa-a", "type": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-a"}
OPENAI_B = {"name": "oa-b", "type": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-b"}
LOCAL = {"name": "local", "type": "local"}


async def sqlite_store(tmp_path: Any) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/unit.db")
    await store.open()
    return store


class Recorder(Filter):
    """Appends ``(label, hook, args…)`` to a shared list for every hook it overrides."""

    name = "recorder"

    def __init__(self, log: list[tuple[Any, ...]], label: str) -> None:
        self.log = log
        self.label = label

    async def on_request(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_request"))

    def on_field(self, ex: Exchange, name: str, value: str) -> None:
        self.log.append((self.label, "on_field", name, value))

    def on_file_start(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_file_start"))

    def on_file_data(self, ex: Exchange, chunk: Any) -> None:
        self.log.append((self.label, "on_file_data", bytes(chunk)))

    def on_file_end(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_file_end"))

    async def on_upload_complete(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_upload_complete"))

    def on_response(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_response", ex.status))

    def on_response_data(self, ex: Exchange, chunk: Any) -> None:
        self.log.append((self.label, "on_response_data", bytes(chunk)))

    async def on_exchange_end(self, ex: Exchange) -> None:
        self.log.append((self.label, "on_exchange_end"))
