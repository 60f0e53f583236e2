"""YAML → typed, validated configuration.

A config file is read once at start-up into frozen dataclasses; nothing else in the gateway
sees raw YAML. Conventions:

* ``os.environ/NAME`` (LiteLLM's spelling), wherever a string is expected, reads the
  environment variable ``NAME``. A variable that is unset or empty is a config error, never a
  silent empty string.
* Sizes are bytes as an int, or a string with a unit: ``B KB MB GB TB`` (powers of 1000) or
  ``KiB MiB GiB TiB`` (powers of 1024), as written, with an optional space: ``"512 MiB"``.
* Durations are seconds as a number, or a string ``500ms``, ``30s``, ``5m``, ``1h``.
* A key that is null or ``""`` counts as absent, so templated configs can leave keys blank.
* Paths are resolved to absolute paths at load, a relative one against the working directory.
  ``server.data_dir`` is the one base of the default paths: the SQLite store
  (``<data_dir>/sluicegate.db``), the ``local`` provider's files (``<data_dir>/files``) and the
  ``anthropic`` provider's batch files (``<data_dir>/anthropic-batches``).
* Every problem is collected, each as ``"<key path>: <what is wrong>"`` (for example
  ``providers[2].api_base: required``), and all are raised together in one :class:`ConfigError`.
  Messages name environment variables but never show a secret's value.
"""
from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field, fields
from functools import partial
from math import isfinite
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

ENV_PREFIX = "os.environ/"
DEFAULT_DATA_DIR = "./sluicegate-data"
STORE_FILE = "sluicegate.db"            # the default SQLite store, under server.data_dir
FILTER_NAMES = ("auth", "provider_route", "size_limit", "batch_jsonl", "quota", "access_log", "metrics")
DEFAULT_FILTERS = ("auth", "provider_route", "size_limit", "batch_jsonl", "quota", "access_log", "metrics")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")

