"""CPU per streamed delta through the Responses bridge (issue 13), in process, sans-IO.

One Anthropic ``content_block_delta`` SSE event → SSE parse → JSON → the Anthropic decoder →
the emitter → one framed ``response.output_text.delta``: the gateway's whole per-delta work
apart from the socket writes. Prints µs per delta (best of 5 rounds of 20,000 deltas).

    python bench/bridge_cost.py
"""
from __future__ import annotations

import os
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.bridge.anthropic import AnthropicDialect  # noqa: E402
from proxy.bridge.emitter import Emitter, response_object, sse  # noqa: E402
from proxy.transforms.sse import SSEParser  # noqa: E402

DELTAS = 20_000
ROUNDS = 5


def one_round() -> float:
    start = orjson.dumps({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    delta = (b"event: content_block_delta\ndata: " + orjson.dumps(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word "}}) + b"\n\n")
    decoder = AnthropicDialect().stream_decoder()
    em = Emitter(response_object({}, response_id="resp_bench", model="m", provider_type="anthropic"))
    em.start()
    for e in decoder.feed(orjson.loads(start)):
        em.feed(e)
    parser = SSEParser()
    out = 0
    t0 = time.perf_counter()
    for _ in range(DELTAS):
        for event in parser.feed(delta):
            for e in decoder.feed(orjson.loads(event.data)):
                for o in em.feed(e):
                    out += len(sse(o))
    elapsed = time.perf_counter() - t0
    assert out > 0
    return elapsed / DELTAS * 1e6


def main() -> None:
    best = min(one_round() for _ in range(ROUNDS))
    print(f"bridge, one streamed text delta (parse + decode + emit + frame): {best:.2f} µs")


if __name__ == "__main__":
    main()
