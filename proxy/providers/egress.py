"""How the gateway's HTTP client leaves the machine: which egress proxy (if any) and which TLS
settings a provider's upstream calls use. One decision, shared by every upstream path.

* Proxy: a provider's ``proxy:`` URL wins; ``proxy: none`` means a direct connection whatever
  the environment says; otherwise ``HTTPS_PROXY`` / ``HTTP_PROXY`` (lower-case forms first)
  and ``NO_PROXY`` as curl and requests read them (the standard library's reading: ``*``,
  exact host, domain suffix with or without the leading dot, ``host:port``). Only http://
  proxies: an https:// origin is reached through an HTTP CONNECT tunnel, then TLS to the
  origin; an http:// origin gets absolute-form requests. Credentials in the proxy URL are sent
  as ``Proxy-Authorization: Basic`` and are never logged (:func:`redact`).
* TLS: ``tls.ca_bundle`` replaces the system CAs, ``tls.client_cert`` + ``tls.client_key``
  present a client certificate (mTLS), ``tls.verify: false`` checks nothing.
"""
from __future__ import annotations

import base64
import ssl
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..config_values import no_key_password

if TYPE_CHECKING:
    from .configs import TlsConfig


@dataclass(frozen=True, slots=True)
class EgressProxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # Proxy-Authorization, from the URL

    @property
    def url(self) -> str:
        """The proxy without its credentials (for logs and aiohttp)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def parse_proxy(url: str) -> EgressProxy:
    u = urlsplit(url if "://" in url else "http://" + url)   # curl accepts a bare host:port
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"unsupported egress proxy {redact(url)!r}: only http:// proxies")
    auth = None
    if u.username is not None:
        raw = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
        auth = "Basic " + base64.b64encode(raw).decode("ascii")
    return EgressProxy(u.hostname, u.port or 80, auth)


def proxy_for(origin: str, configured: str | None) -> EgressProxy | None:
    """The proxy for ``scheme://host[:port]``: ``configured`` (a URL, or ``"none"``), else the
    environment's, read as requests reads it (the standard library's ``getproxies_environment``
    and ``proxy_bypass_environment``)."""
    if configured is not None:
        return None if configured.lower() == "none" else parse_proxy(configured)
    u = urlsplit(origin)
    scheme = u.scheme.lower()
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or not u.hostname:
        return None
    port = u.port or (443 if scheme == "https" else 80)
    host = u.hostname
    # NO_PROXY entries may name a host or host:port: ask with both, as requests does.
    # proxy_bypass_environment is the stdlib's NO_PROXY matcher (requests uses it too), not in
    # urllib.request.__all__, so typeshed leaves it out.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(host, proxies) or bypass(f"{host}:{port}", proxies):
        return None
    return parse_proxy(url)


def redact(url: str) -> str:
    """A proxy URL without its credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def ssl_context(tls: "TlsConfig | None") -> ssl.SSLContext:
    """The client TLS context of one provider."""
    if tls is None:
        return ssl.create_default_context()
    ctx = ssl.create_default_context(cafile=tls.ca_bundle)
    if tls.client_cert:
        ctx.load_cert_chain(tls.client_cert, tls.client_key, password=no_key_password)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
