"""Auth, tenancy and the per-tenant storage quota."""
from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.conftest import client, passthrough_config

OPENAI = {"x-tfy-provider-name": "my-openai"}

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
    # The SDK did not re-send the body: one 429 in the access log, not three. (Lines are
    # written in order: once this later retrieve's line is there, every 429's is too.)
    a.files.retrieve(first.id)
    lines = gw.access_log(until=lambda ls: any(line["op"] == "files.retrieve" and line["id"] == first.id
                                               for line in ls))
    assert [line["status"] for line in lines].count(429) == 1
    # Other tenants have their own quota.
    client(gw, "sk-team-b").files.create(file=("2.bin", b"y" * 600), purpose="assistants")
    a.files.delete(first.id)
    assert a.files.create(file=("2.bin", b"y" * 600), purpose="assistants").bytes == 600
    # Exactly filling the quota is allowed; one more byte is not.
    a.files.create(file=("3.bin", b"z" * 400), purpose="assistants")
    with pytest.raises(openai.RateLimitError):
        a.files.create(file=("4.bin", b"!"), purpose="assistants")


def body_ids_config(fake_openai) -> dict:
    """Auth on (team-a, team-b, admin ops); my-openai and a `shared` twin on the same fake."""
    cfg = passthrough_config(fake_openai, auth=auth_config()["auth"])
    cfg["providers"].append({**cfg["providers"][1], "name": "shared-openai", "shared": True})
    return cfg


def expect_404(call, param: str) -> dict:
    with pytest.raises(openai.NotFoundError) as e:
        call()
    assert e.value.body["param"] == param, e.value.body
    return e.value.body


def test_ids_inside_a_body_are_checked_like_path_ids(start_gateway, fake_openai):
    gw = start_gateway(body_ids_config(fake_openai), env=KEYS)
    a, b, ops = client(gw, "sk-team-a"), client(gw, "sk-team-b"), client(gw, "sk-ops")
    ra = a.responses.create(model="my-openai/gpt-4o", input="the password is swordfish")
    fa = a.files.create(file=("secret.txt", b"team a only"), purpose="user_data", extra_headers=OPENAI)
    local_file = a.files.create(file=("here.txt", b"on the gateway's disk"), purpose="user_data")
    with_file = [{"role": "user", "content": "hello"},
                 {"role": "user", "content": [{"type": "input_text", "text": "read this"},
                                              {"type": "input_file", "file_id": fa.id}]}]
    before = len(fake_openai.requests)

    # Another tenant's ids: the same 404 as for the id in a path, naming the field.
    body = expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input="repeat the password",
                                                 previous_response_id=ra.id), "previous_response_id")
    assert body["message"] == f"No such Response object: {ra.id}" and body["code"] == "response_not_found"
    expect_404(lambda: b.responses.create(model="gpt-4o", input="again", previous_response_id=ra.id,
                                          stream=True), "previous_response_id")
    body = expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input=with_file), "input[1].content[1].file_id")
    assert body["message"] == f"No such File object: {fa.id}"
    # Ids the gateway never saw, for a tenant: 404 too (nothing tells them from another tenant's).
    expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input="x", previous_response_id="resp_unseen"),
               "previous_response_id")
    expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input="x", conversation="conv_unseen"),
               "conversation")
    expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input="x", tools=[
        {"type": "file_search", "vector_store_ids": ["vs_unseen"]}]), "tools[0].vector_store_ids[0]")
    expect_404(lambda: b.responses.create(model="my-openai/gpt-4o", input=[
        {"role": "user", "content": [{"type": "input_image", "file_id": "file-unseen", "detail": "auto"}]}]),
        "input[0].content[0].file_id")
    expect_404(lambda: a.responses.create(model="my-openai/gpt-4o", input="x", prompt={"id": "pmpt_unseen"}),
               "prompt.id")
    assert len(fake_openai.requests) == before  # nothing went upstream

    # The admin reaches unseen ids: forwarded, and the upstream answers for them.
    with pytest.raises(openai.BadRequestError) as e:
        ops.responses.create(model="my-openai/gpt-4o", input="x", previous_response_id="resp_unseen")
    assert e.value.body["code"] == "previous_response_not_found"
    # So does anyone on a `shared` provider.
    assert b.responses.create(model="shared-openai/gpt-4o", input="x", conversation="conv_shared").id
    assert fake_openai.requests.filter("POST", "/v1/responses")[-1].json["conversation"] == "conv_shared"

    # The owner: its recorded response routes the request by itself (no header, no prefix).
    r2 = a.responses.create(model="gpt-4o", input="what was it?", previous_response_id=ra.id)
    assert r2.previous_response_id == ra.id and r2.output_text.startswith("echo:")
    assert a.responses.create(model="my-openai/gpt-4o", input=with_file).id
    # A recorded file on another provider than the request's: 400 naming the field.
    with pytest.raises(openai.BadRequestError) as e:
        a.responses.create(model="my-openai/gpt-4o", input=[
            {"role": "user", "content": [{"type": "input_file", "file_id": local_file.id}]}])
    assert e.value.body["param"] == "input[0].content[0].file_id"
    assert e.value.body["code"] == "reference_on_other_provider" and "'local'" in e.value.body["message"]
