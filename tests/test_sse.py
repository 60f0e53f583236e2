"""The SSE splitter, fed at every byte boundary."""
from __future__ import annotations

import random

import pytest

from proxy.transforms.sse import EventTooLarge, SSEEvent, SSEParser

STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}\n\n'
    b": a comment line\n\n"
    b"event: response.output_text.delta\r\n"
    b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"a\\nb"}\r\n\r\n'
    b"id: 7\n"
    b"data: line one\n"
    b"data:line two\n\n"
    b"event: response.completed\r"
    b'data: {"type":"response.completed","sequence_number":2}\r\r'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("response.created", b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}'),
    SSEEvent("response.output_text.delta", b'{"type":"response.output_text.delta","sequence_number":1,"delta":"a\\nb"}'),
    SSEEvent(None, b"line one\nline two", "7"),
    SSEEvent("response.completed", b'{"type":"response.completed","sequence_number":2}'),
    SSEEvent(None, b"[DONE]"),
]


def feed_all(pieces):
    p = SSEParser()
    out = []
    for piece in pieces:
        out += p.feed(piece)
    return out + p.close()


def test_whole():
    assert feed_all([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_two_way_split(cut):
    assert feed_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_byte_at_a_time_and_random_splits():
    assert feed_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), 4))
        pieces = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
        assert feed_all(pieces) == EXPECTED


def test_unterminated_last_event_is_dropped():
    p = SSEParser()
    assert p.feed(b"data: x\n\ndata: partial") == [SSEEvent(None, b"x")]
    assert p.close() == []


def test_event_too_large():
    p = SSEParser(max_event_size=10)
    with pytest.raises(EventTooLarge):
        p.feed(b"data: " + b"x" * 20)
