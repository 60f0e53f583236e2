"""Anthropic Message Batches results → OpenAI batch-output rows (docs/provider-facts.md §5.7).

Each results line is ``{"custom_id", "result": {"type", …}}``:

* ``succeeded`` — ``result.message`` is a Messages response: its text blocks, ``stop_reason``
  and ``usage`` become a ``chat.completion`` (:func:`claude_completion`, shared with Claude on
  Bedrock, whose ``modelOutput`` is the same Messages response);
* ``errored`` — ``result.error`` is Anthropic's error body ``{"type":"error","error":{"type",
  "message"}}``: an error row with the HTTP status of that error type (§5.6);
* ``canceled`` / ``expired`` — never run: an error row without a response (OpenAI's
  ``batch_cancelled`` / ``batch_expired``).
"""
from __future__ import annotations

from typing import Any

from .batch_output import CANCELLED, EXPIRED, Completion, Failure, Kind, Result, ResultContext, ResultTranslator, as_int

# Messages stop_reason → OpenAI finish_reason.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
           "tool_use": "tool_calls", "refusal": "content_filter"}

# Anthropic error types → HTTP status (docs/provider-facts.md §5.6).
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
           "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
           "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


def claude_completion(message: dict[str, Any], default_model: str) -> Completion:
    """A Messages response (Anthropic's, or Claude's InvokeModel output on Bedrock)."""
    content = message["content"]
    text = "".join(block["text"] for block in content if block.get("type") == "text")
    usage = message.get("usage") or {}
    prompt = (as_int(usage.get("input_tokens")) + as_int(usage.get("cache_creation_input_tokens"))
              + as_int(usage.get("cache_read_input_tokens")))
    model = message.get("model")
    return Completion(
        model=model if isinstance(model, str) and model else default_model,
        text=text,
        finish_reason=_FINISH.get(message.get("stop_reason") or "end_turn", "stop"),
        prompt_tokens=prompt,
        completion_tokens=as_int(usage.get("output_tokens")),
    )


def anthropic_failure(body: Any) -> Failure:
    """Anthropic's error body ``{"type":"error","error":{"type","message"}}`` as a Failure."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return Failure("The request failed at Anthropic.", status_code=500, type="server_error")
    kind = error.get("type")
    status = _STATUS.get(kind if isinstance(kind, str) else "", 500)
    message = error.get("message")
    return Failure(message if isinstance(message, str) and message else f"Anthropic error {kind}",
                   status_code=status, code=kind if isinstance(kind, str) else None)


class AnthropicResultReader:
    """One results line → (custom_id as Anthropic carries it, result)."""

    def __init__(self, default_model: str = "") -> None:
        self.default_model = default_model

    def __call__(self, row: dict[str, Any]) -> tuple[str | None, Result]:
        carrier = row.get("custom_id")
        result = row["result"]
        kind = result["type"]
        outcome: Result
        if kind == "succeeded":
            outcome = claude_completion(result["message"], self.default_model)
        elif kind == "errored":
            outcome = anthropic_failure(result.get("error"))
        elif kind == "canceled":
            outcome = Failure(CANCELLED[1], code=CANCELLED[0])
        elif kind == "expired":
            outcome = Failure(EXPIRED[1], code=EXPIRED[0])
        else:
            raise ValueError(f"unknown result type {kind!r}")
        return (carrier if isinstance(carrier, str) else None), outcome


def anthropic_result_translator(ctx: ResultContext, kind: Kind, *, default_model: str = "") -> ResultTranslator:
    return ResultTranslator(AnthropicResultReader(default_model), ctx, kind)
