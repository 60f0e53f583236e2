"""batch_jsonl: a purpose=batch upload must be a .jsonl file of valid batch request lines.

Validation runs on the bytes as they stream through (sans-IO BatchValidator), so an invalid
line aborts the upload at once. When the client sends the file before the ``purpose`` field
(curl's order), the file is validated speculatively and the verdict applied in ``on_field``
when the purpose arrives (the upload driver allows one ``purpose`` per request, so the
verdict is final); a file that turns out not to be batch just drops the validator.

The validator is the exchange's own: :class:`BatchJsonlFactory` creates one filter per exchange.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.errors import GatewayError
from proxy.transforms.jsonl import BatchLineError, BatchValidator

from .base import Filter

if TYPE_CHECKING:
    from proxy.config import LimitsConfig


def _invalid(err: BatchLineError) -> GatewayError:
    # One closing period, added only when the validator's text has none; nothing else of that
    # text (which may quote the client's own values) is rewritten.
    text = str(err)
    return GatewayError(400, f"Invalid batch file: {text}{'' if text.endswith('.') else '.'}", param="file",
                        code="invalid_batch_file")


def _not_jsonl(filename: str | None) -> GatewayError:
    return GatewayError(400, f"Batch files must be JSONL with a .jsonl extension; got '{(filename or '')[:128]}'.",
                        param="file", code="invalid_file_format")


class BatchJsonlFilter(Filter):
    """One exchange's batch validation: the validator of its file and a verdict kept for later."""

    name = "batch_jsonl"

    __slots__ = ("max_lines", "validator", "error")

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self.validator: BatchValidator | None = None
        self.error: BatchLineError | None = None  # the file is invalid if it turns out to be batch

    def on_file_start(self, ex) -> None:  # type: ignore[no-untyped-def]
        if ex.purpose == "batch" and not (ex.filename or "").lower().endswith(".jsonl"):
            raise _not_jsonl(ex.filename)
        if ex.purpose in ("batch", None):
            self.validator = BatchValidator(max_lines=self.max_lines)

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        if self.validator is None:
            return
        try:
            self.validator.feed(chunk)
        except BatchLineError as err:
            self._failed(ex, err)

    def on_file_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        if self.validator is None:
            return
        try:
            self.validator.close()
        except BatchLineError as err:
            self._failed(ex, err)

    def on_field(self, ex, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
        if name != "purpose" or not ex.file_started:
            return
        if value == "batch":
            if not (ex.filename or "").lower().endswith(".jsonl"):
                raise _not_jsonl(ex.filename)
            if self.error is not None:
                raise _invalid(self.error)
        else:
            self.validator = None  # not a batch file after all

    async def on_upload_complete(self, ex) -> None:  # type: ignore[no-untyped-def]
        if ex.purpose == "batch" and self.error is not None:
            raise _invalid(self.error)

    def _failed(self, ex, err: BatchLineError) -> None:  # type: ignore[no-untyped-def]
        self.validator = None
        if ex.purpose == "batch":
            raise _invalid(err)
        self.error = err  # purpose not known yet: decide when it arrives


class BatchJsonlFactory:
    """Built once; a fresh :class:`BatchJsonlFilter` per exchange."""

    filter_class = BatchJsonlFilter

    def __init__(self, limits: "LimitsConfig") -> None:
        self.max_lines = limits.max_batch_lines

    def create(self) -> BatchJsonlFilter:
        return BatchJsonlFilter(self.max_lines)
