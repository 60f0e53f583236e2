"""OpenAI batch rows → Anthropic Message Batches request objects (docs/provider-facts.md §5.7).

Each line becomes ``{"custom_id", "params"}`` with ``params`` a non-streaming Messages
request. The rows are JSONL; the caller wraps them as ``{"requests": [...]}`` for
``POST /v1/messages/batches``. :func:`messages_params` is shared with Claude on Bedrock.
"""
from __future__ import annotations

from typing import Any

from .batch_translate import BatchTranslator, IdRule
from .chat_mapping import ChatRequest, Part, Target, Text, compact, read_request
from .jsonl import BatchLineError

CLAUDE_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

ANTHROPIC = Target("Anthropic", image_types=CLAUDE_IMAGE_TYPES, url_schemes=frozenset({"https"}))

# custom_id: 1-64 of [A-Za-z0-9_-] (docs/provider-facts.md §5.7); others become "L<line>".
CUSTOM_IDS = IdRule(r"[A-Za-z0-9_-]{1,64}", prefix="L")


def messages_params(req: ChatRequest, default_max_tokens: int) -> dict[str, Any]:
    """The Messages API body without ``model``: ``max_tokens`` is required, ``system`` top-level."""
    return {
        "max_tokens": default_max_tokens if req.max_tokens is None else req.max_tokens,
        **compact(system="\n\n".join(req.system) or None),
        "messages": [{"role": turn.role, "content": [_block(p) for p in turn.parts]} for turn in req.turns],
        **compact(temperature=req.temperature, top_p=req.top_p, stop_sequences=req.stop or None),
    }


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    source = ({"type": "base64", "media_type": part.media_type, "data": part.data}
              if part.data is not None else {"type": "url", "url": part.url})
    return {"type": "image", "source": source}


class AnthropicRowTranslator:
    """One batch line → ``{"custom_id", "params"}``; the model is ``body.model`` or ``default_model``."""

    def __init__(self, *, default_model: str | None = None, default_max_tokens: int = 1024) -> None:
        self.default_model = default_model
        self.default_max_tokens = default_max_tokens

    def __call__(self, line: int, request: dict[str, Any]) -> dict[str, Any]:
        req = read_request(line, request, ANTHROPIC)
        model = req.model or self.default_model
        if model is None:
            raise BatchLineError(line, '"body.model" is required: no default Anthropic model is configured')
        params = {"model": model, **messages_params(req, self.default_max_tokens)}
        return {"custom_id": request["custom_id"], "params": params}


def anthropic_batch_translator(
    *,
    default_model: str | None = None,
    default_max_tokens: int = 1024,
    max_lines: int = 50_000,
    max_line_length: int = 16 << 20,
) -> BatchTranslator:
    return BatchTranslator(
        AnthropicRowTranslator(default_model=default_model, default_max_tokens=default_max_tokens),
        id_rule=CUSTOM_IDS, max_lines=max_lines, max_line_length=max_line_length,
    )
