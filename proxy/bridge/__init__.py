"""The Responses bridge: the OpenAI Responses API run by the gateway on providers that have
no Responses API of their own (anthropic, bedrock, vertex).

One shape for every provider (the design is h11's: sans-IO pieces, the I/O elsewhere):

* a **dialect** per provider family (:class:`proxy.bridge.events.Dialect`) turns a Responses
  request plus the stored history into the provider's request, and the provider's answer —
  whole or streamed — into the neutral events of :mod:`proxy.bridge.events`;
* one **emitter** turns neutral events into the Responses object and the exact OpenAI SSE event
  sequence (``response.created`` … ``response.completed``, increasing ``sequence_number``);
* one **state** layer stores each turn's input and output items (tenant-owned, in the store)
  before the client sees the end of the turn, and rebuilds history for ``previous_response_id``.

Modules: ``events`` (the contract), ``items`` (the request's input in one canonical form),
``emitter``, ``state``, ``run`` (the I/O of the five operations), ``background``
(``background: true``), and one dialect per family (``anthropic``; ``converse``, ``gemini``).
"""
