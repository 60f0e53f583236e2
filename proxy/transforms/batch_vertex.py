"""OpenAI batch rows → Vertex AI Gemini batch-prediction lines (docs/provider-facts.md §8.2).

Each line becomes ``{"request": GenerateContentRequest}``. Vertex has no per-line id, but
the output echoes the request, so the ``custom_id`` rides in ``request.labels`` under
:data:`LABEL_KEY` (label values are lowercase ``[a-z0-9_-]``, at most 63 characters; other
ids are carried as ``l<line>`` and listed in the translator's ``ids``).

A ``json_schema`` output format becomes ``responseJsonSchema``, Gemini's field for a plain
JSON Schema (``responseSchema`` takes an OpenAPI subset without ``additionalProperties``,
which every strict OpenAI schema uses).
"""
from __future__ import annotations

from typing import Any

from .batch_translate import BatchTranslator, IdRule
from .chat_mapping import ChatRequest, Part, Target, Text, compact, read_request

LABEL_KEY = "custom_id"
LABEL_IDS = IdRule(r"[a-z0-9_-]{1,63}", prefix="l")

VERTEX_GEMINI = Target(
    "Vertex (Gemini)",
    image_types=frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}),
    url_schemes=frozenset({"gs", "https"}),
    url_needs_media_type=True,  # fileData.mimeType is required
    json_output=True,
    max_temperature=2.0,
)

_ROLES = {"user": "user", "assistant": "model"}


def vertex_row(line: int, request: dict[str, Any]) -> dict[str, Any]:
    """One batch line → ``{"request": {...}}``."""
    req = read_request(line, request, VERTEX_GEMINI)
    body: dict[str, Any] = {
        "contents": [{"role": _ROLES[turn.role], "parts": [_part(p) for p in turn.parts]} for turn in req.turns],
    }
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in req.system]}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    body["labels"] = {LABEL_KEY: request["custom_id"]}
    return {"request": body}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    return {"fileData": {"mimeType": part.media_type, "fileUri": part.url}}


def _generation_config(req: ChatRequest) -> dict[str, Any]:
    return compact(
        maxOutputTokens=req.max_tokens,
        temperature=req.temperature,
        topP=req.top_p,
        stopSequences=req.stop or None,
        responseMimeType="application/json" if req.json_output else None,
        responseJsonSchema=req.json_schema,
    )


def vertex_batch_translator(*, max_lines: int = 50_000, max_line_length: int = 16 << 20) -> BatchTranslator:
    return BatchTranslator(vertex_row, id_rule=LABEL_IDS, max_lines=max_lines, max_line_length=max_line_length)
