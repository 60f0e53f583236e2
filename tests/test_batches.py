"""The Batches API through the real OpenAI SDK and a running gateway, on the pass-through
providers (faithful OpenAI, Azure classic and Groq fakes that run batches): create, retrieve,
list, cancel, the output and error files for the creating tenant, tenancy, every check made
before anything is created upstream, and a restart between create and retrieve."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.conftest import client
from tests.fakes.groq_upstream import FakeGroq
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_proc import GatewayProcess

KEYS = {"TEAM_A_KEY": "sk-team-a", "TEAM_B_KEY": "sk-team-b", "OPS_KEY": "sk-ops"}
AUTH = {"keys": [{"key": "os.environ/TEAM_A_KEY", "tenant": "team-a"},
                 {"key": "os.environ/TEAM_B_KEY", "tenant": "team-b"},
                 {"key": "os.environ/OPS_KEY", "tenant": "ops", "admin": True}]}
TIMEOUTS = {"connect": "2s", "read": "5s"}


def line(custom_id: str, *, model: str | None = "gpt-4o-mini", url: str = "/v1/chat/completions") -> bytes:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": f"hi {custom_id}"}]}
    if model is not None:
        body["model"] = model
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}).encode() + b"\n"


class Upstream:
    """One pass-through provider under test: its fake, its config entry, its routing header."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        if kind == "groq":
            self.fake: FakeOpenAI | FakeGroq = FakeGroq(data_dir=tmp_path / "fake-groq")
            self.entry = {"name": "up", "type": "groq", "api_base": "", "api_key": self.fake.api_key}
        elif kind == "azure":
            self.fake = FakeOpenAI("azure", api_key="azure-upstream-key", data_dir=tmp_path / "fake-azure")
            self.entry = {"name": "up", "type": "azure", "api_key": "azure-upstream-key", "api_version": "2024-10-21"}
        else:
            self.fake = FakeOpenAI("openai", data_dir=tmp_path / "fake-openai")
            self.entry = {"name": "up", "type": "openai", "api_key": "sk-upstream-test"}
        self.entry.update(max_retries=1, timeouts=TIMEOUTS)

    def start(self) -> "Upstream":
        self.fake.serve()
        self.entry["api_base"] = {"groq": self.fake.base_url if isinstance(self.fake, FakeGroq) else "",
                                  "azure": self.fake.url, "openai": self.fake.url + "/v1"}[self.kind]
        return self

    def config(self, *, auth: bool = True) -> dict[str, Any]:
        cfg: dict[str, Any] = {"providers": [{"name": "local", "type": "local", "path": "./files"}, self.entry],
                               "default_provider": "local"}
        if auth:
            cfg["auth"] = AUTH
        return cfg

    def batch_requests(self, method: str) -> list[Any]:
        return [r for r in self.fake.requests if r.method == method and r.path.rstrip("/").endswith("/batches")]


UP = {"x-tfy-provider-name": "up"}


@pytest.fixture(params=["openai", "azure", "groq"])
def upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(request.param, tmp_path).start()
    yield up
    up.fake.close()


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess], upstream: Upstream) -> GatewayProcess:
    return start_gateway(upstream.config(), env=KEYS)


def upload(c: openai.OpenAI, content: bytes, purpose: str = "batch") -> str:
    return c.files.create(file=("in.jsonl", content), purpose=purpose, extra_headers=UP).id  # type: ignore[arg-type]


