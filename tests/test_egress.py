"""The gateway's way out: egress proxies (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, the
provider's ``proxy:``) and per-provider TLS (``tls.ca_bundle``, ``client_cert``/``client_key``,
``verify``), against a fake OpenAI upstream on loopback, through the real SDK and gateway.

Every path is exercised where it matters: ``files.retrieve`` (the h1 pool), ``files.content``
and ``files.create`` (the aiohttp path); both must take the same way out.
"""
from __future__ import annotations

import io
import ssl
from pathlib import Path

import openai
import pytest
import trustme

from tests.conftest import client
from tests.fakes.connect_proxy import FakeProxy
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_ctx(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    if require_client_cert:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def tls_openai(tmp_path: Path, ca: trustme.CA):
    with FakeOpenAI("openai", data_dir=tmp_path / "fake", ssl_context=_server_ctx(ca)) as fake:
        yield fake


@pytest.fixture
def ca_bundle(tmp_path: Path, ca: trustme.CA) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _config(fake: FakeOpenAI, **provider) -> dict:
    return {"providers": [{"name": "up", "type": "openai", "api_base": fake.url + "/v1", "api_key": "sk-upstream-test",
                           "max_retries": 0, "timeouts": {"connect": "5s", "read": "10s"}, **provider}],
            "default_provider": "up"}


def _every_path(gw) -> None:
    """An upload (aiohttp, streamed body), a retrieve (h1 pool), a download (aiohttp)."""
    c = client(gw)
    f = c.files.create(file=("a.txt", io.BytesIO(b'{"a": 1}\n')), purpose="assistants")
    assert c.files.retrieve(f.id).id == f.id
    assert c.files.content(f.id).content == b'{"a": 1}\n'


# ------------------------------------------------------------------ proxies


def test_https_proxy_from_the_environment_tunnels_every_path(start_gateway, tls_openai, ca_bundle):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}), env={"HTTPS_PROXY": proxy.url})
        _every_path(gw)
        assert proxy.tunnels >= 2  # one per transport at least (the h1 pool and aiohttp)
        assert len(tls_openai.requests) == 3


def test_lower_case_https_proxy_is_honoured(start_gateway, tls_openai, ca_bundle):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}), env={"https_proxy": proxy.url})
        client(gw).files.list()
        assert proxy.tunnels == 1


def test_provider_proxy_key_overrides_the_environment(start_gateway, tls_openai, ca_bundle):
    with FakeProxy() as env_proxy, FakeProxy() as own_proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}, proxy=own_proxy.url),
                           env={"HTTPS_PROXY": env_proxy.url})
        _every_path(gw)
        assert own_proxy.tunnels >= 2 and env_proxy.tunnels == 0


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*", ".0.0.1"])
def test_no_proxy_bypasses_the_proxy(start_gateway, tls_openai, ca_bundle, no_proxy):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}),
                           env={"HTTPS_PROXY": proxy.url, "NO_PROXY": no_proxy})
        _every_path(gw)
        assert proxy.tunnels == 0 and proxy.authorizations == []


def test_no_proxy_with_another_port_does_not_bypass(start_gateway, tls_openai, ca_bundle):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}),
                           env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1:1"})
        client(gw).files.list()
        assert proxy.tunnels == 1


def test_proxy_none_ignores_the_environment(start_gateway, tls_openai, ca_bundle):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle}, proxy="none"),
                           env={"HTTPS_PROXY": proxy.url})
        _every_path(gw)
        assert proxy.tunnels == 0


def test_http_origin_goes_through_http_proxy_in_absolute_form(start_gateway, fake_openai):
    with FakeProxy() as proxy:
        gw = start_gateway(_config(fake_openai), env={"HTTP_PROXY": proxy.url, "HTTPS_PROXY": "http://127.0.0.1:1"})
        _every_path(gw)
        assert proxy.forwards >= 2 and proxy.tunnels == 0


def test_proxy_credentials_are_sent_as_basic_auth(start_gateway, tls_openai, ca_bundle):
    with FakeProxy(require_auth="gate:pr%xy s3cret") as proxy:
        gw = start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle},
                                   proxy=proxy.url_with("gate:pr%25xy%20s3cret")))
        _every_path(gw)
        assert proxy.tunnels >= 2 and proxy.refused == 0
        assert set(proxy.authorizations) == {proxy.expected}


def test_proxy_credentials_never_reach_the_client_or_the_log(start_gateway, tls_openai, ca_bundle):
    with FakeProxy(require_auth="gate:right") as proxy:
        gw = start_gateway({**_config(tls_openai, tls={"ca_bundle": ca_bundle}, proxy=proxy.url_with("gate:wr0ngpass"),
                                      max_retries=1), "log_level": "debug"})
        c = client(gw)
        for call in (lambda: c.files.list(), lambda: c.files.content("file-x"),
                     lambda: c.files.create(file=("a.txt", io.BytesIO(b"{}\n")), purpose="assistants")):
            with pytest.raises(openai.APIStatusError) as e:
                call()
            assert e.value.status_code == 502
            assert "wr0ngpass" not in e.value.response.text and "Basic" not in e.value.response.text
        assert proxy.refused >= 3
    assert "wr0ngpass" not in gw.log()


