"""Auth, tenancy and the per-tenant storage quota."""
from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client

KEYS = {"TEAM_A_KEY": "sk-team-a", "TEAM_B_KEY": "sk-team-b", "OPS_KEY": "sk-ops"}


def auth_config(**limits: object) -> dict:
    cfg = {
        "auth": {"keys": [{"key": "os.environ/TEAM_A_KEY", "tenant": "team-a"},
                          {"key": "os.environ/TEAM_B_KEY", "tenant": "team-b"},
                          {"key": "os.environ/OPS_KEY", "tenant": "ops", "admin": True}]},
        "providers": [{"name": "local", "type": "local", "path": "./files"}],
    }
    if limits:
        cfg["limits"] = limits
    return cfg


def test_keys_and_isolation(start_gateway):
    gw = start_gateway(auth_config(), env=KEYS)
    with pytest.raises(openai.AuthenticationError) as e:
        client(gw, api_key="sk-wrong").files.list()
    assert e.value.body["code"] == "invalid_api_key"
    r = httpx.get(gw.base_url + "/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"

    a, b = client(gw, "sk-team-a"), client(gw, "sk-team-b")
    fa = a.files.create(file=("a.txt", b"team a secret"), purpose="assistants")
    fb = b.files.create(file=("b.txt", b"team b"), purpose="assistants")
    assert [f.id for f in a.files.list()] == [fa.id]
    assert [f.id for f in b.files.list()] == [fb.id]
    for call in (lambda: b.files.retrieve(fa.id), lambda: b.files.content(fa.id), lambda: b.files.delete(fa.id)):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        # Same answer as for an id that does not exist: nothing confirms it exists.
        assert e.value.body["message"] == f"No such File object: {fa.id}"
    # B cannot use A's id as a list cursor to learn anything either.
    assert b.files.list(after=fa.id).data == []
    assert a.files.content(fa.id).content == b"team a secret"
    # An id nobody has: 404 for tenants and (local keeps no unseen files) for admins too.
    for c in (a, client(gw, "sk-ops")):
        with pytest.raises(openai.NotFoundError):
            c.files.retrieve("file-doesnotexist")
    assert "sk-team-a" not in gw.log() and "sk-team-b" not in gw.log()


def test_quota_is_enforced_and_released(start_gateway):
    gw = start_gateway(auth_config(tenant_storage_quota="1KB"), env=KEYS)
    a, b = client(gw, "sk-team-a"), client(gw, "sk-team-a", max_retries=2)
    first = a.files.create(file=("1.bin", b"x" * 600), purpose="assistants")
    with pytest.raises(openai.RateLimitError) as e:
        b.files.create(file=("2.bin", b"y" * 600), purpose="assistants")
    assert e.value.body["code"] == "storage_quota_exceeded"
    assert e.value.response.headers["x-should-retry"] == "false"
    assert "team-a" in e.value.body["message"]
    # The SDK did not re-send the body: one 429 in the access log, not three.
    assert [line["status"] for line in gw.access_log()].count(429) == 1
    # Other tenants have their own quota.
    client(gw, "sk-team-b").files.create(file=("2.bin", b"y" * 600), purpose="assistants")
    a.files.delete(first.id)
    assert a.files.create(file=("2.bin", b"y" * 600), purpose="assistants").bytes == 600
    # Exactly filling the quota is allowed; one more byte is not.
    a.files.create(file=("3.bin", b"z" * 400), purpose="assistants")
    with pytest.raises(openai.RateLimitError):
        a.files.create(file=("4.bin", b"!"), purpose="assistants")
