"""Neutral events → the Responses object and the OpenAI SSE event sequence (sans-IO).

One :class:`Emitter` per turn. :meth:`Emitter.start` gives ``response.created`` and
``response.in_progress``; each neutral event (:mod:`proxy.bridge.events`) fed to
:meth:`Emitter.feed` gives the OpenAI events it completes, in the order OpenAI sends them
(docs/provider-facts.md §3.5):

* a text item: ``response.output_item.added`` (a ``message``), ``response.content_part.added``
  (an empty ``output_text``), ``response.output_text.delta`` …, and at its end
  ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``;
* a function call: ``output_item.added`` (``function_call``, empty ``arguments``),
  ``response.function_call_arguments.delta`` …, ``…arguments.done``, ``output_item.done``;
* a reasoning item: ``output_item.added`` (``reasoning``), ``content_part.added``
  (``reasoning_text``), ``response.reasoning_text.delta`` …, ``…reasoning_text.done``,
  ``content_part.done``, ``output_item.done``; the provider's opaque continuation data (an
  Anthropic thinking signature) travels as the item's ``encrypted_content``;
* the end: ``response.completed`` / ``response.incomplete`` / ``response.failed``, carrying the
  whole Response object.

Every event has ``type`` and ``sequence_number`` (0, 1, …); the shapes are openai-python's
``types/responses`` models (tests/test_bridge_emitter.py validates them with the SDK's own
types and its stream accumulator). The events are plain dicts: :func:`sse` frames one, and the
state layer keeps the list for ``retrieve?stream=true``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..ids import new_id
from . import events as ev

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def end_of_frames(em: "Emitter", decoder: ev.StreamDecoder) -> list[dict[str, Any]]:
    """The provider's frames ended, or broke: the events of the decoder's ``close()`` when they
    end the turn with a Finish (a Converse turn whose usage never came still completes). A
    Failure there is left out, and the items still open with it: the caller fails an unfinished
    turn with the reason it knows (a broken stream, an early end)."""
    if em.finished:
        return []
    closing = list(decoder.close())
    if not closing or not isinstance(closing[-1], ev.Finish):
        return []
    out: list[dict[str, Any]] = []
    for event in closing:
        out += em.feed(event)
    return out


def sse(event: dict[str, Any]) -> bytes:
    """One event in OpenAI's framing: ``event: <type>``, one-line JSON ``data``, blank line."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def usage_object(u: ev.Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def response_object(request: dict[str, Any], *, response_id: str, model: str, provider_type: str,
                    created_at: int | None = None) -> dict[str, Any]:
    """The Response object of a turn that has just started (``in_progress``, no output): the
    request's settings echoed as OpenAI echoes them, plus ``provider``."""
    text: dict[str, Any] = request["text"] if isinstance(request.get("text"), dict) else {}
    reasoning: dict[str, Any] = request["reasoning"] if isinstance(request.get("reasoning"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": "in_progress",
        "background": bool(request.get("background", False)),
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "auto",
        "store": request.get("store", True) is not False,
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": list(request.get("tools") or []),
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
        "provider": provider_type,
    }


@dataclass(slots=True)
class _Item:
    """An output item being built: its place, its OpenAI item, and the text gathered so far."""
    output_index: int
    obj: dict[str, Any]
    parts: list[str] = field(default_factory=list)
    done: bool = False


class EmitterError(Exception):
    """A dialect broke the event contract (an event for an item never started, …)."""


class Emitter:
    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.seq = 0
        self.events: list[dict[str, Any]] = []     # every event emitted, for replay
        self._items: dict[int, _Item] = {}          # dialect item number → item
        self.finished = False

    # -- the lifecycle ----------------------------------------------------------------------
    def start(self) -> list[dict[str, Any]]:
        return [self._emit("response.created", response=self._snapshot()),
                self._emit("response.in_progress", response=self._snapshot())]

    def feed(self, event: ev.Event) -> list[dict[str, Any]]:
        if self.finished:
            raise EmitterError(f"{type(event).__name__} after the end of the response")
        if isinstance(event, ev.TextDelta):          # the hot path first
            item = self._open(event.item, "message")
            item.parts.append(event.text)
            return [self._emit("response.output_text.delta", item_id=item.obj["id"],
                               output_index=item.output_index, content_index=0, delta=event.text,
                               logprobs=[])]
        if isinstance(event, ev.ToolArgsDelta):
            item = self._open(event.item, "function_call")
            item.parts.append(event.json_fragment)
            return [self._emit("response.function_call_arguments.delta", item_id=item.obj["id"],
                               output_index=item.output_index, delta=event.json_fragment)]
        if isinstance(event, ev.ReasoningDelta):
            item = self._open(event.item, "reasoning")
            if event.signature is not None:
                item.obj["encrypted_content"] = (item.obj.get("encrypted_content") or "") + event.signature
            if not event.text:
                return []
            item.parts.append(event.text)
            return [self._emit("response.reasoning_text.delta", item_id=item.obj["id"],
                               output_index=item.output_index, content_index=0, delta=event.text)]
        if isinstance(event, ev.TextStart):
            obj = {"id": new_id("msg_"), "type": "message", "role": "assistant", "status": "in_progress",
                   "content": []}
            item = self._add(event.item, obj)
            return [self._emit("response.output_item.added", output_index=item.output_index, item=copy.deepcopy(obj)),
                    self._emit("response.content_part.added", item_id=obj["id"], output_index=item.output_index,
                               content_index=0, part=_text_part(""))]
        if isinstance(event, ev.ToolCallStart):
            obj = {"id": new_id("fc_"), "type": "function_call", "status": "in_progress",
                   "call_id": event.call_id, "name": event.name, "arguments": ""}
            item = self._add(event.item, obj)
            return [self._emit("response.output_item.added", output_index=item.output_index, item=dict(obj))]
        if isinstance(event, ev.ReasoningStart):
            obj = {"id": new_id("rs_"), "type": "reasoning", "status": "in_progress", "summary": [], "content": []}
            item = self._add(event.item, obj)
            return [self._emit("response.output_item.added", output_index=item.output_index, item=copy.deepcopy(obj)),
                    self._emit("response.content_part.added", item_id=obj["id"], output_index=item.output_index,
                               content_index=0, part={"type": "reasoning_text", "text": ""})]
        if isinstance(event, ev.ItemDone):
            done = self._items.get(event.item)
            if done is None:
                raise EmitterError(f"ItemDone for item {event.item}, which never started")
            return self._close(done)
        if isinstance(event, ev.Finish):
            return self._finish(event)
        if isinstance(event, ev.Failure):
            return self.fail(event.code, event.message)
        raise EmitterError(f"unknown event {event!r}")

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        """The turn failed (a provider error frame, a broken stream): ``response.failed``."""
        if self.finished:
            return []
        self.finished = True
        for item in self._items.values():
            if not item.done:
                self._settle(item, "incomplete")
        r = self.response
        r["status"] = "failed"
        r["error"] = {"code": code, "message": message}
        r["output"] = self._output()
        return [self._emit("response.failed", response=self._snapshot())]

    # -- items ------------------------------------------------------------------------------
    def _add(self, number: int, obj: dict[str, Any]) -> _Item:
        if number in self._items:
            raise EmitterError(f"item {number} started twice")
        item = _Item(len(self._items), obj)
        self._items[number] = item
        return item

    def _open(self, number: int, kind: str) -> _Item:
        item = self._items.get(number)
        if item is None or item.done or item.obj["type"] != kind:
            raise EmitterError(f"a {kind} delta for item {number}, which is not an open {kind}")
        return item

    def _settle(self, item: _Item, status: str) -> None:
        """Write the gathered text into the item and give it its final status."""
        item.done = True
        obj = item.obj
        text = "".join(item.parts)
        obj["status"] = status
        if obj["type"] == "message":
            obj["content"] = [_text_part(text)]
        elif obj["type"] == "function_call":
            obj["arguments"] = text
        else:
            obj["content"] = [{"type": "reasoning_text", "text": text}]

    def _close(self, item: _Item) -> list[dict[str, Any]]:
        if item.done:
            raise EmitterError(f"output item {item.output_index} ended twice")
        self._settle(item, "completed")
        obj, index = item.obj, item.output_index
        out: list[dict[str, Any]] = []
        if obj["type"] == "message":
            part = obj["content"][0]
            out.append(self._emit("response.output_text.done", item_id=obj["id"], output_index=index,
                                  content_index=0, text=part["text"], logprobs=[]))
            out.append(self._emit("response.content_part.done", item_id=obj["id"], output_index=index,
                                  content_index=0, part=dict(part)))
        elif obj["type"] == "function_call":
            out.append(self._emit("response.function_call_arguments.done", item_id=obj["id"], output_index=index,
                                  arguments=obj["arguments"]))
        else:
            part = obj["content"][0]
            out.append(self._emit("response.reasoning_text.done", item_id=obj["id"], output_index=index,
                                  content_index=0, text=part["text"]))
            out.append(self._emit("response.content_part.done", item_id=obj["id"], output_index=index,
                                  content_index=0, part=dict(part)))
        out.append(self._emit("response.output_item.done", output_index=index, item=copy.deepcopy(obj)))
        return out

    def _finish(self, finish: ev.Finish) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in list(self._items.values()):
            if not item.done:    # a provider that ends without closing its last block
                out.extend(self._close(item))
        self.finished = True
        r = self.response
        r["output"] = self._output()
        r["usage"] = usage_object(finish.usage)
        if finish.reason == "incomplete":
            r["status"] = "incomplete"
            r["incomplete_details"] = {"reason": finish.incomplete_reason or "max_output_tokens"}
            out.append(self._emit("response.incomplete", response=self._snapshot()))
        else:
            r["status"] = "completed"
            r["completed_at"] = int(time.time())
            out.append(self._emit("response.completed", response=self._snapshot()))
        return out

    def _output(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(item.obj) for item in self._items.values()]

    # -- events -----------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def _emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        self.events.append(event)
        return event


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def whole(response: dict[str, Any], events: list[ev.Event]) -> Emitter:
    """Run a whole (non-streamed) answer through an emitter; its ``response`` is then final."""
    em = Emitter(response)
    em.start()
    for e in events:
        if em.finished:
            break
        em.feed(e)
    if not em.finished:
        em.fail("server_error", "The provider's answer ended before the response was complete.")
    return em
