"""Conversation state of the Responses the gateway runs itself: one stored turn per response.

A turn (:class:`~proxy.store.base.TurnRecord`, store migration 5) keeps the request's input
items (each with an id, as ``input_items.list`` shows them), the output items, the final
Response object and the events it was sent as (``retrieve?stream=true`` replays them). It is
written with the response's ownership record in one transaction, *before* the client receives
the end of the turn (the JSON body, or the terminal SSE event), so a follow-up turn sent the
instant this one ended finds it on any replica. ``store: false`` keeps nothing.

``previous_response_id`` rebuilds the conversation from the chain of turns (one query): each
turn's input items then its output items, oldest first — function calls and their outputs keep
their ``call_id`` s, so the provider sees its own tool-use ids again. A turn that failed
contributes its input only (its output may be cut mid-item).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import GatewayError, bad_request
from ..ids import new_id
from ..store.base import ResponseRecord, TurnRecord

if TYPE_CHECKING:
    from ..store.base import Store

_ID_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}
LIST_LIMIT = (1, 100, 20)   # input_items.list limit: min, max, default (docs/provider-facts.md §3.1)


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as stored: each with an ``id`` (the client's, else a new one) and a status."""
    out = []
    for item in items:
        kind = str(item.get("type"))
        item = dict(item)
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = new_id(_ID_PREFIX.get(kind, "item_"))
        if kind in ("message", "function_call", "function_call_output"):
            item.setdefault("status", "completed")
        out.append(item)
    return out


async def history(store: "Store", previous_id: str, tenant: str) -> list[dict[str, Any]]:
    chain = await store.get_chain(previous_id, tenant)
    if not chain or chain[-1].id != previous_id:
        raise GatewayError(400, f"Previous response with id '{previous_id[:128]}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
    items: list[dict[str, Any]] = []
    for turn in chain:
        items += turn.input_items
        if turn.status in ("completed", "incomplete"):
            items += turn.output_items
    return items


async def save(store: "Store", rec: ResponseRecord, response: dict[str, Any], input_items: list[dict[str, Any]],
               events: list[dict[str, Any]] | None) -> None:
    await store.add_turn(rec, TurnRecord(
        id=response["id"], tenant=rec.tenant, previous_id=response.get("previous_response_id"),
        status=str(response["status"]), input_items=input_items, output_items=list(response.get("output") or []),
        response=response, events=events))


def input_items_page(turn: TurnRecord, query: Any) -> dict[str, Any]:
    """``GET /responses/{id}/input_items``: ``after`` (an item id), ``limit``, ``order``."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    low, high, default = LIST_LIMIT
    raw = query.get("limit")
    try:
        limit = default if raw is None else int(raw)
    except ValueError:
        limit = 0
    if not low <= limit <= high:
        raise bad_request(f"limit must be an integer from {low} to {high}.", param="limit",
                          code="integer_out_of_range")
    items = turn.input_items if order == "asc" else turn.input_items[::-1]
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
