"""The router: every (method, path) of the API, under /v1 and a base path, one trailing slash, 404 and 405."""
from __future__ import annotations

import pytest

from proxy.errors import GatewayError
from proxy.pipeline import OPERATIONS
from proxy.routes import Router

ROUTES = [
    ("POST", "files", "files.create", None),
    ("GET", "files", "files.list", None),
    ("GET", "files/file-abc", "files.retrieve", "file-abc"),
    ("DELETE", "files/file-abc", "files.delete", "file-abc"),
    ("GET", "files/file-abc/content", "files.content", "file-abc"),
    ("POST", "responses", "responses.create", None),
    ("GET", "responses/resp_1", "responses.retrieve", "resp_1"),
    ("DELETE", "responses/resp_1", "responses.delete", "resp_1"),
    ("POST", "responses/resp_1/cancel", "responses.cancel", "resp_1"),
    ("GET", "responses/resp_1/input_items", "responses.input_items", "resp_1"),
    ("POST", "batches", "batches.create", None),
    ("GET", "batches", "batches.list", None),
    ("GET", "batches/batch_1", "batches.retrieve", "batch_1"),
    ("POST", "batches/batch_1/cancel", "batches.cancel", "batch_1"),
    ("POST", "uploads", "uploads.create", None),
    ("POST", "uploads/upload_1/parts", "uploads.parts", "upload_1"),
    ("POST", "uploads/upload_1/complete", "uploads.complete", "upload_1"),
    ("POST", "uploads/upload_1/cancel", "uploads.cancel", "upload_1"),
]

router = Router(["/v1", "/api/llm"])


def test_every_operation_has_a_route_and_every_route_an_operation():
    assert sorted(op for _m, _p, op, _id in ROUTES) == sorted(OPERATIONS)


@pytest.mark.parametrize("prefix", ["/v1", "/api/llm"])
@pytest.mark.parametrize("method,path,op,object_id", ROUTES)
def test_route_matches_its_operation_and_id(prefix, method, path, op, object_id):
    assert router.match(method, f"{prefix}/{path}") == (op, object_id)


@pytest.mark.parametrize("method,path,op,object_id", ROUTES)
def test_one_trailing_slash_is_tolerated(method, path, op, object_id):
    assert router.match(method, f"/v1/{path}/") == (op, object_id)


@pytest.mark.parametrize("path", ["/v1/files//", "/v1/files/file-abc//", "/v1//files", "/v1/files//content"])
def test_empty_segments_are_not_found(path):
    with pytest.raises(GatewayError) as e:
        router.match("GET", path)
    assert e.value.status == 404 and e.value.code == "unknown_url"


@pytest.mark.parametrize("path", ["/v1/batches/batch_1/output", "/v1/uploads/upload_1", "/v2/files", "/files", "/v1/files/a/b/c",
                                  "/v1/files/a/contents", "/v1filesx", "/api/llmx/files"])
def test_unknown_path_is_404_unknown_url(path):
    with pytest.raises(GatewayError) as e:
        router.match("GET", path)
    assert e.value.status == 404 and e.value.code == "unknown_url"
    assert (e.value.type, e.value.message) == ("invalid_request_error", f"Unknown path: GET {path}")


@pytest.mark.parametrize("method,path,allow", [
    ("PUT", "/v1/files", "GET, POST"),
    ("POST", "/v1/files/file-abc", "DELETE, GET"),
    ("DELETE", "/v1/files/file-abc/content", "GET"),
    ("GET", "/v1/responses/resp_1/cancel", "POST"),
    ("PATCH", "/v1/responses/", "POST"),
    ("DELETE", "/v1/batches/batch_1", "GET"),
    ("GET", "/v1/batches/batch_1/cancel", "POST"),
])
def test_wrong_method_is_405_naming_the_allowed_ones(method, path, allow):
    with pytest.raises(GatewayError) as e:
        router.match(method, path)
    assert e.value.status == 405 and e.value.code == "method_not_allowed"
    assert e.value.response_headers()["Allow"] == allow
    assert e.value.message == f"Method {method} is not allowed on {path}; use {allow}."


@pytest.mark.parametrize("path,op", [("/healthz", "admin.healthz"), ("/readyz", "admin.readyz"),
                                     ("/metrics", "admin.metrics"), ("/openapi.json", "admin.openapi")])
def test_admin_paths(path, op):
    assert router.match("GET", path) == (op, None)


def test_longest_base_path_wins():
    nested = Router(["/api/llm", "/api/llm/v1"])
    assert nested.match("GET", "/api/llm/v1/files") == ("files.list", None)
    assert nested.match("GET", "/api/llm/files") == ("files.list", None)


def test_root_base_path_serves_the_api_at_the_root():
    assert Router(["/"]).match("GET", "/files/file-abc") == ("files.retrieve", "file-abc")


def test_base_path_under_another_base_path_is_tried_first():
    # "/gw/files" is a base path of its own: under it "/gw/files/files" is the file list, not
    # file "files" under "/gw"; a path it does not serve still falls through to "/gw".
    nested = Router(["/gw", "/gw/files"])
    assert nested.match("GET", "/gw/files/files") == ("files.list", None)
    assert nested.match("GET", "/gw/files/file-abc") == ("files.retrieve", "file-abc")


def test_base_path_trailing_slash_is_dropped_and_nothing_else():
    assert Router(["/api/X/"]).match("GET", "/api/X/files") == ("files.list", None)


def test_the_same_answers_come_again_and_only_id_less_paths_are_kept():
    """The second match of a path is the first's answer (from the router's memory when the path
    has no id); paths with ids, unknown paths and wrong methods are never kept, so the memory
    holds at most each collection under each prefix, with and without its slash."""
    r = Router(["/v1", "/api/llm"])
    paths = [(m, f"{prefix}/{p}{slash}") for m, p, _, _ in ROUTES for prefix in ("/v1", "/api/llm")
             for slash in ("", "/")]
    first = [r.match(m, p) for m, p in paths]
    assert [r.match(m, p) for m, p in paths] == first
    for i in range(500):
        r.match("GET", f"/v1/files/file-{i}")
        for method, path in (("GET", f"/v1/nothing/{i}"), ("PUT", "/v1/files"), ("GET", f"/v1/files/file-{i}/x")):
            with pytest.raises(GatewayError):
                r.match(method, path)
    collections = {(m, p) for m, p, _, oid in ROUTES if oid is None}
    assert len(r._collections) == len(collections) * 2 * 2
    assert all(oid is None for _, oid in r._collections.values())
    with pytest.raises(GatewayError) as e:  # a method the collection does not take: still a 405
        r.match("DELETE", "/v1/responses")
    assert e.value.status == 405
