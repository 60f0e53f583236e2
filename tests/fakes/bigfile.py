"""Deterministic large test payloads (hundreds of MiB) produced quickly and with bounded memory.

The content is one 1 MiB pseudo-random block (seeded) repeated, with the first 8 bytes of
every block replaced by the block's index, so no two MiB of a file are equal and a
misplaced / duplicated / dropped chunk changes the digest.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator

BLOCK_SIZE = 1 << 20  # 1 MiB


def _base_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK_SIZE)


def iter_big_content(size: int, seed: int = 0, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the bytes of the deterministic payload of ``size`` bytes in pieces <= ``chunk_size``."""
    if size < 0:
        raise ValueError("size must be >= 0")
    block = _base_block(seed)
    remaining = size
    index = 0
    while remaining > 0:
        data = index.to_bytes(8, "little") + block[8:]
        index += 1
        data = data[: min(BLOCK_SIZE, remaining)]
        remaining -= len(data)
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]


def big_content_sha256(size: int, seed: int = 0) -> str:
    """sha256 hex digest of the payload ``iter_big_content(size, seed)`` without writing it."""
    digest = hashlib.sha256()
    for chunk in iter_big_content(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


def make_big_file(path: str | os.PathLike[str], size: int, seed: int = 0) -> str:
    """Write the deterministic payload of ``size`` bytes to ``path``; return its sha256 hex digest."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for chunk in iter_big_content(size, seed):
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = BLOCK_SIZE) -> str:
    """sha256 hex digest of a file, read in bounded chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
