"""batch_jsonl: a purpose=batch upload must be a .jsonl file of valid batch request lines.

Validation runs on the bytes as they stream through (sans-IO BatchValidator), so an invalid
line aborts the upload at once. The purpose is always known when the file starts (a file sent
before its ``purpose`` field is held and replayed by the core, proxy/field_order.py).
"""
from __future__ import annotations

from proxy.errors import GatewayError
from proxy.transforms.jsonl import BatchLineError, BatchValidator

from .base import Filter


def _invalid(err: BatchLineError) -> GatewayError:
    return GatewayError(400, f"Invalid batch file: {err}.".replace("..", "."), param="file", code="invalid_batch_file")


def _not_jsonl(filename: str | None) -> GatewayError:
    return GatewayError(400, f"Batch files must be JSONL with a .jsonl extension; got '{(filename or '')[:128]}'.",
                        param="file", code="invalid_file_format")


class BatchJsonlFilter(Filter):
    name = "batch_jsonl"

    def __init__(self, gateway) -> None:  # type: ignore[no-untyped-def]
        super().__init__(gateway)
        self.max_lines = gateway.config.limits.max_batch_lines

    def on_file_start(self, ex) -> None:  # type: ignore[no-untyped-def]
        if ex.purpose != "batch":
            return
        if not (ex.filename or "").lower().endswith(".jsonl"):
            raise _not_jsonl(ex.filename)
        ex.extra["batch"] = BatchValidator(max_lines=self.max_lines)

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        validator = ex.extra.get("batch")
        if validator is None:
            return
        try:
            validator.feed(chunk)
        except BatchLineError as err:
            raise _invalid(err) from None

    def on_file_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        validator = ex.extra.get("batch")
        if validator is None:
            return
        try:
            validator.close()
        except BatchLineError as err:
            raise _invalid(err) from None
