"""Deterministic OpenAI batch input files (chat-completions lines) for the translate section.

Every line is a ``/v1/chat/completions`` request as the OpenAI Batch API takes it: a
``custom_id`` like the OpenAI docs' ``request-<n>`` (not a valid Bedrock ``recordId``, so the
Bedrock translator rewrites it and keeps the id map, as it would for real clients), a system
prompt, a user message of pseudo-random English-like text (a document to summarise or
classify), on every third line a previous assistant/user exchange, and the usual sampling
parameters (``max_tokens``, ``temperature``, some ``top_p`` / ``stop``). Only features that
both the Bedrock (Claude) and the Vertex (Gemini) translators accept are used.

The same (size, line size, seed) always gives the same bytes.
"""
from __future__ import annotations

import random
from pathlib import Path

import orjson

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more can out said what up its "
    "about than into them only some could time these two may first then do any like other my now over such our "
    "man me even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three invoice customer shipment delivery refund account contract "
    "payment quarter revenue forecast region warehouse supplier order ticket priority summary report analysis "
    "latency throughput gateway storage bucket upload request response model prompt token batch inference"
).split()

SYSTEM_PROMPTS = (
    "You are a careful assistant that summarises customer support tickets in three bullet points.",
    "You classify the sentiment of the given text as positive, negative or neutral and explain why in one line.",
    "You are an analyst. Extract every company name, date and amount from the document as a short list.",
    "Translate the user's text into formal French, keeping numbers and names unchanged.",
)


def _text(rng: random.Random, n_chars: int) -> str:
    words: list[str] = []
    size = 0
    sentence = 0
    while size < n_chars:
        w = rng.choice(_WORDS)
        if sentence == 0:
            w = w.capitalize()
        sentence += 1
        if sentence > rng.randint(8, 20):
            w += "."
            sentence = 0
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:n_chars]


def make_batch_file(path: Path, size: int, *, line_bytes: int = 4300, seed: int = 7,
                    max_lines: int | None = 50_000) -> tuple[int, int]:
    """Write lines of ~``line_bytes`` (±15%) until the next one would pass ``size`` bytes;
    returns (bytes written, lines). Raises if that takes more than ``max_lines`` lines."""
    rng = random.Random(seed)
    # A pool of text to cut user messages from: generating every message word by word would
    # take longer than the benchmark.
    pool = _text(rng, 4 << 20)
    overhead = 330  # JSON around the user message, roughly
    total = 0
    n = 0
    with open(path, "wb") as fh:
        while True:
            n += 1
            want = max(64, int(line_bytes * rng.uniform(0.85, 1.15)) - overhead)
            start = rng.randrange(0, len(pool) - want - 1)
            messages = [{"role": "system", "content": SYSTEM_PROMPTS[n % len(SYSTEM_PROMPTS)]}]
            if n % 3 == 0:
                messages += [{"role": "user", "content": "Here is the first part of the document."},
                             {"role": "assistant", "content": "Understood. Please send the rest."}]
            messages.append({"role": "user", "content": pool[start:start + want]})
            body: dict = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 256 + (n % 4) * 128,
                          "temperature": round((n % 10) / 10, 1)}
            if n % 5 == 0:
                body["top_p"] = 0.9
            if n % 7 == 0:
                body["stop"] = ["\n\n###"]
            line = orjson.dumps({"custom_id": f"request-{n}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": body}) + b"\n"
            if total + len(line) > size:
                n -= 1
                break
            fh.write(line)
            total += len(line)
            if max_lines is not None and n > max_lines:
                raise ValueError(f"{size} bytes of ~{line_bytes}-byte lines need more than {max_lines} lines")
    return total, n
