"""Gateway-minted ids: random, not guessable, OpenAI-looking (``file-`` + 24 base62 chars)."""
from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str, length: int = 24) -> str:
    # 24 base62 chars ≈ 143 bits of entropy.
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