def test_batch_runs_and_its_files_are_the_tenants(gateway: GatewayProcess, upstream: Upstream) -> None:
    a, b = client(gateway, "sk-team-a"), client(gateway, "sk-team-b")
    input_id = upload(a, line("r1") + line("r2", model=None) + line("r3"))
    # No routing header: the recorded input file routes the batch to its provider.
    created = a.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"run": "1"})
    assert isinstance(created, Batch) and created.status == "validating" and created.input_file_id == input_id
    assert created.metadata == {"run": "1"}
    sent = upstream.batch_requests("POST")[-1]
    assert sent.headers.get("Authorization", sent.headers.get("api-key")) in (
        f"Bearer {upstream.fake.api_key}", upstream.fake.api_key)              # the gateway's key, not the client's
    if upstream.kind == "azure":
        assert sent.query["api-version"] == "2024-10-21"

    done = a.batches.retrieve(created.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    assert done.output_file_id and done.error_file_id

    # The provider's output and error files are the tenant's now (no admin key needed).
    out = [json.loads(x) for x in a.files.content(done.output_file_id).content.splitlines()]
    assert [r["custom_id"] for r in out] == ["r1", "r3"]
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["object"] == "chat.completion"
               for r in out)
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: hi r1"
    err = [json.loads(x) for x in a.files.content(done.error_file_id).content.splitlines()]
    assert [(r["custom_id"], r["response"]["status_code"]) for r in err] == [("r2", 400)]
    meta = a.files.retrieve(done.output_file_id)
    assert meta.purpose == "batch_output" and meta.bytes == len(a.files.content(done.output_file_id).content)
    assert done.output_file_id in {f.id for f in a.files.list()}

    # Anyone else: 404, on every operation on the batch and its files.
    for call in (lambda: b.batches.retrieve(created.id), lambda: b.batches.cancel(created.id),
                 lambda: b.files.content(done.output_file_id), lambda: b.files.content(done.error_file_id),
                 lambda: b.files.retrieve(done.output_file_id), lambda: b.files.content(input_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError) as e:
        b.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert e.value.body["param"] == "input_file_id" and e.value.body["code"] == "file_not_found"
    assert [x.id for x in b.batches.list()] == []
    assert b.batches.list(after=created.id).data == []


def test_list_pages_and_records_outputs_it_sees(gateway: GatewayProcess, upstream: Upstream) -> None:
    a = client(gateway, "sk-team-a")
    input_id = upload(a, line("r1"))
    ids = [a.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions",
                            completion_window="24h").id for _ in range(3)]
    first = a.batches.list(limit=2)
    assert [x.id for x in first.data] == ids[:0:-1] and first.has_more
    rest = a.batches.list(limit=2, after=first.data[-1].id)
    assert [x.id for x in rest.data] == [ids[0]] and not rest.has_more
    assert [x.id for x in a.batches.list()] == ids[::-1]                       # auto-pagination: every batch
    # The listing refreshed each batch from the provider: they ran, and their outputs are the tenant's.
    for listed in first.data + rest.data:
        assert listed.status == "completed" and listed.output_file_id
        assert json.loads(a.files.content(listed.output_file_id).content)["custom_id"] == "r1"
    with pytest.raises(openai.BadRequestError) as e:
        a.batches.list(limit=101)
    assert e.value.body["param"] == "limit"


def test_cancel_then_cancelled_batch_keeps_partial_output(gateway: GatewayProcess, upstream: Upstream) -> None:
    upstream.fake.batches.duration = 3600.0  # the batch runs for an hour: it is cancelled first
    a = client(gateway, "sk-team-a")
    input_id = upload(a, line("r1") + line("r2"))
    created = a.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert a.batches.retrieve(created.id).status == "in_progress"
    cancelling = a.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = a.batches.retrieve(created.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id and cancelled.error_file_id is None
    rows = a.files.content(cancelled.output_file_id).content.splitlines()
    assert [json.loads(r)["custom_id"] for r in rows] == ["r1"]
    with pytest.raises(openai.BadRequestError):  # the provider's own word on cancelling an ended batch
        a.batches.cancel(created.id)


def test_every_check_runs_before_anything_goes_upstream(gateway: GatewayProcess, upstream: Upstream) -> None:
    a = client(gateway, "sk-team-a")
    input_id = upload(a, line("r1"))
    other_provider_file = a.files.create(file=("x.jsonl", line("r1")), purpose="batch").id   # on local
    assistants = upload(a, b"not a batch", purpose="assistants") if upstream.kind != "groq" else None
    good: dict[str, Any] = {"input_file_id": input_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"input_file_id": "file-nobody-has"}, openai.NotFoundError, "input_file_id"),
        ({"endpoint": "/v1/chat"}, openai.BadRequestError, "endpoint"),
        ({"completion_window": "1h"}, openai.BadRequestError, "completion_window"),
        ({"completion_window": "8d"}, openai.BadRequestError, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, openai.BadRequestError, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, openai.BadRequestError, "metadata"),
        ({"metadata": {"k": "v" * 513}}, openai.BadRequestError, "metadata.k"),
        ({"metadata": {"k": 1}}, openai.BadRequestError, "metadata.k"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, openai.BadRequestError,
         "output_expires_after.seconds"),
        ({"output_expires_after": {"anchor": "now", "seconds": 3600}}, openai.BadRequestError,
         "output_expires_after.anchor"),
    ]
    if assistants is not None:
        cases.append(({"input_file_id": assistants}, openai.BadRequestError, "input_file_id"))
    if upstream.kind != "groq":  # an endpoint the provider runs, but not the one the file's lines name
        cases.append(({"endpoint": "/v1/embeddings"}, openai.BadRequestError, "endpoint"))
    if upstream.kind == "groq":
        cases.append(({"endpoint": "/v1/embeddings"}, openai.BadRequestError, "endpoint"))
    elif upstream.kind == "azure":
        cases.append(({"endpoint": "/v1/moderations"}, openai.BadRequestError, "endpoint"))
    before = len(upstream.batch_requests("POST"))
    for change, error, param in cases:
        with pytest.raises(error) as e:
            a.batches.create(**{**good, **change})
        assert e.value.body["param"] == param, (change, e.value.body)            # type: ignore[attr-defined]
        assert e.value.response.headers["x-should-retry"] == "false"             # type: ignore[attr-defined]
    for missing in good:
        body = {k: v for k, v in good.items() if k != missing}
        with pytest.raises(openai.BadRequestError) as e:
            a.post("/batches", body=body, cast_to=Batch)
        assert e.value.body["param"] == missing and e.value.body["code"] == "missing_required_parameter"  # type: ignore[index]
    # A file on another provider than the one named: the owner is told where it lives.
    with pytest.raises(openai.BadRequestError) as e:
        a.batches.create(**{**good, "input_file_id": other_provider_file}, extra_headers=UP)
    assert (e.value.body["param"], e.value.body["code"]) == ("input_file_id", "reference_on_other_provider")  # type: ignore[index]
    assert len(upstream.batch_requests("POST")) == before                       # nothing was created upstream
    assert a.batches.list().data == []
    if upstream.kind == "groq":  # Groq's windows run from 24h to 7d (groq-python)
        assert a.batches.create(**{**good, "completion_window": "7d"}).completion_window == "7d"
    # A local file cannot run as a batch at all (routed to its provider, which has no batches).
    with pytest.raises(openai.BadRequestError) as e:
        a.batches.create(**{**good, "input_file_id": other_provider_file})
    assert e.value.body["code"] == "unsupported_operation"  # type: ignore[index]


