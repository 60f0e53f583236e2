"""Parse cost per response: the hand-written ``ResponseParser`` (proxy/providers/h1) against
aiohttp's own response parser (the C one, ``aiohttp._http_parser``, when it is built), both fed
the bytes a pooled keep-alive connection receives.

Two shapes, the gateway's two hot paths:

* a small JSON response (files.retrieve; ~700 bytes with Content-Length), fed in one piece,
  body taken out as bytes;
* SSE over chunked transfer encoding (responses.create ``stream: true``): one head, then one
  chunk per event (one socket read each), each event's data taken out as it arrives.

CPU only, no sockets: the kernel and event loop cost the same whichever parser runs.

    python bench/h1_parser.py [seconds per measurement, default 0.5]
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import http_parser  # noqa: E402
from aiohttp.base_protocol import BaseProtocol  # noqa: E402

from proxy.providers.h1 import UNBOUNDED, ResponseParser  # noqa: E402

JSON_BODY = (b'{"id":"file-abc123def456ghi789","object":"file","bytes":120000,"created_at":1700000000,'
             b'"filename":"batch_input_2024_01_01_with_a_long_descriptive_name.jsonl","purpose":"batch",'
             b'"status":"processed","status_details":null,"expires_at":null,"metadata":{"team":"ml-platform",'
             b'"project":"sluicegate","owner":"someone@example.com","run":"2024-01-01T00:00:00Z"},'
             b'"padding":"' + b"x" * 118 + b'"}')
JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: keep-alive\r\nopenai-processing-ms: 12\r\n"
                 b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n\r\n%s" % (len(JSON_BODY), JSON_BODY))
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
            b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n\r\n")
_EVENT = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":'
          b'"msg_0123456789abcdef","output_index":0,"content_index":0,"delta":" word","sequence_number":17}\n\n')
SSE_CHUNK = b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT)
SSE_EVENTS = 200


def hand_json() -> None:
    resp = ResponseParser().feed(JSON_RESPONSE)
    assert resp is not None and resp.body == JSON_BODY and resp.keep_alive


def hand_sse() -> None:
    p = ResponseParser(max_body_size=UNBOUNDED)
    head, _ = p.feed_stream(SSE_HEAD)
    assert head is not None
    feed = p.feed_stream
    for _ in range(SSE_EVENTS):
        _, piece = feed(SSE_CHUNK)
        assert len(piece) == len(_EVENT)
    p.feed_stream(b"0\r\n\r\n")
    assert p.complete


class _Protocol(BaseProtocol):
    """What aiohttp's client protocol gives its parser: a loop and flow control."""


def aiohttp_parser(loop: asyncio.AbstractEventLoop) -> http_parser.HttpResponseParser:
    # as aiohttp's ResponseHandler builds it (client_proto.py), without decompression
    return http_parser.HttpResponseParser(_Protocol(loop), loop, 2**16, auto_decompress=False)


def aiohttp_json(loop: asyncio.AbstractEventLoop) -> None:
    messages, _, _ = aiohttp_parser(loop).feed_data(JSON_RESPONSE)
    (message, payload), = messages
    body = payload.read_nowait()
    assert body == JSON_BODY and not message.should_close


def aiohttp_sse(loop: asyncio.AbstractEventLoop) -> None:
    p = aiohttp_parser(loop)
    messages, _, _ = p.feed_data(SSE_HEAD)
    (_, payload), = messages
    feed, read = p.feed_data, payload.read_nowait
    for _ in range(SSE_EVENTS):
        feed(SSE_CHUNK)
        assert len(read()) == len(_EVENT)
    feed(b"0\r\n\r\n")
    assert payload.is_eof()


def per_call(fn, seconds: float) -> float:
    """µs per call: median of 5 runs of ~``seconds`` each."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.05:
        fn()
        n += 1
    batch = max(1, int(n * seconds / 0.05 / 5))
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(batch):
            fn()
        runs.append((time.process_time() - t0) / batch * 1e6)
    return statistics.median(runs)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    loop = asyncio.new_event_loop()
    c = http_parser.HttpResponseParser is not http_parser.HttpResponseParserPy
    print(f"aiohttp parser: {http_parser.HttpResponseParser.__module__}.HttpResponseParser"
          f" ({'C, llhttp' if c else 'pure Python'})")
    rows = [
        ("small JSON response (µs/response)", lambda: hand_json(), lambda: aiohttp_json(loop), 1),
        (f"SSE, {SSE_EVENTS} chunked events (µs/event)", lambda: hand_sse(), lambda: aiohttp_sse(loop), SSE_EVENTS),
    ]
    for name, hand, theirs, per in rows:
        h, a = per_call(hand, seconds) / per, per_call(theirs, seconds) / per
        print(f"  {name:40s} hand {h:6.2f}   aiohttp {a:6.2f}   aiohttp/hand {a / h:4.2f}x")
    loop.close()


if __name__ == "__main__":
    main()
