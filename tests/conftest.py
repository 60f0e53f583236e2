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
