"""Time to first event through the Responses bridge vs the Anthropic fake directly (issue 13).

Starts the Messages fake (tests/fakes/anthropic_upstream.py, in a thread) and one gateway
process with an ``anthropic`` provider on it, then alternates N streamed requests: straight to
the fake (``POST /v1/messages``, ``stream: true``) and through the gateway (``POST
/v1/responses``, ``stream: true``), each timed from the request to the first SSE event line.
Prints the medians and their difference. Loopback only, bounded (N requests each).

    python bench/bridge_ttfe.py [N]
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx2 as httpx  # noqa: E402

from tests.fakes.anthropic_upstream import FakeAnthropic  # noqa: E402
from tests.gateway_proc import GatewayProcess  # noqa: E402


def first_event(client: httpx.Client, url: str, body: dict, headers: dict) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                return time.perf_counter() - t0
    raise RuntimeError("no event")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    tmp = Path(tempfile.mkdtemp(prefix="bridge-ttfe-"))
    with FakeAnthropic(data_dir=tmp / "fake") as fake:
        cfg = {"log_level": "warning", "providers": [{"name": "claude", "type": "anthropic", "api_base": fake.url,
                                                      "api_key": fake.api_key, "path": "./b"}],
               "default_provider": "claude"}
        gw = GatewayProcess(tmp / "gw", cfg).start()
        try:
            direct_headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
            direct_body = {"model": "m", "max_tokens": 64, "stream": True,
                           "messages": [{"role": "user", "content": "hello there"}]}
            bridge_body = {"model": "m", "input": "hello there", "stream": True, "store": False}
            direct, bridge = [], []
            with httpx.Client(timeout=10) as c:
                for _ in range(10):   # warm both paths (pools, caches)
                    first_event(c, fake.url + "/v1/messages", direct_body, direct_headers)
                    first_event(c, gw.base_url + "/responses", bridge_body, {})
                for _ in range(n):
                    direct.append(first_event(c, fake.url + "/v1/messages", direct_body, direct_headers))
                    bridge.append(first_event(c, gw.base_url + "/responses", bridge_body, {}))
        finally:
            gw.stop()
    d, b = statistics.median(direct) * 1e3, statistics.median(bridge) * 1e3
    print(f"time to first event, median of {n}: fake directly {d:.2f} ms, through the bridge {b:.2f} ms "
          f"(+{b - d:.2f} ms)")


if __name__ == "__main__":
    main()
