"""batch_jsonl: a purpose=batch upload must be a .jsonl file of valid batch request lines.

Validation runs on the bytes as they stream through (sans-IO BatchValidator), so an invalid
line aborts the upload at once. The purpose is always known when the file starts (a file sent
before its ``purpose`` field is held and replayed by the core, proxy/field_order.py).

The validator is the exchange's own: :class:`BatchJsonlFactory` creates one filter per exchange.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.errors import GatewayError
from proxy.transforms.jsonl import BatchLineError, BatchValidator

from .base import Chunk, Filter

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.config import LimitsConfig


def _invalid(err: BatchLineError) -> GatewayError:
    return GatewayError(400, f"Invalid batch file: {err.sentence()}", param="file", code="invalid_batch_file")


def _not_jsonl(filename: str | None) -> GatewayError:
    return GatewayError(400, f"Batch files must be JSONL with a .jsonl extension; got '{(filename or '')[:128]}'.",
                        param="file", code="invalid_file_format")


class BatchJsonlFilter(Filter):
    """One exchange's batch validation: the validator of its file (a batch file only)."""

    name = "batch_jsonl"

    __slots__ = ("max_lines", "validator")

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self.validator: BatchValidator | None = None

    def on_file_start(self, ex: "Exchange") -> None:
        if ex.purpose != "batch":
            return
        if not (ex.filename or "").lower().endswith(".jsonl"):
            raise _not_jsonl(ex.filename)
        self.validator = BatchValidator(max_lines=self.max_lines)

    def on_file_data(self, ex: "Exchange", chunk: Chunk) -> None:
        if self.validator is None:
            return
        try:
            self.validator.feed(chunk)
        except BatchLineError as err:
            raise _invalid(err) from None

    def on_file_end(self, ex: "Exchange") -> None:
        if self.validator is None:
            return
        try:
            self.validator.close()
        except BatchLineError as err:
            raise _invalid(err) from None
        ex.batch_url = self.validator.url  # recorded with the file: batches.create checks it


class BatchJsonlFactory:
    """Built once; a fresh :class:`BatchJsonlFilter` per exchange."""

    filter_class: type[Filter] = BatchJsonlFilter  # FilterFactory's attribute, as it declares it

    def __init__(self, limits: "LimitsConfig") -> None:
        self.max_lines = limits.max_batch_lines

    def create(self) -> BatchJsonlFilter:
        return BatchJsonlFilter(self.max_lines)