_SIZE_UNITS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?) ?([A-Za-z]*)")
_MAX_DIGITS = 30  # longer numbers are typos; and a float of 400 digits is infinite
# Provider names appear in model prefixes (``name/model``) and headers.
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HTTP_URL = re.compile(r"https?://[^/\s]+\S*")
_USERINFO_PASSWORD = re.compile(r"(://[^:/@]*):[^@/]*@")
_MASK_PASSWORD = r"\1:***@"


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every reason, one ``"<key path>: <what>"`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- the typed config


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    base_path: str = "/v1"          # starts with "/", no trailing slash ("/" becomes "")
    drain_timeout: float = 30.0     # seconds
    chunk_size: int = 256 * 1024    # bytes
    expiry_sweep_interval: float = 60.0  # seconds between sweeps of expired files
    header_timeout: float = 10.0    # seconds for the request line and headers to arrive
    body_idle_timeout: float = 60.0  # seconds between two reads of a request body
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 10000    # open client connections per worker; more are refused (503)
    body_min_rate: int = 1024       # bytes/s a request body must average after its first 10 s (proxy/body.py)
    orphan_upload_age: float = 3600.0  # seconds: a partial upload no live process owns is then removed
    data_dir: str = DEFAULT_DATA_DIR     # base of the default store and provider paths (absolute once loaded)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = f"sqlite:///{DEFAULT_DATA_DIR}/{STORE_FILE}"
    pool_min: int = 1                # PostgreSQL: connections the pool keeps open
    pool_max: int = 10               # PostgreSQL: connections the pool may open (per worker)
    statement_timeout: float = 10.0  # PostgreSQL: seconds one statement may run before the server cancels it

    @property
    def masked_url(self) -> str:
        """The URL with any password replaced by ``***``, for logs and messages."""
        return _USERINFO_PASSWORD.sub(_MASK_PASSWORD, self.url)

    def __repr__(self) -> str:  # a PostgreSQL URL may hold a password
        return (f"StoreConfig(url={self.masked_url!r}, pool_min={self.pool_min}, pool_max={self.pool_max}, "
                f"statement_timeout={self.statement_timeout})")


@dataclass(frozen=True, slots=True)
class AuthKey:
    key: str = field(repr=False)
    tenant: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: tuple[AuthKey, ...] = ()

    @property
    def enabled(self) -> bool:
        """Without keys, auth is off and every request belongs to the tenant ``default``."""
        return bool(self.keys)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_file_size: int = 512 * 1024**2
    max_batch_file_size: int = 200 * 1024**2
    tenant_storage_quota: int = 100 * 1000**3
    max_batch_lines: int = 50_000
    max_json_body: int = 32 * 1024**2


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Upstream timeouts in seconds, one meaning each on every path (buffered calls, SSE,
    uploads, downloads): ``connect`` bounds opening a connection (TCP, proxy tunnel, TLS);
    ``read`` is the longest gap between two reads from the upstream (before the first byte of
    the answer, and between any two pieces of it); ``total``, if set, bounds the whole
    exchange, retries included."""

    connect: float = 10.0
    read: float = 600.0
    total: float | None = None


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How an HTTP provider checks its upstream (and proves itself to it)."""

    ca_bundle: str | None = None       # PEM file of the CAs to trust instead of the system's
    client_cert: str | None = None     # PEM client certificate (mTLS), with client_key
    client_key: str | None = None
    verify: bool = True                # false: no certificate or host name check at all


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    path: str | None = None
    shared_filesystem: bool = False  # local: `path` is a filesystem every replica mounts
    shared: bool = False          # all tenants may reach upstream ids the gateway has not seen
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    max_retries: int = 2
    proxy: str | None = None      # http(s) types: egress proxy URL, "none" for no proxy; None: the environment's
    tls: TLSConfig = field(default_factory=TLSConfig)
    deployments: dict[str, str] = field(default_factory=dict)   # azure: model → deployment
    organization: str | None = None
    project: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    region: str | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None                              # S3 / GCS emulator
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    service_file: str | None = None
    project_id: str | None = None
    model: str | None = None
    anthropic_version: str = "2023-06-01"
    anthropic_beta: str = "files-api-2025-04-14"
    max_file_size: int | None = None                             # this provider's own cap, if lower
    upload_chunk_size: int | None = None                         # s3/bedrock: S3 part size; gcs/vertex: GCS chunk


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    store: StoreConfig
    auth: AuthConfig
    limits: LimitsConfig
    default_provider: str
    providers: tuple[ProviderConfig, ...]
    filters: tuple[str, ...]
    log_level: str

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


@dataclass(frozen=True, slots=True)
class _ProviderType:
    keys: tuple[str, ...]                # the keys this type reads, beyond _COMMON_PROVIDER_KEYS
    required: tuple[str, ...] = ()
    defaults: Mapping[str, str] = field(default_factory=dict)
    data_paths: Mapping[str, str] = field(default_factory=dict)  # path keys → default dir under data_dir


_COMMON_PROVIDER_KEYS = ("shared", "timeouts", "max_retries", "max_file_size")
_HTTP_KEYS = ("proxy", "tls")    # the types whose upstream is reached by the gateway's own HTTP client
_PROVIDER_TYPES = {
    "openai": _ProviderType(
        ("api_base", "api_key", "organization", "project", "headers", *_HTTP_KEYS),
        required=("api_key",), defaults={"api_base": "https://api.openai.com/v1"}),
    "azure": _ProviderType(
        ("api_base", "api_key", "api_version", "deployments", "headers", *_HTTP_KEYS),
        required=("api_base", "api_key", "api_version")),
    "groq": _ProviderType(
        ("api_base", "api_key", "headers", *_HTTP_KEYS),
        required=("api_key",), defaults={"api_base": "https://api.groq.com/openai/v1"}),
    "anthropic": _ProviderType(
        ("api_base", "api_key", "anthropic_version", "anthropic_beta", "headers", "path", "model", *_HTTP_KEYS),
        required=("api_key",), defaults={"api_base": "https://api.anthropic.com"},
        data_paths={"path": "anthropic-batches"}),
    "local": _ProviderType(("path", "shared_filesystem"), data_paths={"path": "files"}),
    "bedrock": _ProviderType(
        ("bucket", "region", "prefix", "endpoint_url", "aws_access_key_id", "aws_secret_access_key", "model",
         "upload_chunk_size"),
        required=("bucket", "region")),
    "vertex": _ProviderType(
        ("bucket", "project_id", "region", "prefix", "endpoint_url", "service_file", "model", "upload_chunk_size"),
        required=("bucket", "project_id"), defaults={"region": "us-central1"}),
    # The operator's own bucket, files stored as sent (bedrock / vertex without translation).
    "s3": _ProviderType(
        ("bucket", "region", "prefix", "endpoint_url", "aws_access_key_id", "aws_secret_access_key",
         "upload_chunk_size"),
        required=("bucket",), defaults={"region": "us-east-1"}),
    "gcs": _ProviderType(
        ("bucket", "prefix", "endpoint_url", "service_file", "upload_chunk_size"), required=("bucket",)),
}
_PROVIDER_FIELDS = frozenset(f.name for f in fields(ProviderConfig))


def default_provider_path(provider_type: str, data_dir: str = DEFAULT_DATA_DIR) -> str:
    """Where a provider of ``provider_type`` keeps its files when its ``path`` is not set."""
    return os.path.abspath(os.path.join(data_dir, _PROVIDER_TYPES[provider_type].data_paths["path"]))
_URL_KEYS = ("api_base", "endpoint_url")


# --------------------------------------------------------------------------- values


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"200 MB"`` or ``"1024"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _NUMBER_WITH_UNIT.fullmatch(value.strip())):
        number, unit = m.groups()
        if (unit in _SIZE_UNITS or not unit) and len(number) <= _MAX_DIGITS:
            factor = _SIZE_UNITS[unit or "B"]
            return int(number) * factor if "." not in number else round(float(number) * factor)
    raise ValueError(f"must be a size such as 512MiB or 200MB (units: {', '.join(_SIZE_UNITS)}), not {value!r}")


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as ``"500ms"``, ``"30s"`` or ``"5m"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, str) and (m := _NUMBER_WITH_UNIT.fullmatch(value.strip())):
        number, unit = m.groups()
        if (unit in _DURATION_UNITS or not unit) and len(number) <= _MAX_DIGITS:
            return float(number) * _DURATION_UNITS[unit or "s"]
    raise ValueError(f"must be a duration such as 500ms, 30s or 5m, not {value!r}")


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _to_int(value: Any, *, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("must be an integer")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _to_size(value: Any) -> int:
    size = parse_size(value)
    if size == 0:
        raise ValueError("must be greater than 0")
    return size


def _to_duration(value: Any, *, positive: bool) -> float:
    seconds = parse_duration(value)
    if positive and seconds == 0:
        raise ValueError("must be greater than 0")
    return seconds


def _to_url(value: Any) -> str:
    if not _HTTP_URL.fullmatch(_to_str(value)):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that were set, so that dataclass defaults fill in the rest."""
    return {k: v for k, v in values.items() if v is not None}


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# --------------------------------------------------------------------------- reading YAML


class _Context:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def resolve(self, value: Any) -> Any:
        """``value`` with an ``os.environ/NAME`` reference replaced by the variable's value."""
        if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
            return value
        name = value[len(ENV_PREFIX):]
        if name not in self.env:
            raise ValueError(f"environment variable {name} is not set")
        if not self.env[name]:
            raise ValueError(f"environment variable {name} is empty")
        return self.env[name]


class _Section:
    """One YAML mapping at a key path.

    Getters record a problem and return None for a wrong value, and return the default for an
    absent one, so that parsing goes on and reports every problem in the file at once.
    """

    def __init__(self, data: Any, path: str, ctx: _Context) -> None:
        self.path = path
        self.ctx = ctx
        self.data: Mapping[Any, Any] = {}
        if isinstance(data, Mapping):
            self.data = data
        elif data is not None:
            ctx.problems.append(f"{path}: must be a mapping")

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.ctx.problems.append(f"{self.key_path(key)}: {message}")

    def has(self, key: str) -> bool:
        return self.data.get(key) not in (None, "")

    def reject_unknown(self, allowed: tuple[str, ...] | frozenset[str]) -> None:
        for key in self.data:
            if key not in allowed:
                self.problem(str(key), "unknown key")

    def _read(self, key: str, convert: Callable[[Any], Any], default: Any = None, required: bool = False) -> Any:
        if not self.has(key):
            if required:
                self.problem(key, "required")
            return default
        try:
            return convert(self.ctx.resolve(self.data[key]))
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        return self._read(key, _to_str, default, required)

    def url(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        return self._read(key, _to_url, default, required)

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        return self._read(key, partial(_to_int, minimum=minimum, maximum=maximum))

    def boolean(self, key: str) -> bool | None:
        return self._read(key, _to_bool)

    def size(self, key: str) -> int | None:
        return self._read(key, _to_size)

    def duration(self, key: str, *, positive: bool = False) -> float | None:
        return self._read(key, partial(_to_duration, positive=positive))

    def section(self, key: str) -> _Section:
        return _Section(self.data.get(key), self.key_path(key), self.ctx)

    def string_map(self, key: str) -> dict[str, str]:
        section = self.section(key)
        entries = {str(k): section.string(str(k), required=True) for k in section.data}
        return {k: v for k, v in entries.items() if v is not None}

    def _list(self, key: str) -> list[tuple[str, Any]] | None:
        """The items of a list with their key paths; None when absent."""
        items = self.data.get(key)
        if items is None:
            return None
        if not isinstance(items, list):
            self.problem(key, "must be a list")
            return None
        return [(f"{self.key_path(key)}[{i}]", item) for i, item in enumerate(items)]

    def sections(self, key: str) -> list[_Section] | None:
        """The mapping items of a list as sections; None when absent."""
        items = self._list(key)
        if items is None:
            return None
        for path, item in items:
            if not isinstance(item, Mapping):
                self.ctx.problems.append(f"{path}: must be a mapping")
        return [_Section(item, path, self.ctx) for path, item in items if isinstance(item, Mapping)]

    def strings(self, key: str) -> list[tuple[str, str]] | None:
        """The string items of a list with their key paths; None when absent."""
        items = self._list(key)
        if items is None:
            return None
        valid = []
        for path, item in items:
            try:
                valid.append((path, _to_str(self.ctx.resolve(item))))
            except ValueError as exc:
                self.ctx.problems.append(f"{path}: {exc}")
        return valid


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings (``api_version: 2024-10-21`` needs no quotes) and
    rejects a key repeated in one mapping, which plain YAML resolves silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# --------------------------------------------------------------------------- sections


def _parse_server(s: _Section) -> ServerConfig:
    s.reject_unknown(_field_names(ServerConfig))
    base_path = s.string("base_path")
    if base_path is not None and not base_path.startswith("/"):
        s.problem("base_path", "must start with '/'")
        base_path = None
    return ServerConfig(**_given({
        "host": s.string("host"),
        "port": s.integer("port", minimum=1, maximum=65535),
        "workers": s.integer("workers", minimum=1),
        "base_path": base_path and base_path.rstrip("/"),
        "drain_timeout": s.duration("drain_timeout"),
        "chunk_size": s.size("chunk_size"),
        "expiry_sweep_interval": s.duration("expiry_sweep_interval"),
        "header_timeout": s.duration("header_timeout", positive=True),
        "body_idle_timeout": s.duration("body_idle_timeout", positive=True),
        "keepalive_timeout": s.duration("keepalive_timeout", positive=True),
        "max_connections": s.integer("max_connections", minimum=1),
        "body_min_rate": s.size("body_min_rate"),
        "orphan_upload_age": s.duration("orphan_upload_age", positive=True),
        "data_dir": os.path.abspath(s.string("data_dir") or DEFAULT_DATA_DIR),
    }))


def _absolute_sqlite_url(url: str) -> str:
    """``sqlite:///relative.db`` → ``sqlite:////<cwd>/relative.db``; absolute and in-memory URLs unchanged."""
    path = url[len("sqlite:///"):]
    if not path or path.startswith("/") or path == ":memory:":
        return url
    return "sqlite:///" + os.path.abspath(path)


def _parse_store(s: _Section, data_dir: str) -> StoreConfig:
    s.reject_unknown(_field_names(StoreConfig))
    url = s.string("url")
    if url is not None and not url.startswith(STORE_SCHEMES):
        s.problem("url", "must be a sqlite:/// or a postgresql:// (postgres://) URL")
        url = None
    pool_min = s.integer("pool_min", minimum=0)
    pool_max = s.integer("pool_max", minimum=1)
    most = pool_max if pool_max is not None else StoreConfig().pool_max
    if pool_min is not None and pool_min > most:
        s.problem("pool_min", f"must not exceed store.pool_max ({most})")
    url = url or "sqlite:///" + os.path.join(data_dir, STORE_FILE)
    return StoreConfig(**_given({
        "url": _absolute_sqlite_url(url) if url.startswith("sqlite:") else url,
        "pool_min": pool_min,
        "pool_max": pool_max,
        "statement_timeout": s.duration("statement_timeout", positive=True),
    }))


def _parse_auth(s: _Section) -> AuthConfig:
    s.reject_unknown(("keys",))
    keys: list[AuthKey] = []
    first_use: dict[str, str] = {}      # key → the key path that set it first
    for item in s.sections("keys") or ():
        item.reject_unknown(("key", "tenant", "admin"))
        key = item.string("key", required=True)
        tenant = item.string("tenant", required=True)
        admin = item.boolean("admin")
        if key is None or tenant is None:
            continue
        if key in first_use:
            item.problem("key", f"same key as {first_use[key]}")
        else:
            first_use[key] = item.key_path("key")
        keys.append(AuthKey(key=key, tenant=tenant, admin=bool(admin)))
    return AuthConfig(keys=tuple(keys))


def _parse_limits(s: _Section) -> LimitsConfig:
    s.reject_unknown(_field_names(LimitsConfig))
    return LimitsConfig(**_given({
        "max_file_size": s.size("max_file_size"),
        "max_batch_file_size": s.size("max_batch_file_size"),
        "tenant_storage_quota": s.size("tenant_storage_quota"),
        "max_batch_lines": s.integer("max_batch_lines", minimum=1),
        "max_json_body": s.size("max_json_body"),
    }))


def _parse_timeouts(s: _Section) -> TimeoutConfig:
    if "idle" in s.data:
        s.problem("idle", "removed: timeouts.read now bounds every gap between two reads, SSE events included")
    s.reject_unknown((*_field_names(TimeoutConfig), "idle"))
    return TimeoutConfig(**_given({key: s.duration(key, positive=True) for key in _field_names(TimeoutConfig)}))


def _parse_tls(s: _Section) -> TLSConfig:
    s.reject_unknown(_field_names(TLSConfig))
    paths = {key: s.string(key) for key in ("ca_bundle", "client_cert", "client_key")}
    for key, path in paths.items():
        if path is not None and not os.path.isfile(path):
            s.problem(key, f"no such file: {path}")
    for key, partner in (("client_cert", "client_key"), ("client_key", "client_cert")):
        if s.has(key) and not s.has(partner):
            s.problem(partner, f"required when {key} is set")
    _check_pem(s, paths)
    return TLSConfig(**_given({**paths, "verify": s.boolean("verify")}))


def _check_pem(s: _Section, paths: Mapping[str, str | None]) -> None:
    """Files that exist must also load, so that check-config (not the first request) says so."""
    ca, cert, key = (paths[k] for k in ("ca_bundle", "client_cert", "client_key"))
    try:
        if ca is not None and os.path.isfile(ca):
            ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        s.problem("ca_bundle", f"not a PEM bundle of CA certificates: {getattr(exc, 'reason', None) or exc}")
    try:
        if cert is not None and key is not None and os.path.isfile(cert) and os.path.isfile(key):
            ssl.create_default_context().load_cert_chain(cert, key, password=no_key_password)
    except (ssl.SSLError, ValueError) as exc:
        s.problem("client_cert", f"cannot load the certificate with client_key (PEM, unencrypted key): "
                                 f"{getattr(exc, 'reason', None) or exc}")


def no_key_password() -> bytes:
    """A client key must be unencrypted: never prompt on the terminal for its passphrase."""
    return b""


def _parse_proxy(s: _Section, key: str) -> str | None:
    value = s.string(key)
    if value is None or value.lower() == "none":
        return None if value is None else "none"
    try:
        return _to_proxy_url(value)
    except ValueError as exc:
        s.problem(key, str(exc))
        return None


def _to_proxy_url(value: str) -> str:
    u = urlsplit(value)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"must be an http:// URL (or none), not {_redact_userinfo(value)!r}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError("must be scheme://[user:password@]host[:port] (no path)")
    try:
        u.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _redact_userinfo(url: str) -> str:
    """``http://user:pass@host`` → ``http://***@host``: proxy credentials never reach a message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _parse_provider_key(s: _Section, key: str, kind: _ProviderType, data_dir: str) -> Any:
    if key in ("shared", "shared_filesystem"):
        return s.boolean(key)
    if key == "timeouts":
        return _parse_timeouts(s.section(key))
    if key == "tls":
        return _parse_tls(s.section(key))
    if key == "proxy":
        return _parse_proxy(s, key)
    if key == "max_retries":
        return s.integer(key, minimum=0)
    if key in ("max_file_size", "upload_chunk_size"):
        return s.size(key)
    if key in ("deployments", "headers"):
        return s.string_map(key)
    if key in kind.data_paths:
        path = s.string(key)
        return os.path.abspath(path) if path else os.path.abspath(os.path.join(data_dir, kind.data_paths[key]))
    read = s.url if key in _URL_KEYS else s.string
    return read(key, kind.defaults.get(key), required=key in kind.required)


def _parse_provider(s: _Section, data_dir: str) -> ProviderConfig | None:
    """The provider, or None when its name or type is unusable (the problem is recorded)."""
    name = s.string("name", required=True)
    if name is not None and not _PROVIDER_NAME.fullmatch(name):
        s.problem("name", "may contain only letters, digits, '.', '_' and '-'")
    type_ = s.string("type", required=True)
    kind = _PROVIDER_TYPES.get(type_) if type_ is not None else None
    if type_ is not None and kind is None:
        s.problem("type", f"unknown provider type {type_!r} (valid types: {', '.join(_PROVIDER_TYPES)})")
    if kind is None:
        s.reject_unknown(_PROVIDER_FIELDS)
        return None
    used = ("name", "type", *_COMMON_PROVIDER_KEYS, *kind.keys)
    for key in s.data:
        if key not in used:
            s.problem(str(key), f"not used by provider type {type_}" if key in _PROVIDER_FIELDS else "unknown key")
    values = {key: _parse_provider_key(s, key, kind, data_dir) for key in (*_COMMON_PROVIDER_KEYS, *kind.keys)}
    for key, partner in (("aws_access_key_id", "aws_secret_access_key"), ("aws_secret_access_key", "aws_access_key_id")):
        if key in kind.keys and s.has(partner) and not s.has(key):
            s.problem(key, f"required when {partner} is set")
    if name is None:
        return None
    return ProviderConfig(name=name, type=type_, **_given(values))


def _parse_providers(root: _Section, data_dir: str) -> tuple[ProviderConfig, ...]:
    """The configured providers; with none configured, the one ``local`` provider."""
    sections = root.sections("providers")
    if not sections:
        return (ProviderConfig(name="local", type="local", path=default_provider_path("local", data_dir)),)
    providers: list[ProviderConfig] = []
    first_use: dict[str, str] = {}      # name → the path of the provider that has it first
    for section in sections:
        provider = _parse_provider(section, data_dir)
        if provider is None:
            continue
        if provider.name in first_use:
            section.problem("name", f"duplicate provider name {provider.name!r} (also {first_use[provider.name]})")
        else:
            first_use[provider.name] = section.path
        providers.append(provider)
    return tuple(providers)


def _parse_default_provider(root: _Section, providers: tuple[ProviderConfig, ...]) -> str:
    names = [p.name for p in providers]
    default = root.string("default_provider")
    if default is None:
        return "local" if "local" in names or not names else names[0]
    if default not in names:
        root.problem("default_provider", f"no provider named {default!r} (configured: {', '.join(names)})")
    return default


def _parse_filters(root: _Section, auth: AuthConfig) -> tuple[str, ...]:
    items = root.strings("filters")
    if items is None:
        return DEFAULT_FILTERS
    names: list[str] = []
    for path, name in items:
        if name not in FILTER_NAMES:
            root.ctx.problems.append(f"{path}: unknown filter {name!r} (valid filters: {', '.join(FILTER_NAMES)})")
        elif name in names:
            root.ctx.problems.append(f"{path}: duplicate filter {name!r}")
        elif name == "auth" and names:
            root.ctx.problems.append(f"{path}: auth must be the first filter")
        names.append(name)
    if auth.enabled and "auth" not in names:
        root.problem("filters", "auth.keys are configured but the auth filter is not in the list")
    return tuple(names)


def check_log_level(value: str) -> str:
    """``value`` as a level name of LOG_LEVELS (any case); the config and the command line share it."""
    level = value.lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _parse_log_level(root: _Section) -> str:
    level = root.string("log_level") or "info"
    try:
        return check_log_level(level)
    except ValueError as exc:
        root.problem("log_level", str(exc))
        return level


# --------------------------------------------------------------------------- entry points


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Config:
    """The validated config for ``data`` (parsed YAML); raises :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(["config: the top level must be a mapping of keys"])
    root = _Section(data, "", _Context(env))
    root.reject_unknown(_field_names(Config))
    server = _parse_server(root.section("server"))
    store = _parse_store(root.section("store"), server.data_dir)
    auth = _parse_auth(root.section("auth"))
    limits = _parse_limits(root.section("limits"))
    providers = _parse_providers(root, server.data_dir)
    default_provider = _parse_default_provider(root, providers)
    filters = _parse_filters(root, auth)
    log_level = _parse_log_level(root)
    if root.ctx.problems:
        raise ConfigError(root.ctx.problems)
    return Config(server, store, auth, limits, default_provider, providers, filters, log_level)


def default_config() -> Config:
    """The config without a file: one ``local`` provider, a SQLite store, auth off."""
    return parse_config({}, env={})


def _with_overrides(data: Any, overrides: Mapping[str, Any]) -> Any:
    """``data`` with each ``"section.key"`` (or top-level ``"key"``) of ``overrides`` set over it."""
    if not overrides or not isinstance(data, Mapping):
        return data     # a top level that is not a mapping is reported by parse_config
    merged = dict(data)
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        if not section:
            merged[key] = value
        elif isinstance(merged.get(section), Mapping) or merged.get(section) is None:
            merged[section] = {**(merged.get(section) or {}), key: value}
    return merged


def load_config(path: str | None, env: Mapping[str, str] = os.environ,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """The validated config from the YAML file at ``path`` (None: the defaults), with
    ``overrides`` (``{"server.port": 9000}``, from the command line or environment) over the file."""
    if path is None:
        return parse_config(_with_overrides({}, overrides or {}), env) if overrides else default_config()
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_YamlLoader)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError([f"{path}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return parse_config(_with_overrides({} if data is None else data, overrides or {}), env)


def check_config_main(path: str | None) -> int:
    """``sluicegate check-config``: 0 and a summary for a valid config, 2 and the problems if not."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    count = len(config.providers)
    names = ", ".join(p.name for p in config.providers)
    print(f"OK: {count} provider{'s' if count != 1 else ''} ({names})")
    return 0
