"""forward_headers: the client's end-to-end headers minus the gateway's own, whether a name's
verdict is decided afresh or remembered (proxy/providers/headers.py)."""
from __future__ import annotations

from hypothesis import given, strategies as st
from multidict import CIMultiDict

from proxy.providers import headers as h

_KNOWN = sorted(h._DROP) + [p + "x" for p in h._DROP_PREFIXES] + ["x-stainless-lang", "openai-beta", "accept"]


def _reference(client: CIMultiDict[str]) -> dict[str, str]:
    out = {}
    for name, value in client.items():
        low = name.lower()
        if low not in h._DROP and not low.startswith(h._DROP_PREFIXES):
            out[name] = value
    return out


def _case(draw_bits: list[bool], name: str) -> str:
    return "".join(c.upper() if b else c for c, b in zip(name, draw_bits + [False] * len(name)))


names = st.one_of(
    st.builds(_case, st.lists(st.booleans(), max_size=40), st.sampled_from(_KNOWN)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789", min_size=1, max_size=30),
)


@given(st.lists(st.tuples(names, st.text(max_size=10)), max_size=20))
def test_same_as_the_rule_fresh_and_remembered(pairs: list[tuple[str, str]]) -> None:
    client = CIMultiDict(pairs)
    want = _reference(client)
    assert h.forward_headers(client) == want   # (some names decided now)
    assert h.forward_headers(client) == want   # (all remembered)


def test_credentials_and_routing_never_forwarded_in_any_spelling() -> None:
    client = CIMultiDict([("Authorization", "Bearer sk-gw"), ("AUTHORIZATION", "Bearer sk-2"), ("Api-Key", "k"),
                          ("X-Api-Key", "k"), ("Custom-LLM-Provider", "openai"), ("X-TFY-Provider-Name", "p"),
                          ("X-Forwarded-For", "1.2.3.4"), ("Cookie", "c"), ("OpenAI-Beta", "assistants=v2"),
                          ("X-Stainless-Lang", "python")])
    for _ in range(2):
        assert h.forward_headers(client) == {"OpenAI-Beta": "assistants=v2", "X-Stainless-Lang": "python"}


def test_the_remembered_names_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(h, "_VERDICTS", {})
    monkeypatch.setattr(h, "_VERDICTS_MAX", 10)
    client = CIMultiDict([(f"x-custom-{i}", "v") for i in range(50)] + [("Authorization", "Bearer sk")])
    assert h.forward_headers(client) == {f"x-custom-{i}": "v" for i in range(50)}
    assert len(h._VERDICTS) == 10
    assert h.forward_headers(client) == {f"x-custom-{i}": "v" for i in range(50)}  # past the cap: decided each time
