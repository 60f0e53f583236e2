"""Fidelity tests for the fake upstreams: the REAL openai SDK is pointed at each fake.

If the SDK is happy with the fakes (parsing, pagination, streaming helpers, error classes,
retries), the gateway's integration tests can trust them as stand-ins for OpenAI / Azure.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from tests.fakes.bigfile import BLOCK_SIZE, big_content_sha256, iter_big_content, make_big_file, sha256_file
from tests.fakes.openai_upstream import FakeOpenAI, Recorded, UploadedPart
from tests.fakes.threaded import ThreadedServer

KEY = "sk-upstream-test"
AZURE_VERSION = "2024-10-21"

STREAM_EVENT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


# ============================================================================ fixtures
def make_client(fake: FakeOpenAI, *, api_key: str = KEY, **kwargs) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 10)
    if fake.flavor == "azure":
        return openai.AzureOpenAI(azure_endpoint=fake.url, api_key=api_key, api_version=AZURE_VERSION, **kwargs)
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=api_key, **kwargs)


def auth_headers(fake: FakeOpenAI) -> dict[str, str]:
    return {"api-key": KEY} if fake.flavor == "azure" else {"Authorization": f"Bearer {KEY}"}


def raw_params(fake: FakeOpenAI) -> dict[str, str]:
    return {"api-version": AZURE_VERSION} if fake.flavor == "azure" else {}


@pytest.fixture(params=["openai", "azure"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(request.param, api_key=KEY, api_version=AZURE_VERSION, data_dir=tmp_path / "data") as f:
        yield f


@pytest.fixture
def openai_fake(tmp_path: Path) -> Iterator[FakeOpenAI]:
    with FakeOpenAI("openai", data_dir=tmp_path / "data") as f:
        yield f


@pytest.fixture
def azure_fake(tmp_path: Path) -> Iterator[FakeOpenAI]:
    with FakeOpenAI("azure", api_version=AZURE_VERSION, data_dir=tmp_path / "data") as f:
        yield f


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with make_client(fake) as c:
        yield c


# ============================================================================ ThreadedServer / bigfile
def test_threaded_server_serves_from_its_own_loop() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    with ThreadedServer(app) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert httpx2.get(server.url + "/").text == "hi"

        async def where() -> int:
            return server.port

        assert server.call(where()) == server.port
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(server.url + "/", timeout=2)


def test_make_big_file_is_deterministic(tmp_path: Path) -> None:
    size = 3 * BLOCK_SIZE + 12345
    sha = make_big_file(tmp_path / "a.bin", size, seed=7)
    assert (tmp_path / "a.bin").stat().st_size == size
    assert sha == sha256_file(tmp_path / "a.bin") == big_content_sha256(size, seed=7)
    assert sha != big_content_sha256(size, seed=8)
    blocks = list(iter_big_content(2 * BLOCK_SIZE))
    assert len(blocks) == 2 and blocks[0] != blocks[1]  # counter makes every MiB distinct


# ============================================================================ files
def test_files_roundtrip(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    content = b'{"custom_id":"r1"}\n{"custom_id":"r2"}\n'
    created = client.files.create(file=("rows.jsonl", content), purpose="batch")

    id_pattern = r"file-[0-9a-f]{32}" if fake.flavor == "azure" else r"file-[A-Za-z0-9]{24}"
    assert re.fullmatch(id_pattern, created.id)
    assert (created.object, created.bytes) == ("file", len(content))
    assert (created.filename, created.purpose) == ("rows.jsonl", "batch")

    rec = fake.requests[-1]
    assert isinstance(rec, Recorded)
    assert rec.method == "POST"
    if fake.flavor == "azure":
        # AzureOpenAI uses the classic family with the api-version query and the api-key header.
        assert rec.path == "/openai/files"
        assert rec.query.getall("api-version") == [AZURE_VERSION]
        assert rec.headers["api-key"] == KEY
        assert rec.status == 201 and created.status == "pending"
    else:
        assert rec.path == "/v1/files"
        assert rec.headers["authorization"] == f"Bearer {KEY}"
        assert rec.status == 200 and created.status == "processed"
        assert created.expires_at == created.created_at + 30 * 24 * 3600  # batch default
    assert rec.body_size == int(rec.content_length)
    assert list(rec.form) == ["purpose", "file"]  # the SDK sends fields before the file
    upload = rec.form["file"]
    assert isinstance(upload, UploadedPart)
    assert (upload.filename, upload.size) == ("rows.jsonl", len(content))
    assert upload.sha256 == hashlib.sha256(content).hexdigest()
    assert fake.files[created.id].sha256 == hashlib.sha256(content).hexdigest()

    retrieved = client.files.retrieve(created.id)
    assert retrieved.id == created.id and retrieved.status == "processed"
    assert client.files.content(created.id).content == content
    assert [f.id for f in client.files.list()] == [created.id]

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    assert created.id not in fake.files
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_openai_list_auto_pagination(openai_fake: FakeOpenAI) -> None:
    client = make_client(openai_fake)
    ids = [client.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(5)]
    client.files.create(file=("img.png", b"png"), purpose="vision")
    openai_fake.requests.clear()

    listed = [f.id for f in client.files.list(purpose="batch", limit=2)]
    assert listed == ids[::-1]  # default order desc
    pages = openai_fake.requests.filter("GET", "/v1/files")
    assert [r.query.get("after") for r in pages] == [None, ids[3], ids[1]]

    page = client.files.list(purpose="batch", limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2]
    assert (page.has_more, page.first_id, page.last_id) == (True, ids[0], ids[1])
    assert [f.id for f in client.files.list(purpose="batch", order="asc", after=ids[2])] == ids[3:]
    with pytest.raises(openai.BadRequestError):
        client.files.list(limit=0)


def test_azure_classic_list_has_only_object_and_data(azure_fake: FakeOpenAI) -> None:
    client = make_client(azure_fake)
    ids = [client.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(3)]
    url = azure_fake.url + "/openai/files"
    body = httpx2.get(url, params=raw_params(azure_fake), headers=auth_headers(azure_fake)).json()
    assert set(body) == {"object", "data"}
    assert [f["id"] for f in body["data"]] == ids[::-1]
    # Without has_more the SDK asks for one more page (after=<last id>) which comes back empty.
    assert sorted(f.id for f in client.files.list()) == sorted(ids)


def test_upload_validation(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    if fake.flavor == "openai":
        f = client.files.create(
            file=("a.jsonl", b"{}\n"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
        )
        assert f.expires_at == f.created_at + 3600
        assert client.files.create(file=("v.png", b"x"), purpose="vision").expires_at is None
        too_short = {"anchor": "created_at", "seconds": 60}
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch", expires_after=too_short)  # type: ignore
        assert err.value.param == "expires_after.seconds"
        bad_purpose = "nonsense"
        accepted = 2
    else:
        f = client.files.create(
            file=("a.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 1_209_600}
        )
        assert f.expires_at == f.created_at + 1_209_600
        bad_purpose = "user_data"  # not an Azure purpose
        accepted = 1
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose=bad_purpose)  # type: ignore[arg-type]
    assert err.value.param == "purpose"
    if fake.flavor == "azure":
        assert err.value.body["type"] == "error" and err.value.body["code"] == "invalidPayload"
    assert len(fake.files) == accepted  # rejected uploads leave nothing behind
    assert sorted(p.name for p in fake.data_dir.iterdir()) == sorted(fake.files)


def test_raw_multipart_hash_chunked_and_field_order(openai_fake: FakeOpenAI) -> None:
    boundary = "b0undary"
    payload = b"line1\r\n--b0undar\r\nline2"  # contains a near-boundary to stress the parser
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        f"Content-Type: application/x-test\r\n\r\n".encode()
        + payload
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'.encode()
        + f"assistants\r\n--{boundary}--\r\n".encode()
    )

    def chunks() -> Iterator[bytes]:  # generator body -> Transfer-Encoding: chunked
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    headers = {**auth_headers(openai_fake), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    resp = httpx2.post(openai_fake.url + "/v1/files", content=chunks(), headers=headers)
    assert resp.status_code == 200, resp.text
    rec = openai_fake.requests[-1]
    assert rec.content_length is None and rec.headers["transfer-encoding"] == "chunked"
    assert (rec.body_size, rec.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert list(rec.form) == ["file", "purpose"]  # curl-style order is accepted too
    assert rec.form["file"].content_type == "application/x-test"
    assert openai_fake.files[resp.json()["id"]].sha256 == hashlib.sha256(payload).hexdigest()


def test_large_streamed_upload_and_download(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    size = 24 * BLOCK_SIZE + 3
    sha = make_big_file(tmp_path / "big.bin", size)
    with open(tmp_path / "big.bin", "rb") as fh:  # httpx streams file objects part by part
        resp = httpx2.post(
            openai_fake.url + "/v1/files",
            headers=auth_headers(openai_fake),
            data={"purpose": "batch"},
            files={"file": ("big.jsonl", fh)},
            timeout=60,
        )
    assert resp.status_code == 200 and resp.json()["bytes"] == size
    stored = openai_fake.files[resp.json()["id"]]
    assert stored.sha256 == sha == sha256_file(stored.path)
    rec = openai_fake.requests[-1]
    assert rec.body_size == int(rec.content_length) > size

    digest = hashlib.sha256()
    url = f"{openai_fake.url}/v1/files/{stored.id}/content"
    with httpx2.stream("GET", url, headers=auth_headers(openai_fake)) as download:
        assert download.headers["content-type"] == "application/octet-stream"
        for chunk in download.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == sha


# ============================================================================ auth / errors
def test_wrong_key_is_401_without_echoing_the_key(fake: FakeOpenAI) -> None:
    wrong = "sk-this-is-a-wrong-key-1234"
    with make_client(fake, api_key=wrong) as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            bad.files.list()
    assert wrong not in str(err.value.body) and wrong not in err.value.response.text
    if fake.flavor == "openai":
        assert err.value.code == "invalid_api_key" and err.value.type == "invalid_request_error"
        assert err.value.body["message"].startswith("Incorrect API key provided: sk-t***")
    else:
        assert err.value.body["type"] == "error" and err.value.body["code"] == "401"
    resp = httpx2.get(fake.url + fake.prefix + "/files", params=raw_params(fake))  # no credentials at all
    assert resp.status_code == 401


def test_not_found_error_shapes(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve("file-nope")
    error = err.value.response.json()["error"]
    if fake.flavor == "openai":
        assert error == {
            "message": "No such File object: file-nope",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }
    else:
        assert (error["type"], error["code"], error["inner_error"]) == ("error", "404", None)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    resp = httpx2.get(fake.url + fake.prefix + "/nope", params=raw_params(fake), headers=auth_headers(fake))
    assert resp.status_code == 404
    if fake.flavor == "openai":
        assert resp.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_azure_requires_matching_api_version(azure_fake: FakeOpenAI) -> None:
    url = azure_fake.url + "/openai/files"
    headers = auth_headers(azure_fake)
    missing = httpx2.get(url, headers=headers)
    wrong = httpx2.get(url, headers=headers, params={"api-version": "2023-01-01"})
    for resp in (missing, wrong):
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "error"
    with openai.AzureOpenAI(azure_endpoint=azure_fake.url, api_key=KEY, api_version="1999-01-01", max_retries=0) as c:
        with pytest.raises(openai.BadRequestError):
            c.files.list()


# ============================================================================ responses
def test_responses_create_json(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o-mini", input="hello world", metadata={"k": "v"})
    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model, response.output_text) == ("completed", "gpt-4o-mini", "echo: hello world")
    assert response.metadata == {"k": "v"}
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    assert fake.requests[-1].json == {"model": "gpt-4o-mini", "input": "hello world", "metadata": {"k": "v"}}

    raw = client.responses.with_raw_response.retrieve(response.id).http_response.json()
    assert isinstance(raw["created_at"], float if fake.flavor == "azure" else int)
    assert raw["output"] == [o.model_dump(mode="json", exclude_unset=True) for o in response.output]


def test_responses_create_refuses_wrongly_typed_parameters(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """OpenAI's 400s (invalid_type / invalid_value), and null as the parameter's default."""
    for extra, param, code in (({"truncation": [[1]]}, "truncation", "invalid_type"),
                               ({"truncation": "sometimes"}, "truncation", "invalid_value"),
                               ({"temperature": "hot"}, "temperature", "invalid_type"),
                               ({"parallel_tool_calls": 1}, "parallel_tool_calls", "invalid_type")):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="gpt-4o-mini", input="hi", extra_body=extra)
        assert (err.value.body["param"], err.value.body["code"]) == (param, code)  # type: ignore[index]
    r = client.responses.create(model="gpt-4o-mini", input="hi", extra_body={"parallel_tool_calls": None})
    assert r.parallel_tool_calls is True


def test_responses_stream_events_and_wire_format(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="m", input="one two", stream=True))
    assert [e.type for e in events] == STREAM_EVENT_TYPES
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one two"
    assert events[-1].response.output_text == "echo: one two"

    with httpx2.stream(
        "POST",
        fake.url + fake.prefix + "/responses",
        params=raw_params(fake),
        headers=auth_headers(fake),
        json={"model": "m", "input": "x", "stream": True},
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    blocks = [b for b in text.split("\n\n") if b]
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: {")
        assert f'"type":"{event_line[7:]}"' in data_line


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="m", input="streamed helper") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: streamed helper"


def test_responses_retrieve_input_items_delete(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conversation = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    created = client.responses.create(model="m", input=conversation)
    assert created.output_text == "echo: second"
    assert client.responses.retrieve(created.id).output_text == "echo: second"

    items = list(client.responses.input_items.list(created.id, limit=1, order="asc"))
    assert [i.content[0].text for i in items] == ["be brief", "first", "second"]
    assert len(fake.requests.filter("GET", f"{fake.prefix}/responses/{created.id}/input_items")) == 3
    page = client.responses.input_items.list(created.id)
    assert page.has_more is False and page.first_id == page.data[0].id and page.data[0].content[0].text == "second"

    replay = list(client.responses.retrieve(created.id, stream=True, starting_after=3))
    assert replay[0].sequence_number == 4 and replay[-1].type == "response.completed"

    follow_up = client.responses.create(model="m", input="again", previous_response_id=created.id)
    assert follow_up.previous_response_id == created.id

    assert client.responses.delete(created.id) is None  # the SDK discards the body
    assert fake.requests[-1].status == 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="x", previous_response_id=created.id)


def test_responses_background_and_cancel(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.background_duration = 30
    background = client.responses.create(model="m", input="slow", background=True)
    assert background.status == "queued" and background.background is True
    assert client.responses.retrieve(background.id).status == "in_progress"
    cancelled = client.responses.cancel(background.id)
    assert cancelled.status == "cancelled"
    assert client.responses.cancel(background.id).status == "cancelled"  # idempotent
    assert client.responses.retrieve(background.id).status == "cancelled"

    plain = client.responses.create(model="m", input="fast")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(plain.id)
    assert "Only responses created with background=true can be cancelled" in err.value.message

    streamed = list(client.responses.create(model="m", input="bg", background=True, stream=True))
    assert [e.type for e in streamed[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert streamed[0].response.status == "queued" and streamed[-1].type == "response.completed"
    assert client.responses.retrieve(streamed[0].response.id).status == "completed"  # the stream ran it to the end

    fake.background_duration = 0.05
    quick = client.responses.create(model="m", input="soon", background=True)
    assert fake.wait_until(lambda: client.responses.retrieve(quick.id).status == "completed", timeout=3)
    assert client.responses.retrieve(quick.id).output_text == "echo: soon"


def test_responses_reject_unknown_file_ids(openai_fake: FakeOpenAI) -> None:
    client = make_client(openai_fake)
    file_id = client.files.create(file=("doc.txt", b"text"), purpose="user_data").id
    parts = [{"type": "input_text", "text": "read"}, {"type": "input_file", "file_id": file_id}]
    message = {"role": "user", "content": parts}
    assert client.responses.create(model="m", input=[message]).output_text == "echo: read"
    parts[1]["file_id"] = "file-unknown"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input=[message])


# ============================================================================ fault injection
def test_fail_next_reaches_the_sdk(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(500)
    with pytest.raises(openai.InternalServerError) as err:
        client.files.list()
    body = err.value.response.json()["error"]
    assert body["type"] == ("error" if fake.flavor == "azure" else "server_error")
    assert fake.requests[-1].fault == "fail" and fake.requests[-1].status == 500
    client.files.list()  # only the next request failed

    fake.fail_next(429, {"error": {"message": "slow down", "type": "requests", "param": None, "code": None}},
                   headers={"retry-after-ms": "10"})
    with make_client(fake, max_retries=1) as retrying:
        retrying.responses.create(model="m", input="retry me")
    attempts = fake.requests.filter("POST", f"{fake.prefix}/responses")
    assert [r.status for r in attempts] == [429, 200]
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == ["0", "1"]
    assert attempts[0].body_sha256 == attempts[1].body_sha256  # full body replayed
    assert attempts[0].json == {"model": "m", "input": "retry me"}

    fake.fail_next(503, times=2, path=f"{fake.prefix}/responses")
    client.files.list()  # not matched by the path filter
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="m", input="x")


def test_reset_and_delay(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.reset_next()
    with pytest.raises(openai.APIConnectionError):
        client.files.list()
    assert (fake.requests[-1].fault, fake.requests[-1].status) == ("reset", None)

    fake.reset_next(after_bytes=BLOCK_SIZE)  # upstream dies mid-upload
    with pytest.raises(openai.APIConnectionError):
        client.files.create(file=("big.bin", bytes(8 * BLOCK_SIZE)), purpose="assistants")
    assert BLOCK_SIZE <= fake.requests[-1].body_size < 8 * BLOCK_SIZE
    assert fake.files == {}

    fake.delay_next(0.3)
    start = time.monotonic()
    client.files.list()
    assert time.monotonic() - start >= 0.3
    fake.delay_next(0.5)
    with make_client(fake, timeout=0.15) as impatient, pytest.raises(openai.APITimeoutError):
        impatient.files.list()


def test_drop_stream_and_client_disconnect(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.drop_stream_after(3)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model="m", input="a b c", stream=True):
            received.append(event.type)
    assert received == STREAM_EVENT_TYPES[:3]
    assert fake.streams_dropped == 1 and fake.stream_client_disconnects == 0

    # Long enough (~20 events x 0.2 s) that the disconnect is seen well before the last event.
    fake.stream_delay = 0.2
    stream = client.responses.create(model="m", input="a b c d e f g h i j k l m n", stream=True)
    events = iter(stream)
    next(events)
    assert fake.open_streams == 1
    stream.close()  # client goes away mid-stream
    assert fake.wait_until(lambda: fake.stream_client_disconnects == 1 and fake.open_streams == 0, timeout=8)
    assert fake.streams_completed == 0

    fake.stream_delay = 0
    assert len(list(client.responses.create(model="m", input="ok", stream=True))) == len(STREAM_EVENT_TYPES) - 1
    # The fake counts a stream as completed after its last write returns: the client may be first.
    assert fake.wait_until(lambda: fake.streams_completed == 1, timeout=5)
