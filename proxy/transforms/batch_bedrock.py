"""OpenAI batch rows → Bedrock batch-inference records (docs/provider-facts.md §7.2).

Each line becomes ``{"recordId", "modelInput"}``; ``modelInput`` depends on the model family:

* Anthropic Claude — the Messages body with ``anthropic_version`` (InvokeModel);
* Amazon Nova — the ``messages-v1`` body (InvokeModel);
* Meta Llama — the Converse body. Llama's own InvokeModel body is a formatted prompt, so the
  job must be created with ``modelInvocationType: "Converse"`` (see :func:`invocation_type`).

No Bedrock body here can fetch an image URL or force JSON output, so those are errors.
"""
from __future__ import annotations

import re
from typing import Any

from .batch_anthropic import CLAUDE_IMAGE_TYPES, messages_params
from .batch_translate import BatchTranslator, IdRule
from .chat_mapping import ChatRequest, Part, Target, Text, compact, read_request
from .jsonl import describe

# recordId: alphanumeric (docs/provider-facts.md §7.2); others become "R" + 10 digits
# (11 characters, the length older Bedrock docs asked for).
RECORD_IDS = IdRule(r"[A-Za-z0-9]{1,64}", prefix="R", digits=10)

_CONVERSE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
BEDROCK_CLAUDE = Target("Bedrock (Claude)", image_types=CLAUDE_IMAGE_TYPES)
BEDROCK_NOVA = Target("Bedrock (Nova)", image_types=_CONVERSE_IMAGE_TYPES)
BEDROCK_LLAMA = Target("Bedrock (Llama)", image_types=_CONVERSE_IMAGE_TYPES)

# Optional inference-profile prefix ("us.", "eu.", "apac.", "global." ...), then provider.model.
_FAMILY = re.compile(r"(?:[a-z-]+\.)?(anthropic\.claude|amazon\.nova|meta\.llama)")


class UnsupportedModel(ValueError):
    """The model's family has no batch translation; raised before any byte is read."""


def _family(model_id: str) -> str:
    match = _FAMILY.match(model_id.rpartition("/")[2])  # a foundation-model / profile ARN ends in the id
    if match is None:
        raise UnsupportedModel(f"Bedrock batch translation does not support model {describe(model_id)}: "
                               "use an Anthropic Claude, Amazon Nova or Meta Llama model")
    return match.group(1)


def model_family(model_id: str) -> str:
    """``anthropic.claude``, ``amazon.nova`` or ``meta.llama``; :class:`UnsupportedModel` else."""
    return _family(model_id)


def invocation_type(model_id: str) -> str:
    """The ``modelInvocationType`` the batch job must use for rows made for ``model_id``."""
    return "Converse" if _family(model_id) == "meta.llama" else "InvokeModel"


class BedrockRowTranslator:
    """One batch line → ``{"recordId", "modelInput"}`` for ``model_id``'s family.

    ``default_max_tokens`` fills Claude's required ``max_tokens`` when a row sets none (Nova and
    Llama leave the limit to the model). Raises :class:`UnsupportedModel` for other families.
    """

    def __init__(self, model_id: str, *, default_max_tokens: int = 1024) -> None:
        family = _family(model_id)
        self._target, self._model_input = {
            "anthropic.claude": (BEDROCK_CLAUDE, self._claude),
            "amazon.nova": (BEDROCK_NOVA, _nova),
            "meta.llama": (BEDROCK_LLAMA, _converse),
        }[family]
        self.default_max_tokens = default_max_tokens

    def __call__(self, line: int, request: dict[str, Any]) -> dict[str, Any]:
        model_input = self._model_input(read_request(line, request, self._target))
        return {"recordId": request["custom_id"], "modelInput": model_input}

    def _claude(self, req: ChatRequest) -> dict[str, Any]:
        return {"anthropic_version": "bedrock-2023-05-31", **messages_params(req, self.default_max_tokens)}


def _converse(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if req.system:
        body["system"] = [{"text": text} for text in req.system]
    body["messages"] = [{"role": turn.role, "content": [_block(p) for p in turn.parts]} for turn in req.turns]
    config = compact(maxTokens=req.max_tokens, temperature=req.temperature, topP=req.top_p,
                     stopSequences=req.stop or None)
    if config:
        body["inferenceConfig"] = config
    return body


def _nova(req: ChatRequest) -> dict[str, Any]:
    return {"schemaVersion": "messages-v1", **_converse(req)}


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    # BEDROCK_* targets take no image URLs, so every image here is inline (and typed).
    assert part.media_type is not None
    return {"image": {"format": part.media_type.partition("/")[2], "source": {"bytes": part.data}}}


def bedrock_batch_translator(
    model_id: str,
    *,
    default_max_tokens: int = 1024,
    max_lines: int = 50_000,
    max_line_length: int = 16 << 20,
) -> BatchTranslator:
    """Raises :class:`UnsupportedModel` at once for a model family it cannot write rows for."""
    return BatchTranslator(
        BedrockRowTranslator(model_id, default_max_tokens=default_max_tokens),
        id_rule=RECORD_IDS, max_lines=max_lines, max_line_length=max_line_length,
    )
