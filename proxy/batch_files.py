"""The output and error files of a batch the gateway runs (proxy/batch_runner.py): gateway
file records (``file-…``, ``purpose: "batch_output"``) whose bytes are the runner's results,
translated row by row while they stream from the provider's storage. Nothing is stored on
the gateway: the record's ``location`` names the batch and the kind, and ``files.content``
asks the batch's runner for the rows.

Their ids are derived from the batch id and the kind, so the replicas that see a batch end
(each poll is claimed, but two polls a second apart may both find it terminal) record the
same file once (``Store.adopt_file`` inserts an id once)."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Literal

from .errors import GatewayError
from .providers.base import Download

if TYPE_CHECKING:
    from .providers.base import Provider
    from .store.base import FileRecord, Store

Kind = Literal["output", "error"]
_KEY = "batch_results"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def result_file_id(batch_id: str, kind: Kind) -> str:
    """``file-`` + 24 base62 characters of sha256(batch id, kind): as unguessable as the batch
    id itself (minted by proxy/ids.py), and the same on every replica."""
    n = int.from_bytes(hashlib.sha256(f"{batch_id}\0{kind}".encode()).digest(), "big")
    chars = []
    for _ in range(24):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return "file-" + "".join(chars)


def results_location(batch_id: str, kind: Kind) -> dict[str, dict[str, str]]:
    return {_KEY: {"batch_id": batch_id, "kind": kind}}


def results_of(rec: "FileRecord") -> tuple[str, Kind] | None:
    """``(batch id, kind)`` when ``rec`` is a gateway-run batch's output or error file."""
    loc = rec.location.get(_KEY) if isinstance(rec.location, dict) else None
    if not isinstance(loc, dict):
        return None
    kind = loc.get("kind")
    batch_id = loc.get("batch_id")
    if kind not in ("output", "error") or not isinstance(batch_id, str):
        return None
    return batch_id, ("output" if kind == "output" else "error")


async def results_download(store: "Store", provider: "Provider", rec: "FileRecord") -> Download:
    """The content of a batch results file: the runner's rows, streamed."""
    found = results_of(rec)
    assert found is not None  # the caller checked
    batch_id, kind = found
    runner = provider.batch_runner()
    batch = await store.get_batch(batch_id)
    if runner is None or batch is None:
        raise GatewayError(404, f"No such File object: {rec.id}", param="file_id", code="file_not_found")
    return Download(content_type="application/octet-stream", length=rec.bytes,
                    chunks=aiter(runner.open_results(batch.job, kind)))
