"""The quota 429 gives every size in one style, as the 413 does: "8 KiB (8192 bytes)"."""
from __future__ import annotations

import re

import openai
import pytest

from tests.conftest import client
from tests.test_local_files import local_config

MESSAGE = re.compile(r"Storage quota exceeded for tenant 'default': (?P<used>.+) stored \+ (?P<adding>.+) "
                     r"uploaded would pass the quota of (?P<quota>.+)\. Delete files to free space\.")
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def bytes_of(size: str) -> int:
    """The byte count a size in the one style names; fails on any other style."""
    plain = re.fullmatch(r"(\d+) bytes", size)
    if plain:
        return int(plain[1])
    m = re.fullmatch(r"(\d+) (KiB|MiB|GiB|KB|MB|GB) \((\d+) bytes\)", size)
    assert m, f"{size!r} is not '<n> <unit> (<N> bytes)' nor '<N> bytes'"
    assert int(m[1]) * UNITS[m[2]] == int(m[3]), size
    return int(m[3])


def test_quota_message_uses_one_unit_style(start_gateway):
    gw = start_gateway(local_config(tenant_storage_quota="10KiB"))
    c = client(gw)
    c.files.create(file=("a.bin", b"a" * 8192), purpose="assistants")
    for size in (4096, 3 << 20):  # over by the running count; over by Content-Length at once
        with pytest.raises(openai.RateLimitError) as e:
            c.files.create(file=("b.bin", b"b" * size), purpose="assistants")
        body = e.value.body
        assert (body["param"], body["code"]) == ("file", "storage_quota_exceeded")
        m = MESSAGE.fullmatch(body["message"])
        assert m, body["message"]
        assert m["used"] == "8 KiB (8192 bytes)" and m["quota"] == "10 KiB (10240 bytes)"
        assert 8192 + bytes_of(m["adding"]) > 10240
    assert len(c.files.list().data) == 1
