"""Object ids: gateway-minted ones (random, not guessable, OpenAI-looking: ``file-`` + 24 base62
chars), and the shape every id a client names must have."""
from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str, length: int = 24) -> str:
    # 24 base62 chars ≈ 143 bits of entropy.
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


# Every provider's ids (OpenAI/Azure ``file-…``/``resp_…``, Anthropic ``file_…``, Groq, ours) are
# letters, digits, ``-`` and ``_``. A path id is percent-decoded, so anything else (control bytes,
# ``?``, ``#``, non-ASCII) names no object and must never be spliced into an upstream URL.
_ID_CHARS = frozenset(_ALPHABET + "-_")
MAX_ID_LENGTH = 256


def is_wellformed_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and _ID_CHARS.issuperset(value)
