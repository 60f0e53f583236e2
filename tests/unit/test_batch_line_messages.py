"""A bad batch line's 400 quotes what the client sent: the message ends in one period, and
nothing the client wrote is rewritten (filters/batch_jsonl.py and the Anthropic batch sink
build it the same way, proxy/transforms/jsonl.py BatchLineError.sentence)."""
from __future__ import annotations

from filters.batch_jsonl import _invalid
from proxy.providers.anthropic import BatchTranslatingSink
from proxy.transforms.jsonl import BatchLineError

QUOTED = '"method" must be "POST", got "GET.."'


def test_anthropic_batch_error_keeps_the_clients_dots():
    err = BatchTranslatingSink._invalid(BatchLineError(2, QUOTED))
    assert err.message == f'Invalid batch file for Anthropic: line 2: {QUOTED}.'
    assert (err.status, err.code, err.param) == (400, "invalid_batch_file", "file")


def test_anthropic_batch_error_gets_one_period():
    assert BatchTranslatingSink._invalid(BatchLineError(3, "too many lines.")).message == (
        "Invalid batch file for Anthropic: line 3: too many lines.")


def test_gateway_and_anthropic_messages_say_the_same_sentence():
    e = BatchLineError(1, QUOTED)
    assert _invalid(e).message.removeprefix("Invalid batch file: ") == \
        BatchTranslatingSink._invalid(e).message.removeprefix("Invalid batch file for Anthropic: ")
