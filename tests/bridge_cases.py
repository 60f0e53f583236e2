"""What the Responses bridge tests share across providers (tests/test_bridge_anthropic.py,
tests/test_bridge_wired.py): the function tool they call, polling a background turn, and the
event sequences a bridged stream must have."""
from __future__ import annotations

import openai

from tests.support import wait_until

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
          "strict": True}]

# A one-text-item turn opens and closes with exactly these (the deltas come between).
TEXT_STREAM_HEAD = ["response.created", "response.in_progress", "response.output_item.added",
                    "response.content_part.added"]
TEXT_STREAM_TAIL = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                    "response.completed"]


def poll(c: openai.OpenAI, response_id: str, until: tuple[str, ...] = ("completed", "failed", "cancelled")):
    """Retrieve a background turn until its status is one of ``until`` (bounded); that Response."""
    seen = []
    assert wait_until(lambda: seen.append(c.responses.retrieve(response_id)) or seen[-1].status in until,
                      timeout=15), seen[-1]
    return seen[-1]