def test_restart_between_create_and_retrieve_loses_nothing(start_gateway: Callable[..., GatewayProcess],
                                                           upstream: Upstream) -> None:
    gw = start_gateway(upstream.config(), env=KEYS)
    a = client(gw, "sk-team-a")
    created = a.batches.create(input_file_id=upload(a, line("r1")), endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"k": "v"})
    gw.stop()
    gw.start()
    a, b = client(gw, "sk-team-a"), client(gw, "sk-team-b")
    done = a.batches.retrieve(created.id)
    assert done.status == "completed" and done.metadata == {"k": "v"} and done.output_file_id
    assert [x.id for x in a.batches.list()] == [created.id]
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(created.id)
    gw.stop()
    gw.start()
    a, b = client(gw, "sk-team-a"), client(gw, "sk-team-b")
    assert json.loads(a.files.content(done.output_file_id).content)["custom_id"] == "r1"
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)


def test_admin_sees_the_providers_own_batches(start_gateway: Callable[..., GatewayProcess], upstream: Upstream) -> None:
    gw = start_gateway(upstream.config(), env=KEYS)
    a, ops = client(gw, "sk-team-a"), client(gw, "sk-ops")
    mine = a.batches.create(input_file_id=upload(a, line("r1")), endpoint="/v1/chat/completions",
                            completion_window="24h")
    # A batch created outside the gateway: unseen; reachable for admins (header names the provider).
    outside = upstream.fake.batches.create({"input_file_id": upload(ops, line("x")), "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})
    listed = ops.batches.list(extra_headers=UP)
    assert {x.id for x in listed.data} == {mine.id, outside["id"]}
    assert ops.batches.retrieve(outside["id"], extra_headers=UP).status == "completed"
    with pytest.raises(openai.NotFoundError):
        a.batches.retrieve(outside["id"], extra_headers=UP)                    # not for a tenant
    # The admin's listing passed team-a's batch by: its output file is team-a's (not the admin's).
    done = next(x for x in listed.data if x.id == mine.id)
    assert done.output_file_id
    assert json.loads(a.files.content(done.output_file_id).content)["custom_id"] == "r1"


async def test_any_replica_serves_any_batch(start_gateway: Callable[..., GatewayProcess], pg_url: str,
                                            tmp_path: Path) -> None:
    """Two replicas on one PostgreSQL store: a batch created through one is the tenant's on the
    other, and so are the output files the other one sees first."""
    up = Upstream("openai", tmp_path).start()
    try:
        cfg = {**up.config(), "store": {"url": pg_url, "pool_max": 4}}
        one, two = start_gateway(cfg, env=KEYS), start_gateway(cfg, env=KEYS)
        a1, a2, b2 = client(one, "sk-team-a"), client(two, "sk-team-a"), client(two, "sk-team-b")
        created = a1.batches.create(input_file_id=upload(a1, line("r1")), endpoint="/v1/chat/completions",
                                    completion_window="24h")
        done = a2.batches.retrieve(created.id)
        assert done.status == "completed" and done.output_file_id
        assert json.loads(a1.files.content(done.output_file_id).content)["custom_id"] == "r1"
        assert [x.id for x in a2.batches.list()] == [created.id]
        with pytest.raises(openai.NotFoundError):
            b2.batches.retrieve(created.id)
    finally:
        up.fake.close()
