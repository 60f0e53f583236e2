"""The sans-IO pieces that read a request body: the object ids it carries, and the types of the
fields the gateway acts on."""
from __future__ import annotations

import pytest

from proxy.body_checks import check_body
from proxy.errors import GatewayError
from proxy.references import body_references


def refs(body):
    return [(r.kind, r.id, r.param) for r in body_references("responses.create", body)]


def test_every_id_carrying_field_of_a_responses_body():
    body = {
        "model": "gpt-4o",
        "previous_response_id": "resp_prev",
        "conversation": {"id": "conv_1"},
        "prompt": {"id": "pmpt_1", "version": "2",
                   "variables": {"file_id": "just a value", "doc": {"type": "input_file", "file_id": "file-var"}}},
        "prompt_cache_options": {"comparison_response_id": "resp_cmp"},
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "item_reference", "id": "msg_ref"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_file", "file_id": "file-a"},
                {"type": "input_image", "file_id": "file-img", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/x.png", "file_id": None}]},
            {"id": "rs_only_id"},
            {"type": "computer_call_output", "call_id": "c1", "output": {"type": "computer_screenshot", "file_id": "file-shot"}},
            {"type": "message", "role": "assistant", "id": "msg_out", "content": [
                {"type": "output_text", "text": "x", "annotations": [{"type": "file_citation", "file_id": "file-cited"}]}]},
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
        ],
        "tools": [
            {"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"]},
            {"type": "code_interpreter", "container": "cntr_1"},
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-ci"]}},
            {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"file_id": {"type": "string"}}}},
            {"type": "shell", "environment": {"type": "container_reference", "container_id": "cntr_2"}},
            {"type": "image_generation", "input_image_mask": {"file_id": "file-mask"}},
        ],
        "metadata": {"file_id": "not-an-id"},
        "text": {"format": {"type": "json_schema", "name": "o", "schema": {"properties": {"file_ids": {"type": "array"}}}}},
    }
    assert refs(body) == [
        ("response", "resp_prev", "previous_response_id"),
        ("conversation", "conv_1", "conversation.id"),
        ("prompt", "pmpt_1", "prompt.id"),
        ("file", "file-var", "prompt.variables.doc.file_id"),
        ("response", "resp_cmp", "prompt_cache_options.comparison_response_id"),
        ("item", "msg_ref", "input[1].id"),
        ("file", "file-a", "input[2].content[1].file_id"),
        ("file", "file-img", "input[2].content[2].file_id"),
        ("item", "rs_only_id", "input[3].id"),
        ("file", "file-shot", "input[4].output.file_id"),
        ("vector_store", "vs_1", "tools[0].vector_store_ids[0]"),
        ("vector_store", "vs_2", "tools[0].vector_store_ids[1]"),
        ("container", "cntr_1", "tools[1].container"),
        ("file", "file-ci", "tools[2].container.file_ids[0]"),
        ("container", "cntr_2", "tools[4].environment.container_id"),
        ("file", "file-mask", "tools[5].input_image_mask.file_id"),
    ]


def test_plain_bodies_carry_nothing_and_strings_are_ids():
    assert refs({"model": "m", "input": "hello"}) == []
    assert refs({"model": "m", "conversation": "conv_s", "previous_response_id": None}) == [
        ("conversation", "conv_s", "conversation")]
    assert body_references("files.list", {"file_id": "x"}) == []


@pytest.mark.parametrize("body, param", [
    ({"previous_response_id": 5}, "previous_response_id"),
    ({"conversation": {"id": ""}}, "conversation.id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": {"x": 1}}]}]}, "input[0].content[0].file_id"),
    ({"tools": [{"type": "file_search", "vector_store_ids": "vs_1"}]}, "tools[0].vector_store_ids"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1", 2]}]}, "tools[0].vector_store_ids[1]"),
])
def test_an_id_that_is_not_a_string_is_a_400_naming_it(body, param):
    with pytest.raises(GatewayError) as e:
        refs({"model": "m", **body})
    assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize("field, value", [
    ("stream", 1), ("stream", "yes"), ("stream", "false"), ("background", "true"), ("store", 0),
    ("previous_response_id", 7), ("input", 3), ("input", ["text"]), ("input", {"role": "user"}),
])
def test_fields_the_gateway_acts_on_must_have_their_type(field, value):
    with pytest.raises(GatewayError) as e:
        check_body("responses.create", {"model": "m", field: value})
    assert e.value.status == 400 and e.value.param == field and e.value.code == "invalid_type"


def test_well_typed_fields_pass():
    for body in ({"model": "m", "stream": True, "background": False, "store": None, "input": "x"},
                 {"model": "m", "input": [{"role": "user", "content": "x"}], "previous_response_id": "resp_1"}):
        check_body("responses.create", body)
