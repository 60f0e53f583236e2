"""Bedrock batch-inference output (``<input>.jsonl.out``) → OpenAI batch-output rows
(docs/provider-facts.md §7.3).

Each line is ``{"recordId", "modelInput", "modelOutput"}`` or ``{"recordId", "modelInput",
"error": {"errorCode", "errorMessage"}}``. ``modelOutput`` is the body the model family answers
(the families of :mod:`proxy.transforms.batch_bedrock`):

* Anthropic Claude (InvokeModel) — a Messages response (:func:`claude_completion`);
* Amazon Nova (InvokeModel) and Meta Llama (the job runs ``Converse``) — the Converse shape
  ``{"output": {"message": {"content": [{"text"}]}}, "stopReason", "usage": {"inputTokens",
  "outputTokens"}}``.

The ``recordId`` is the input translator's carrier of the ``custom_id`` (``RECORD_IDS``): the
job's id map turns it back into the client's id.
"""
from __future__ import annotations

from typing import Any

from .batch_anthropic_output import claude_completion
from .batch_bedrock import model_family
from .batch_output import Completion, Failure, Kind, Result, ResultContext, ResultTranslator, as_int

# Converse stopReason → OpenAI finish_reason.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}


def converse_completion(output: dict[str, Any], model: str) -> Completion:
    message = output["output"]["message"]
    text = "".join(block["text"] for block in message["content"] if isinstance(block.get("text"), str))
    usage = output.get("usage") or {}
    return Completion(
        model=model,
        text=text,
        finish_reason=_FINISH.get(output.get("stopReason") or "end_turn", "stop"),
        prompt_tokens=as_int(usage.get("inputTokens")),
        completion_tokens=as_int(usage.get("outputTokens")),
    )


class BedrockResultReader:
    """One ``.jsonl.out`` line of a job run with ``model_id`` → (recordId, result)."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._claude = model_family(model_id) == "anthropic.claude"

    def __call__(self, row: dict[str, Any]) -> tuple[str | None, Result]:
        record_id = row.get("recordId")
        carrier = record_id if isinstance(record_id, str) else None
        error = row.get("error")
        if error is not None or "modelOutput" not in row:
            return carrier, _failure(error)
        output = row["modelOutput"]
        model = self.model_id.rpartition("/")[2]
        return carrier, (claude_completion(output, model) if self._claude else converse_completion(output, model))


def _failure(error: Any) -> Failure:
    if not isinstance(error, dict):
        return Failure("Bedrock returned neither an output nor an error for this record.", status_code=500,
                       code="bedrock_error")
    code = error.get("errorCode")
    message = error.get("errorMessage")
    text = message if isinstance(message, str) and message else "The record failed at Bedrock."
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return Failure(text, status_code=code)
    return Failure(text, status_code=500, code=str(code) if code is not None else None)


def bedrock_result_translator(model_id: str, ctx: ResultContext, kind: Kind, *,
                              track: bool = False) -> ResultTranslator:
    """Raises :class:`~proxy.transforms.batch_bedrock.UnsupportedModel` for a family it cannot read."""
    return ResultTranslator(BedrockResultReader(model_id), ctx, kind, track=track)


def input_carrier(row: dict[str, Any]) -> str | None:
    """The carrier of an input record ``{"recordId", "modelInput"}`` (for UnrunRows)."""
    record_id = row.get("recordId")
    return record_id if isinstance(record_id, str) else None
