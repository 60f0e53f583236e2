"""The OpenAPI 3.1 document of the gateway's API surface, served at ``GET /openapi.json``.

It describes what the gateway itself implements (the Files, Uploads, Responses and Batches
operations of ``routes.py``), with compact but faithful subsets of OpenAI's own schemas (openai-openapi:
``OpenAIFile``, ``ListFilesResponse``, ``DeleteFileResponse``, ``CreateFileRequest``,
``CreateResponse``, ``Response``, ``ResponseItemList``, ``Batch``, ``ListBatchesResponse``,
``CreateBatchRequest``, ``ErrorResponse``) where the real API
differs from OpenAI's document (``first_id``/``last_id``/``expires_at`` are null when empty,
purpose ``evals``), the real behaviour wins. Every error each operation can answer with is
listed, in the gateway's ``{"error": {...}}`` shape with ``x-should-retry``.

Only the config decides what varies (servers from ``server.base_path``, whether a key is
required), so the document is built and serialised once at start-up. The test suite runs
schemathesis against a live gateway with it: keep it true when an operation changes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .ids import MAX_ID_LENGTH

if TYPE_CHECKING:
    from .config import Config

DOC_VERSION = "1.0.0"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


# -- schemas ------------------------------------------------------------------------------

FILE_PURPOSES_IN = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
# What a stored file can say: the upload purposes plus the outputs OpenAI produces itself.
FILE_PURPOSES_OUT = ["assistants", "assistants_output", "batch", "batch_output", "fine-tune",
                     "fine-tune-results", "vision", "user_data", "evals"]

INCLUDE_ENUM = ["file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
                "message.input_image.image_url", "computer_call_output.output.image_url",
                "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs"]

_METADATA: Schema = _nullable({
    "type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
    "description": "Up to 16 key-value pairs (keys up to 64 characters, values up to 512)."})

_INPUT_CONTENT: Schema = {"oneOf": [
    {"type": "object", "title": "InputText", "required": ["type", "text"],
     "properties": {"type": {"const": "input_text"}, "text": {"type": "string"}}},
    {"type": "object", "title": "InputImage", "required": ["type"],
     "properties": {"type": {"const": "input_image"}, "image_url": {"type": "string"},
                    "file_id": {"type": "string"}, "detail": {"enum": ["low", "high", "auto", "original"]}}},
    {"type": "object", "title": "InputFile", "required": ["type"],
     "properties": {"type": {"const": "input_file"}, "file_id": {"type": "string"},
                    "file_url": {"type": "string"}, "file_data": {"type": "string"},
                    "filename": {"type": "string"}}},
]}

# OpenAI's EasyInputMessage / InputMessage: the item shape clients send (other item types,
# e.g. function_call_output, pass through untouched; they are not generated here).
_INPUT_MESSAGE: Schema = {
    "type": "object", "title": "InputMessage", "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "assistant", "system", "developer"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _INPUT_CONTENT}]},
    },
}

# openai-python types/batch.py, batch_create_params.py (docs/provider-facts.md §1.9)
BATCH_ENDPOINTS = ["/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
                   "/v1/images/generations", "/v1/images/edits", "/v1/videos"]
BATCH_STATUSES = ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                  "cancelled"]
_BATCH_TIMES = ["in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                "cancelling_at", "cancelled_at"]

_LIFECYCLE_EVENTS = ["response.created", "response.queued", "response.in_progress", "response.completed",
                     "response.failed", "response.incomplete"]

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string", "description": "invalid_request_error, authentication_error, "
                     "permission_error, rate_limit_error, server_error, or an upstream's own type."},
            "param": {"type": ["string", "null"], "description": "The field, header or query parameter at fault."},
            "code": {"type": ["string", "null"], "description": "A machine-readable code, e.g. "
                     "file_not_found, invalid_purpose, storage_quota_exceeded, upstream_timeout."},
        },
    },
    "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": _ref("Error")}},
    "OpenAIFile": {
        "type": "object", "title": "The File object",
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "bytes": {"type": "integer", "minimum": 0},
            "created_at": {"type": "integer", "description": "Unix seconds."},
            "expires_at": {"type": ["integer", "null"], "description": "Unix seconds; null: kept until deleted."},
            "filename": {"type": "string"},
            "purpose": {"enum": FILE_PURPOSES_OUT},
            "status": {"enum": ["uploaded", "processed", "error"], "deprecated": True},
            "status_details": {"type": ["string", "null"], "deprecated": True},
        },
    },
    "ListFilesResponse": {
        "type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("OpenAIFile")},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    },
    "DeleteFileResponse": {
        "type": "object", "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"type": "boolean"}},
    },
    "CreateFileRequest": {
        "type": "object", "required": ["file", "purpose"], "additionalProperties": False,
        "description": "Multipart form fields, named as the OpenAI SDK sends them. Each field at most once; "
                       "one file per request.",
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream",
                     "description": "The file. purpose=batch needs a .jsonl file of valid batch request lines."},
            "purpose": {"enum": FILE_PURPOSES_IN},
            "expires_after[anchor]": {"const": "created_at"},
            "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000,
                                       "description": "Needs expires_after[anchor]."},
        },
    },
    # The Uploads API (openai-python types/upload.py, uploads/upload_part.py, upload_create_params.py)
    "CreateUploadRequest": {
        "type": "object", "required": ["bytes", "filename", "mime_type", "purpose"],
        "properties": {
            "bytes": {"type": "integer", "minimum": 0, "maximum": 8 << 30,
                      "description": "The file's size; reserved against the quota until the upload is settled."},
            "filename": {"type": "string", "minLength": 1, "maxLength": 1024},
            "mime_type": {"type": "string", "minLength": 1},
            "purpose": {"enum": FILE_PURPOSES_IN},
            "expires_after": {"type": "object", "required": ["anchor", "seconds"],
                              "description": "The expiry policy of the File the upload creates.",
                              "properties": {"anchor": {"const": "created_at"},
                                             "seconds": {"type": "integer", "minimum": 3600, "maximum": 2592000}}},
        },
    },
    "AddUploadPartRequest": {
        "type": "object", "required": ["data"],
        "properties": {"data": {"type": "string", "contentMediaType": "application/octet-stream",
                                "description": "At most 64 MiB."}},
    },
    "CompleteUploadRequest": {
        "type": "object", "required": ["part_ids"],
        "properties": {"part_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 10000,
                                    "description": "The parts, in the order that assembles the file."},
                       "md5": {"type": "string", "description": "The md5 of the whole file, checked."}},
    },
    "Upload": {
        "type": "object", "title": "The Upload object",
        "required": ["id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "upload"},
            "bytes": {"type": "integer", "minimum": 0},
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "filename": {"type": "string"},
            "purpose": {"type": "string"},
            "status": {"enum": ["pending", "completed", "cancelled", "expired"]},
            "file": _nullable(_ref("OpenAIFile")),
        },
    },
    "UploadPart": {
        "type": "object", "required": ["id", "object", "created_at", "upload_id"],
        "properties": {"id": {"type": "string"}, "object": {"const": "upload.part"},
                       "created_at": {"type": "integer"}, "upload_id": {"type": "string"}},
    },
    "InputMessage": _INPUT_MESSAGE,
    "CreateResponse": {
        "type": "object", "required": ["model"],
        "description": "A compact subset of OpenAI's CreateResponse; other fields are forwarded unchanged.",
        "properties": {
            "model": {"type": "string", "minLength": 1,
                      "description": "A model id, or '<provider-name>/<model>' to choose a provider."},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": _ref("InputMessage")}]},
            "instructions": {"type": ["string", "null"]},
            "previous_response_id": {"type": ["string", "null"]},
            "stream": {"type": ["boolean", "null"], "description": "true: the answer is text/event-stream."},
            "stream_options": _nullable({"type": "object",
                                         "properties": {"include_obfuscation": {"type": "boolean"}}}),
            "background": {"type": ["boolean", "null"]},
            "store": {"type": ["boolean", "null"]},
            "include": _nullable({"type": "array", "items": {"enum": INCLUDE_ENUM}}),
            "max_output_tokens": {"type": ["integer", "null"], "minimum": 16},
            "max_tool_calls": {"type": ["integer", "null"], "minimum": 1},
            "metadata": _METADATA,
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
            "parallel_tool_calls": {"type": ["boolean", "null"]},
            "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]},
                                      {"type": "object", "required": ["type"],
                                       "properties": {"type": {"type": "string"}}}]},
            "tools": {"type": "array", "items": {"type": "object", "required": ["type"],
                                                 "properties": {"type": {"type": "string"}}}},
            "text": {"type": "object", "properties": {
                "format": {"type": "object", "required": ["type"],
                           "properties": {"type": {"enum": ["text", "json_schema", "json_object"]}}},
                "verbosity": {"enum": ["low", "medium", "high"]}}},
            "reasoning": _nullable({"type": "object", "properties": {
                "effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max", None]},
                "summary": {"enum": ["auto", "concise", "detailed", None]}}}),
            "truncation": {"enum": ["auto", "disabled", None]},
            "service_tier": {"enum": ["auto", "default", "flex", "scale", "priority", None]},
            "user": {"type": "string"},
            "safety_identifier": {"type": ["string", "null"], "maxLength": 64},
            "prompt_cache_key": {"type": ["string", "null"]},
        },
    },
    "ResponseUsage": {
        "type": "object",
        "required": ["input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"],
        "properties": {
            "input_tokens": {"type": "integer"},
            "input_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer"}}},
            "output_tokens": {"type": "integer"},
            "output_tokens_details": {"type": "object", "properties": {"reasoning_tokens": {"type": "integer"}}},
            "total_tokens": {"type": "integer"},
        },
    },
    "OutputItem": {
        "type": "object", "required": ["type"],
        "description": "A message, function_call, reasoning or built-in tool call item.",
        "properties": {"type": {"type": "string"}, "id": {"type": "string"}, "status": {"type": "string"}},
    },
    "Response": {
        "type": "object", "title": "The response object",
        "required": ["id", "object", "created_at", "error", "incomplete_details", "instructions", "model",
                     "tools", "output", "parallel_tool_calls", "metadata", "tool_choice", "temperature", "top_p"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "created_at": {"type": "number", "description": "Unix seconds (Azure sends a float)."},
            "completed_at": {"type": ["number", "null"]},
            "status": {"enum": ["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]},
            "background": {"type": ["boolean", "null"]},
            "error": _nullable({"type": "object", "required": ["code", "message"],
                                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}),
            "incomplete_details": _nullable({"type": "object", "properties": {
                "reason": {"enum": ["max_output_tokens", "content_filter"]}}}),
            "instructions": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}]},
            "max_output_tokens": {"type": ["integer", "null"]},
            "max_tool_calls": {"type": ["integer", "null"]},
            "model": {"type": "string"},
            "output": {"type": "array", "items": _ref("OutputItem")},
            "parallel_tool_calls": {"type": "boolean"},
            "previous_response_id": {"type": ["string", "null"]},
            "reasoning": {"type": ["object", "null"]},
            "service_tier": {"type": ["string", "null"]},
            "store": {"type": ["boolean", "null"]},
            "temperature": {"type": ["number", "null"]},
            "text": {"type": "object"},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "tools": {"type": "array", "items": {"type": "object"}},
            "top_logprobs": {"type": ["integer", "null"]},
            "top_p": {"type": ["number", "null"]},
            "truncation": {"enum": ["auto", "disabled", None]},
            "usage": _nullable(_ref("ResponseUsage")),
            "user": {"type": ["string", "null"]},
            "metadata": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]},
            "provider": {"type": "string", "description": "Added by the gateway: the type of the provider "
                         "that answered (openai, azure, groq)."},
        },
    },
    "ResponseStreamEvent": {
        "type": "object", "required": ["type", "sequence_number"],
        "description": "One event of a Responses stream (the JSON in an SSE data field).",
        "properties": {"type": {"type": "string"}, "sequence_number": {"type": "integer", "minimum": 0}},
        "allOf": [
            {"if": {"required": ["type"], "properties": {"type": {"enum": _LIFECYCLE_EVENTS}}},
             "then": {"required": ["response"], "properties": {"response": _ref("Response")}}},
            # also what the gateway sends when an upstream stream breaks
            {"if": {"required": ["type"], "properties": {"type": {"const": "error"}}},
             "then": {"required": ["message"], "properties": {
                 "message": {"type": "string"}, "code": {"type": ["string", "null"]},
                 "param": {"type": ["string", "null"]}}}},
        ],
    },
    "ServerSentEvent": {
        "type": "object", "required": ["data"],
        "properties": {"event": {"type": "string"},
                       "data": {"type": "string", "contentMediaType": "application/json",
                                "contentSchema": _ref("ResponseStreamEvent")}},
    },
    "DeleteResponseResponse": {
        "type": "object", "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"type": "boolean"}},
    },
    "Batch": {
        "type": "object", "title": "The batch object",
        "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "batch"},
            "endpoint": {"type": "string"},
            "input_file_id": {"type": "string"},
            "completion_window": {"type": "string"},
            "status": {"enum": BATCH_STATUSES},
            "output_file_id": {"type": ["string", "null"]},
            "error_file_id": {"type": ["string", "null"]},
            "created_at": {"type": "integer"},
            **{name: {"type": ["integer", "null"]} for name in _BATCH_TIMES},
            "request_counts": _nullable({"type": "object", "required": ["total", "completed", "failed"],
                                         "properties": {k: {"type": "integer"} for k in ("total", "completed", "failed")}}),
            "errors": _nullable({"type": "object", "properties": {
                "object": {"type": "string"},
                "data": {"type": "array", "items": {"type": "object", "properties": {
                    "code": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]},
                    "param": {"type": ["string", "null"]}, "line": {"type": ["integer", "null"]}}}}}}),
            "metadata": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]},
            "model": {"type": ["string", "null"]},
        },
    },
    "ListBatchesResponse": {
        "type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Batch")},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    },
    "CreateBatchRequest": {
        "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string", "minLength": 1,
                              "description": "A purpose=batch file; it routes the batch to its provider."},
            "endpoint": {"enum": BATCH_ENDPOINTS, "description": "One the input file's provider runs."},
            "completion_window": {"type": "string", "minLength": 1,
                                  "description": "24h (Groq: 24h to 7d)."},
            "metadata": _METADATA,
            "output_expires_after": {"type": "object", "required": ["anchor", "seconds"], "properties": {
                "anchor": {"const": "created_at"},
                "seconds": {"type": "integer", "minimum": 3600, "maximum": 2592000}}},
        },
    },
    "ResponseItemList": {
        "type": "object", "required": ["object", "data", "has_more", "first_id", "last_id"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object", "required": ["type"],
                                                "properties": {"type": {"type": "string"}, "id": {"type": "string"}}}},
            "has_more": {"type": "boolean"},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
        },
    },
}

# -- errors -------------------------------------------------------------------------------

_ERROR_TEXT = {
    "400": "Bad input, naming the field (an unknown provider in a routing header, a malformed body, "
           "an invalid purpose, a batch file line, an operation the provider does not support).",
    "401": "Missing or wrong gateway key.",
    "404": "No such object (also another tenant's id, and an id the gateway never saw).",
    "405": "Method not allowed on this path.",
    "409": "The Upload is being completed by another request.",
    "413": "Too large: the file, a batch file or the JSON body passes its limit.",
    "429": "Storage quota exhausted (x-should-retry: false), or an upstream rate limit.",
    "4XX": "Another client error from the upstream provider, with its status and message kept.",
    "500": "The gateway failed to handle the request.",
    "502": "The upstream provider failed, refused the gateway's credentials, or answered badly.",
    "503": "The gateway is draining (shutting down); retry after Retry-After seconds.",
    "504": "The upstream provider did not answer in time.",
}

_SHOULD_RETRY = {"description": "Whether a retry can help; the OpenAI SDK honours it before the status.",
                 "required": True, "schema": {"enum": ["true", "false"]}}


def _error_response(status: str) -> Schema:
    headers: Schema = {"x-should-retry": {"$ref": "#/components/headers/x-should-retry"}}
    if status == "503":
        headers["Retry-After"] = {"description": "Seconds; sent while draining.",
                                  "schema": {"type": "integer", "minimum": 0}}
    return {"description": _ERROR_TEXT[status], "headers": headers,
            "content": {"application/json": {"schema": _ref("ErrorResponse")}}}


# Errors every operation can answer with: auth, routing headers, upstream errors (rate limits
# included), drain.
_COMMON_ERRORS = ("400", "401", "429", "4XX", "500", "502", "503", "504")


def _responses(ok: Schema, *extra_errors: str) -> Schema:
    out: Schema = {"200": ok}
    for status in sorted({*_COMMON_ERRORS, *extra_errors}):
        out[status] = {"$ref": f"#/components/responses/Error{status}"}
    return out


def _json(schema_name: str, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


# -- parameters ---------------------------------------------------------------------------

# proxy.ids.is_wellformed_id
_ID: Schema = {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$"}

PARAMETERS: dict[str, Schema] = {
    "ProviderName": {
        "name": "x-tfy-provider-name", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "The configured provider to use (ignored for an id the gateway recorded: it routes "
                       "to where the object lives). Unknown name: 400."},
    "CustomLlmProvider": {
        "name": "custom-llm-provider", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "LiteLLM's header: a configured provider name, or a provider type that exactly one "
                       "configured provider has."},
    "FileId": {"name": "file_id", "in": "path", "required": True, "schema": _ID,
               "description": "A file id (e.g. file-abc123); another shape is a 404."},
    "BatchId": {"name": "batch_id", "in": "path", "required": True, "schema": _ID,
                "description": "A batch id (e.g. batch_abc123); another shape is a 404."},
    "UploadId": {"name": "upload_id", "in": "path", "required": True, "schema": _ID,
                 "description": "An upload id (e.g. upload_abc123); another shape, or another tenant's, is a 404."},
    "ResponseId": {"name": "response_id", "in": "path", "required": True, "schema": _ID,
                   "description": "A response id (e.g. resp_abc123); another shape is a 404."},
    "Include": {"name": "include[]", "in": "query", "style": "form", "explode": True,
                "schema": {"type": "array", "items": {"enum": INCLUDE_ENUM}},
                "description": "Additional output data (sent as include[]=a&include[]=b, as the OpenAI SDK does)."},
}

_ROUTING = [{"$ref": "#/components/parameters/ProviderName"}, {"$ref": "#/components/parameters/CustomLlmProvider"}]


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ORDER = {"enum": ["asc", "desc"], "default": "desc"}

# -- paths --------------------------------------------------------------------------------

PATHS: dict[str, Schema] = {
    "/files": {
        "parameters": _ROUTING,
        "post": {
            "operationId": "createFile", "tags": ["Files"], "summary": "Upload a file (streamed to the provider).",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _ref("CreateFileRequest"),
                "encoding": {"file": {"contentType": "application/octet-stream"}}}}},
            "responses": _responses(_json("OpenAIFile", "The stored file."), "413", "429"),
        },
        "get": {
            "operationId": "listFiles", "tags": ["Files"],
            "summary": "The caller's files (a pass-through provider's own list for callers that may see it).",
            "parameters": [
                _query("purpose", {"type": "string"}, "Only files with this purpose."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10000},
                       "1 to 10,000; otherwise 400."),
                _query("order", _ORDER, "By created_at; otherwise 400."),
                _query("after", {"type": "string"}, "A file id: the page after it."),
            ],
            "responses": _responses(_json("ListFilesResponse", "A page of files.")),
        },
    },
    "/files/{file_id}": {
        "parameters": [_param("FileId"), *_ROUTING],
        "get": {"operationId": "retrieveFile", "tags": ["Files"], "summary": "The File object.",
                "responses": _responses(_json("OpenAIFile", "The file."), "404")},
        "delete": {"operationId": "deleteFile", "tags": ["Files"],
                   "summary": "Delete the file (its bytes leave the tenant's quota).",
                   "responses": _responses(_json("DeleteFileResponse", "Deleted."), "404")},
    },
    "/files/{file_id}/content": {
        "parameters": [_param("FileId"), *_ROUTING],
        "get": {"operationId": "downloadFile", "tags": ["Files"], "summary": "The file's bytes, streamed.",
                "responses": _responses(
                    {"description": "The content, with the provider's Content-Type (usually "
                                    "application/octet-stream or application/jsonl).",
                     "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                    "404")},
    },
    "/uploads": {
        "parameters": _ROUTING,
        "post": {
            "operationId": "createUpload", "tags": ["Uploads"],
            "summary": "Start an Upload: a file sent in parts (pending for one hour).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CreateUploadRequest")}}},
            "responses": _responses(_json("Upload", "The pending upload."), "413"),
        },
    },
    "/uploads/{upload_id}/parts": {
        "parameters": [_param("UploadId"), *_ROUTING],
        "post": {
            "operationId": "addUploadPart", "tags": ["Uploads"], "summary": "Add a part (streamed, at most 64 MiB).",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _ref("AddUploadPartRequest"),
                "encoding": {"data": {"contentType": "application/octet-stream"}}}}},
            "responses": _responses(_json("UploadPart", "The stored part."), "404", "413"),
        },
    },
    "/uploads/{upload_id}/complete": {
        "parameters": [_param("UploadId"), *_ROUTING],
        "post": {
            "operationId": "completeUpload", "tags": ["Uploads"],
            "summary": "Assemble the parts, in this order, into a File.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CompleteUploadRequest")}}},
            "responses": _responses(_json("Upload", "The completed upload with its File."), "404", "409", "413"),
        },
    },
    "/uploads/{upload_id}/cancel": {
        "parameters": [_param("UploadId"), *_ROUTING],
        "post": {"operationId": "cancelUpload", "tags": ["Uploads"], "summary": "Cancel the upload; its parts go.",
                 "responses": _responses(_json("Upload", "The cancelled upload."), "404")},
    },
    "/responses": {
        "parameters": _ROUTING,
        "post": {
            "operationId": "createResponse", "tags": ["Responses"],
            "summary": "Create a model response: JSON, or SSE with stream=true (forwarded event by event).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CreateResponse")}}},
            "responses": _responses({
                "description": "The Response object, or its server-sent events with stream=true.",
                "content": {"application/json": {"schema": _ref("Response")},
                            "text/event-stream": {"schema": _ref("ServerSentEvent")}}}, "404", "413"),
        },
    },
    "/responses/{response_id}": {
        "parameters": [_param("ResponseId"), *_ROUTING],
        "get": {
            "operationId": "getResponse", "tags": ["Responses"], "summary": "Retrieve a response (or replay its events).",
            "parameters": [
                _param("Include"),
                _query("stream", {"type": "boolean"}, "true: the stored events as SSE. Once, as true or false; "
                       "anything else is a 400."),
                _query("starting_after", {"type": "integer", "minimum": -1},
                       "With stream=true: resume after this sequence_number."),
                _query("include_obfuscation", {"type": "boolean"}, "Stream obfuscation fields (default true)."),
            ],
            "responses": _responses({
                "description": "The Response object, or its events with stream=true.",
                "content": {"application/json": {"schema": _ref("Response")},
                            "text/event-stream": {"schema": _ref("ServerSentEvent")}}}, "404"),
        },
        "delete": {"operationId": "deleteResponse", "tags": ["Responses"], "summary": "Delete a stored response.",
                   "responses": _responses(_json("DeleteResponseResponse", "Deleted."), "404")},
    },
    "/responses/{response_id}/cancel": {
        "parameters": [_param("ResponseId"), *_ROUTING],
        "post": {"operationId": "cancelResponse", "tags": ["Responses"],
                 "summary": "Cancel a background response (others: the upstream's 400).",
                 "responses": _responses(_json("Response", "The cancelled response."), "404")},
    },
    "/responses/{response_id}/input_items": {
        "parameters": [_param("ResponseId"), *_ROUTING],
        "get": {
            "operationId": "listInputItems", "tags": ["Responses"], "summary": "The input items of a response.",
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "1 to 100."),
                _query("order", _ORDER, "By position."),
                _query("after", {"type": "string"}, "An item id: the page after it."),
                _param("Include"),
            ],
            "responses": _responses(_json("ResponseItemList", "A page of input items."), "404"),
        },
    },
    "/batches": {
        "parameters": _ROUTING,
        "post": {
            "operationId": "createBatch", "tags": ["Batches"],
            "summary": "Create a batch on the input file's provider (checked before anything goes upstream).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CreateBatchRequest")}}},
            "responses": _responses(_json("Batch", "The created batch."), "404", "413"),
        },
        "get": {
            "operationId": "listBatches", "tags": ["Batches"],
            "summary": "The caller's batches, newest first (a pass-through provider's own list for callers "
                       "that may see it, when a header names the provider).",
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "1 to 100."),
                _query("after", {"type": "string"}, "A batch id: the page after it."),
            ],
            "responses": _responses(_json("ListBatchesResponse", "A page of batches.")),
        },
    },
    "/batches/{batch_id}": {
        "parameters": [_param("BatchId"), *_ROUTING],
        "get": {"operationId": "retrieveBatch", "tags": ["Batches"], "summary": "The batch, as its provider has it now.",
                "responses": _responses(_json("Batch", "The batch."), "404")},
    },
    "/batches/{batch_id}/cancel": {
        "parameters": [_param("BatchId"), *_ROUTING],
        "post": {"operationId": "cancelBatch", "tags": ["Batches"], "summary": "Cancel a batch (cancelling, then cancelled).",
                 "responses": _responses(_json("Batch", "The batch."), "404")},
    },
}

_ALL_ERRORS = sorted({s for p in PATHS.values() for op in p.values() if isinstance(op, dict)
                      for s in op.get("responses", {}) if s != "200"})


def build(config: "Config") -> dict[str, Any]:
    """The document for this config (servers and security depend on it)."""
    base = config.server.base_path
    servers = [{"url": "/v1", "description": "Always served."}]
    if base != "/v1":
        servers.append({"url": base or "/", "description": "server.base_path"})
    security: list[Schema] = [{"bearer": []}, {"apiKey": []}]
    if not config.auth.enabled:
        security.append({})  # auth off: no key needed
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sluicegate",
            "version": DOC_VERSION,
            "description": "OpenAI-compatible Files, Uploads, Responses and Batches API across providers. Errors are "
                           "always {\"error\": {message, type, param, code}} with x-should-retry.",
        },
        "servers": servers,
        "security": security,
        "tags": [{"name": "Files"}, {"name": "Uploads"}, {"name": "Responses"}, {"name": "Batches"}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A gateway key (auth.keys)."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key",
                           "description": "The same key, Azure-style."},
            },
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "headers": {"x-should-retry": _SHOULD_RETRY},
            "responses": {f"Error{s}": _error_response(s) for s in _ALL_ERRORS},
        },
    }


def document_bytes(config: "Config") -> bytes:
    return orjson.dumps(build(config))
