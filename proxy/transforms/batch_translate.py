"""Sans-IO streaming translation of an OpenAI batch input file into a provider's JSONL rows.

A :class:`BatchTranslator` validates each line exactly as :class:`BatchValidator` does (it
*is* one underneath), then hands the parsed request to a per-target row translator and
emits the result as one JSONL line. The first bad or untranslatable line raises
:class:`~proxy.transforms.jsonl.BatchLineError`, and every later call raises it again.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from .jsonl import BatchValidator

RowTranslator = Callable[[int, dict[str, Any]], dict[str, Any]]


class IdRule:
    """Which ``custom_id``\\ s a target can carry unchanged, and the id it uses for the others.

    A rewritten id is ``prefix`` + the line number (zero-padded to ``digits``), unique because
    line numbers are. A ``custom_id`` that itself looks like ``prefix`` + digits is always
    rewritten, so it can never collide with a rewritten id of another line.
    """

    def __init__(self, allowed: str, prefix: str, digits: int = 0) -> None:
        self._allowed = re.compile(allowed)
        self._reserved = re.compile(re.escape(prefix) + r"[0-9]+")
        self._prefix = prefix
        self._digits = digits

    def carrier(self, line: int, custom_id: str) -> str:
        if self._allowed.fullmatch(custom_id) and not self._reserved.fullmatch(custom_id):
            return custom_id
        return f"{self._prefix}{line:0{self._digits}d}"


class BatchTranslator:
    """Feed an OpenAI batch file, get the target's JSONL rows.

    ``row_translator(line, request)`` gets each validated request, with ``custom_id`` already
    replaced by the id the target carries (see ``id_rule``), and returns the target's row.
    ``ids`` maps each rewritten id back to the caller's ``custom_id`` (ids kept as they are
    are not listed), so results can be matched up; it grows by at most one entry per line.
    """

    def __init__(
        self,
        row_translator: RowTranslator,
        *,
        id_rule: IdRule | None = None,
        max_lines: int = 50_000,
        max_line_length: int = 16 << 20,
    ) -> None:
        self.ids: dict[str, str] = {}
        self._translate_row = row_translator
        self._id_rule = id_rule
        self._rows: list[bytes] = []
        self._validator = BatchValidator(
            max_lines=max_lines, max_line_length=max_line_length, on_request=self._on_request
        )

    @property
    def url(self) -> str | None:
        """The endpoint the file's lines name (the same on every line)."""
        return self._validator.url

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the translated lines the data completes, each ending ``\\n``; ``b""`` if none."""
        self._validator.feed(data)
        return self._take()

    def close(self) -> bytes:
        """Translate the final unterminated line, if any; raise if the file held no request."""
        self._validator.close()
        return self._take()

    def _on_request(self, line: int, request: dict[str, Any]) -> None:
        if self._id_rule is not None:
            custom_id = request["custom_id"]
            carrier = self._id_rule.carrier(line, custom_id)
            if carrier != custom_id:
                self.ids[carrier] = custom_id
                request["custom_id"] = carrier
        self._rows.append(orjson.dumps(self._translate_row(line, request), option=orjson.OPT_APPEND_NEWLINE))

    def _take(self) -> bytes:
        out = b"".join(self._rows)
        self._rows.clear()
        return out