# ------------------------------------------------------------------ TLS


def test_private_ca_without_ca_bundle_is_a_clear_502(start_gateway, tls_openai):
    gw = start_gateway(_config(tls_openai))
    c = client(gw)
    for call in (lambda: c.files.list(), lambda: c.files.content("file-x")):
        with pytest.raises(openai.APIStatusError) as e:
            call()
        assert e.value.status_code == 502
        err = e.value.response.json()["error"]
        assert err["code"] == "upstream_tls_error"
        assert "certificate" in err["message"]
    assert len(tls_openai.requests) == 0


def test_ca_bundle_makes_a_private_ca_work(start_gateway, tls_openai, ca_bundle):
    _every_path(start_gateway(_config(tls_openai, tls={"ca_bundle": ca_bundle})))


def test_verify_false_accepts_an_unknown_ca(start_gateway, tls_openai):
    _every_path(start_gateway(_config(tls_openai, tls={"verify": False})))


@pytest.fixture
def mtls_openai(tmp_path: Path, ca: trustme.CA):
    with FakeOpenAI("openai", data_dir=tmp_path / "fake", ssl_context=_server_ctx(ca, require_client_cert=True)) as fake:
        yield fake


def test_mtls_client_certificate_is_presented(start_gateway, mtls_openai, ca_bundle, ca, tmp_path):
    cert = ca.issue_cert("sluicegate.client.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    gw = start_gateway(_config(mtls_openai, tls={"ca_bundle": ca_bundle, "client_cert": str(tmp_path / "client.pem"),
                                                 "client_key": str(tmp_path / "client.key")}))
    _every_path(gw)


def test_mtls_without_a_client_certificate_is_a_502(start_gateway, mtls_openai, ca_bundle):
    gw = start_gateway(_config(mtls_openai, tls={"ca_bundle": ca_bundle}))
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).files.list()
    assert e.value.status_code == 502
    assert len(mtls_openai.requests) == 0


# ------------------------------------------------------------------ the proxy choice, in process


from proxy.providers.egress import EgressProxy, parse_proxy, proxy_for, redact  # noqa: E402

PROXY = EgressProxy("proxy.corp", 3128)


@pytest.fixture
def environ(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.mark.parametrize("origin, no_proxy, proxied", [
    ("https://api.openai.com", "", True),
    ("https://api.openai.com", "openai.com", False),        # domain suffix
    ("https://api.openai.com", ".openai.com", False),       # with the leading dot
    ("https://openai.com", ".openai.com", False),           # the domain itself
    ("https://notopenai.com", "openai.com", True),          # a suffix, not a substring
    ("https://api.openai.com", "*", False),
    ("https://API.OpenAI.com", "api.openai.com", False),    # case-insensitive
    ("https://10.0.0.1:8443", "10.0.0.1:8443", False),      # host:port
    ("https://10.0.0.1:8443", "10.0.0.1:443", True),        # ... another port
    ("https://10.0.0.1", "10.0.0.1:443", False),            # the scheme's default port
    ("https://api.openai.com", " foo.com , openai.com ", False),
])
def test_no_proxy_matching(environ, origin, no_proxy, proxied):
    environ(HTTPS_PROXY="http://proxy.corp:3128", NO_PROXY=no_proxy)
    assert proxy_for(origin, None) == (PROXY if proxied else None)


def test_scheme_picks_the_variable(environ):
    environ(HTTP_PROXY="http://plain:1", HTTPS_PROXY="http://proxy.corp:3128")
    assert proxy_for("https://a", None) == PROXY
    assert proxy_for("http://a", None) == EgressProxy("plain", 1)


def test_lower_case_variable_wins(environ):
    environ(HTTPS_PROXY="http://upper:1", https_proxy="http://proxy.corp:3128")
    assert proxy_for("https://a", None) == PROXY


def test_configured_proxy_wins_and_none_disables(environ):
    environ(HTTPS_PROXY="http://env:1")
    assert proxy_for("https://a", "http://proxy.corp:3128") == PROXY
    assert proxy_for("https://a", "none") is None


def test_proxy_credentials_become_basic_auth_and_stay_out_of_repr():
    p = parse_proxy("http://us%40er:p%3Ass@proxy.corp:3128")
    assert p.authorization == "Basic dXNAZXI6cDpzcw=="   # base64("us@er:p:ss")
    assert "p:ss" not in repr(p) and "dXNA" not in repr(p) and p.url == "http://proxy.corp:3128"
    assert redact("http://user:secret@proxy.corp:3128") == "http://***@proxy.corp:3128"


def test_only_http_proxies():
    with pytest.raises(ValueError, match="only http://") as e:
        parse_proxy("socks5://user:secret@p:1080")
    assert "secret" not in str(e.value)
