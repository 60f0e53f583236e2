"""The records of a gateway-run batch's output and error files: ids every replica derives
alike, and the location that marks a file as a batch's results (never a client's upload)."""
from __future__ import annotations

from proxy.batch_files import result_file_id, results_location, results_of
from proxy.ids import is_wellformed_id, new_id
from proxy.store.base import FileRecord


def record(location: dict) -> FileRecord:
    return FileRecord(id="file-x", tenant="t", provider="p", filename="f", purpose="batch_output", bytes=0,
                      created_at=0, location=location)


def test_result_ids_are_derived_per_batch_and_kind():
    a, b = new_id("batch_"), new_id("batch_")
    ids = {result_file_id(x, k) for x in (a, b) for k in ("output", "error")}
    assert len(ids) == 4
    assert result_file_id(a, "output") == result_file_id(a, "output")
    for i in ids:
        assert i.startswith("file-") and len(i) == 29 and is_wellformed_id(i)


def test_only_a_results_location_marks_a_results_file():
    assert results_of(record(results_location("batch_1", "error"))) == ("batch_1", "error")
    assert results_of(record(results_location("batch_1", "output"))) == ("batch_1", "output")
    for location in ({}, {"path": "file-x"}, {"batch_results": "batch_1"},
                     {"batch_results": {"batch_id": "batch_1", "kind": "input"}},
                     {"batch_results": {"batch_id": 1, "kind": "output"}}):
        assert results_of(record(location)) is None
