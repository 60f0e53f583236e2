"""batch_jsonl: a purpose=batch upload must be a .jsonl file of valid batch request lines.

Validation runs on the bytes as they stream through (sans-IO BatchValidator), so an invalid
line aborts the upload at once. When the client sends the file before the ``purpose`` field
(curl's order), the file is validated speculatively and the verdict applied in ``on_field``
when the purpose arrives (the upload driver allows one ``purpose`` per request, so the
verdict is final); a file that turns out not to be batch just drops the validator.
"""
from __future__ import annotations

from proxy.errors import GatewayError
from proxy.transforms.jsonl import BatchLineError, BatchValidator

from .base import Filter


class _State:
    __slots__ = ("validator", "error")

    def __init__(self, validator: BatchValidator | None) -> None:
        self.validator = validator
        self.error: BatchLineError | None = None


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
        if ex.purpose == "batch" and not (ex.filename or "").lower().endswith(".jsonl"):
            raise _not_jsonl(ex.filename)
        if ex.purpose in ("batch", None):
            ex.extra["batch"] = _State(BatchValidator(max_lines=self.max_lines))

    def on_file_data(self, ex, chunk) -> None:  # type: ignore[no-untyped-def]
        st = ex.extra.get("batch")
        if st is None or st.validator is None:
            return
        try:
            st.validator.feed(chunk)
        except BatchLineError as err:
            self._failed(ex, st, err)

    def on_file_end(self, ex) -> None:  # type: ignore[no-untyped-def]
        st = ex.extra.get("batch")
        if st is None or st.validator is None:
            return
        try:
            st.validator.close()
        except BatchLineError as err:
            self._failed(ex, st, err)

    def on_field(self, ex, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
        if name != "purpose" or not ex.file_started:
            return
        st = ex.extra.get("batch")
        if value == "batch":
            if not (ex.filename or "").lower().endswith(".jsonl"):
                raise _not_jsonl(ex.filename)
            if st is not None and st.error is not None:
                raise _invalid(st.error)
        elif st is not None:
            st.validator = None  # not a batch file after all

    async def on_upload_complete(self, ex) -> None:  # type: ignore[no-untyped-def]
        if ex.purpose != "batch":
            return
        st = ex.extra.get("batch")
        if st is not None and st.error is not None:
            raise _invalid(st.error)

    @staticmethod
    def _failed(ex, st: _State, err: BatchLineError) -> None:  # type: ignore[no-untyped-def]
        st.validator = None
        if ex.purpose == "batch":
            raise _invalid(err)
        st.error = err  # purpose not known yet: decide when it arrives
