from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import openai
import pytest

from tests.gateway_proc import GatewayProcess


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start sluicegate processes for a test; all are stopped at its end."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any] | None = None, **kw: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(started)}", config, **kw)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


def client(gw: GatewayProcess, api_key: str = "sk-none", **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=gw.base_url, api_key=api_key, **kw)


@pytest.fixture
def fake_openai(tmp_path: Path):
    from tests.fakes.openai_upstream import FakeOpenAI

    with FakeOpenAI("openai", data_dir=tmp_path / "fake-openai") as fake:
        yield fake


@pytest.fixture
def fake_azure(tmp_path: Path):
    from tests.fakes.openai_upstream import FakeOpenAI

    with FakeOpenAI("azure", api_key="azure-upstream-key", api_version=("2024-10-21", "2025-04-01-preview"),
                    data_dir=tmp_path / "fake-azure") as fake:
        yield fake


def passthrough_config(fake_openai=None, fake_azure=None, **extra: Any) -> dict[str, Any]:
    providers: list[dict[str, Any]] = [{"name": "local", "type": "local", "path": "./files"}]
    if fake_openai is not None:
        providers.append({"name": "my-openai", "type": "openai", "api_base": fake_openai.url + "/v1",
                          "api_key": "sk-upstream-test", "max_retries": 2,
                          "timeouts": {"connect": "2s", "read": "2s"}})
    if fake_azure is not None:
        providers.append({"name": "my-azure", "type": "azure", "api_base": fake_azure.url,
                          "api_key": "azure-upstream-key", "api_version": extra.pop("azure_api_version", "2024-10-21"),
                          "deployments": {"gpt-4o": "my-gpt4o-deployment"}, "max_retries": 2,
                          "timeouts": {"connect": "2s", "read": "2s"}})
    cfg: dict[str, Any] = {"providers": providers, "default_provider": "local"}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="session")
def pg_database():
    """A PostgreSQL role and database of this test session (tests/pg.py); dropped at its end."""
    from tests import pg

    db = pg.create_database()
    yield db
    pg.drop_database(db)


@pytest.fixture
async def pg_url(pg_database) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    await pg_database.reset()
    return pg_database.url
