"""Vertex AI Gemini batch predictions (``predictions.jsonl``) → OpenAI batch-output rows
(docs/provider-facts.md §8.2).

Each line is ``{"request", "status", "response", "processed_time"}``: ``request`` echoes the
input row, whose ``labels`` carry the ``custom_id`` (:data:`~proxy.transforms.batch_vertex.LABEL_KEY`);
``status`` is empty on success and an error message otherwise; ``response`` is a
GenerateContentResponse (``candidates[0].content.parts[].text``, ``finishReason``,
``usageMetadata``, ``modelVersion``).
"""
from __future__ import annotations

from typing import Any

from .batch_output import Completion, Failure, Kind, Result, ResultContext, ResultTranslator, as_int
from .batch_vertex import LABEL_KEY

# Gemini finishReason → OpenAI finish_reason (anything else: stop).
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "stop"}


def gemini_completion(response: dict[str, Any], default_model: str) -> Completion:
    candidates = response.get("candidates") or []
    usage = response.get("usageMetadata") or {}
    model = response.get("modelVersion")
    model = model if isinstance(model, str) and model else default_model
    prompt = as_int(usage.get("promptTokenCount"))
    completion = as_int(usage.get("candidatesTokenCount")) + as_int(usage.get("thoughtsTokenCount"))
    if not candidates:  # the prompt itself was blocked (promptFeedback.blockReason)
        return Completion(model, "", "content_filter", prompt, completion)
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
    return Completion(model, text, _FINISH.get(candidate.get("finishReason") or "STOP", "stop"), prompt, completion)


class VertexResultReader:
    """One ``predictions.jsonl`` line → (the custom_id label, result)."""

    def __init__(self, default_model: str = "") -> None:
        self.default_model = default_model.rpartition("/")[2]

    def __call__(self, row: dict[str, Any]) -> tuple[str | None, Result]:
        request = row.get("request")
        labels = request.get("labels") if isinstance(request, dict) else None
        carrier = labels.get(LABEL_KEY) if isinstance(labels, dict) else None
        carrier = carrier if isinstance(carrier, str) else None
        status = row.get("status")
        response = row.get("response")
        if status or not isinstance(response, dict):
            return carrier, _failure(status)
        return carrier, gemini_completion(response, self.default_model)


def _failure(status: Any) -> Failure:
    # ``status`` is a message string [2nd]; a google.rpc.Status object ({code, message}) is read too.
    if isinstance(status, dict):
        code = status.get("code")
        message = status.get("message")
        return Failure(message if isinstance(message, str) and message else "The request failed at Vertex AI.",
                       status_code=_HTTP.get(code, 500) if isinstance(code, int) else 500)
    if isinstance(status, str) and status:  # a message only: no HTTP status to claim
        return Failure(status, code="vertex_request_failed")
    return Failure("Vertex AI returned no response for this request.", status_code=500)


# google.rpc.Code → HTTP status.
_HTTP = {3: 400, 5: 404, 7: 403, 8: 429, 9: 400, 11: 400, 13: 500, 14: 503, 16: 401, 4: 504}


def vertex_result_translator(ctx: ResultContext, kind: Kind, *, default_model: str = "",
                             track: bool = False) -> ResultTranslator:
    return ResultTranslator(VertexResultReader(default_model), ctx, kind, track=track)


def input_carrier(row: dict[str, Any]) -> str | None:
    """The carrier of an input row ``{"request": {…, "labels": {custom_id}}}`` (for UnrunRows)."""
    carrier = row["request"]["labels"][LABEL_KEY]
    return carrier if isinstance(carrier, str) else None
