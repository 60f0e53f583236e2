"""YAML → typed, validated configuration.

A config file is read once at start-up into frozen pydantic dataclasses; nothing else in the
gateway sees raw YAML. Each section is a model declaring its keys, types and defaults once:
the sections here, each provider type's in :mod:`proxy.providers.configs` (whose registry of
types gives the ``providers[]`` union, discriminated on ``type``), the value types and their
conversions in :mod:`proxy.config_values`. Conventions:

* ``os.environ/NAME`` (LiteLLM's spelling), wherever a value is expected, reads the
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
  ``providers[2].api_base: required``), and all are raised together in one :class:`ConfigError`;
  pydantic's errors are translated to that form (:func:`_problem`), never shown as they are.
  Sections (and each provider) are validated one by one, so that the checks across sections
  (provider names, ``default_provider``, the filters auth needs) still run when one is invalid.
  Messages name environment variables but never show a secret's value.
* A deprecated key name (a section's ``renamed``) still works, as its new name; each use is one
  line of :attr:`Config.warnings`, which the gateway logs once at start-up.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Hashable
from dataclasses import field
from functools import lru_cache
from typing import Annotated, Any, Mapping

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic.dataclasses import dataclass

from .config_values import (
    DEFAULT_DATA_DIR, DEPRECATED, ENV_PREFIX, SECTION, Bool, Duration, Keys, List, Path, PositiveDuration, Size, Str, data_dir_of,
    parse_duration, parse_size, resolve_env, resolved, to_duration, to_str, whole,
)
from .providers.configs import (
    PROVIDER_KEYS, UNKNOWN_TYPE_TAG, AnyProviderConfig, LocalConfig, ProviderConfig, ProviderName, TimeoutConfig,
    type_tag,
)

__all__ = [
    "ENV_PREFIX", "DEFAULT_DATA_DIR", "STORE_FILE", "FILTER_NAMES", "DEFAULT_FILTERS", "LOG_LEVELS", "ConfigError",
    "ServerConfig", "StoreConfig", "AuthKey", "AuthConfig", "LimitsConfig", "TimeoutConfig", "ProviderConfig",
    "Config", "parse_size", "parse_duration", "check_log_level", "parse_config", "default_config", "load_config",
    "check_config_main",
]

from .idle_poll import MAX_WINDOW as MAX_IDLE_POLL
from filters import DEFAULT_FILTERS, FILTER_NAMES  # the filter registry is the one list of names

STORE_FILE = "sluicegate.db"            # the default SQLite store, under server.data_dir
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every reason, one ``"<key path>: <what>"`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- the typed config


def _base_path(value: Any) -> str:
    path = to_str(value)
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    return path.rstrip("/")


def _idle_poll(value: Any) -> float:
    seconds = to_duration(value, positive=False)
    if seconds > MAX_IDLE_POLL:
        raise ValueError(f"must be at most {MAX_IDLE_POLL * 1000:g}ms (it bridges gaps of microseconds)")
    return seconds


IdlePoll = Annotated[float, resolved(_idle_poll)]


@dataclass(frozen=True, config=SECTION)
class ServerConfig(Keys):
    host: Str = "127.0.0.1"
    port: Annotated[int, whole(1, 65535)] = 8080
    workers: Annotated[int, whole(1)] = 1
    base_path: Annotated[str, BeforeValidator(lambda v, info: _base_path(resolve_env(v, info)))] = "/v1"  # "/" → ""
    drain_timeout: Duration = 30.0     # seconds
    chunk_size: Size = 256 * 1024      # bytes
    expiry_sweep_interval: Duration = 60.0  # seconds between sweeps of expired files
    header_timeout: PositiveDuration = 10.0    # seconds for the request line and headers to arrive
    body_idle_timeout: PositiveDuration = 60.0  # seconds between two reads of a request body
    keepalive_timeout: PositiveDuration = 75.0  # seconds an idle keep-alive connection stays open
    max_connections: Annotated[int, whole(1)] = 10000  # open client connections per worker; more are refused (503)
    body_min_rate: Size = 1024         # bytes/s a request body must average after its first 10 s (proxy/body.py)
    idle_poll: IdlePoll = 0.0001       # seconds the loop polls after the last exchange began or ended (proxy/idle_poll.py)
    orphan_upload_age: PositiveDuration = 3600.0  # seconds: a partial upload no live process owns is then removed
    # base of the default store and provider paths (absolute once loaded)
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, validate_default=True)


_USERINFO_PASSWORD = re.compile(r"(://[^:/@]*):[^@/]*@")
_MASK_PASSWORD = r"\1:***@"
_DEFAULT_POOL_MAX = 10


def _store_url(value: Any, info: ValidationInfo) -> str:
    """The store URL; absent: the SQLite file under ``server.data_dir``. A relative SQLite path
    becomes absolute (``sqlite:///rel.db`` → ``sqlite:////<cwd>/rel.db``); in-memory stays."""
    if value is None:
        return "sqlite:///" + os.path.join(data_dir_of(info), STORE_FILE)
    url = to_str(resolve_env(value, info))
    if not url.startswith(STORE_SCHEMES):
        raise ValueError("must be a sqlite:/// or a postgresql:// (postgres://) URL")
    path = url[len("sqlite:///"):] if url.startswith("sqlite:") else ""
    return "sqlite:///" + os.path.abspath(path) if path and not path.startswith("/") and path != ":memory:" else url


def _at_most_pool_max(value: int, info: ValidationInfo) -> int:
    most = info.data.get("pool_max", _DEFAULT_POOL_MAX)   # absent when pool_max is itself wrong
    if value > most:
        raise ValueError(f"must not exceed store.pool_max ({most})")
    return value


@dataclass(frozen=True, config=SECTION)
class StoreConfig(Keys):
    url: Annotated[str, BeforeValidator(_store_url)] = Field(default=None, validate_default=True)
    # pool_max before pool_min: pool_min's check reads it
    pool_max: Annotated[int, whole(1)] = _DEFAULT_POOL_MAX   # PostgreSQL: connections the pool may open (per worker)
    pool_min: Annotated[int, whole(0), AfterValidator(_at_most_pool_max)] = 1  # PostgreSQL: connections kept open
    statement_timeout: PositiveDuration = 10.0  # PostgreSQL: seconds a statement may run before the server cancels it

    @property
    def masked_url(self) -> str:
        """The URL with any password replaced by ``***``, for logs and messages."""
        return _USERINFO_PASSWORD.sub(_MASK_PASSWORD, self.url)

    def __repr__(self) -> str:  # a PostgreSQL URL may hold a password
        return (f"StoreConfig(url={self.masked_url!r}, pool_min={self.pool_min}, pool_max={self.pool_max}, "
                f"statement_timeout={self.statement_timeout})")


@dataclass(frozen=True, config=SECTION)
class AuthKey(Keys):
    key: Str = field(repr=False)
    tenant: Str
    admin: Bool = False


def _distinct_keys(keys: tuple[AuthKey, ...]) -> tuple[AuthKey, ...]:
    first_use: dict[str, int] = {}      # key → the index that set it first
    repeated = []
    for i, item in enumerate(keys):
        if item.key in first_use:
            message = PydanticCustomError("duplicate", "same key as auth.keys[{first}].key", {"first": first_use[item.key]})
            repeated.append(InitErrorDetails(type=message, loc=(i, "key"), input=None))  # never the key itself
        else:
            first_use[item.key] = i
    if repeated:
        raise ValidationError.from_exception_data("AuthConfig", repeated)
    return keys


@dataclass(frozen=True, config=SECTION)
class AuthConfig(Keys):
    keys: Annotated[tuple[AuthKey, ...], List, AfterValidator(_distinct_keys)] = ()

    @property
    def enabled(self) -> bool:
        """Without keys, auth is off and every request belongs to the tenant ``default``."""
        return bool(self.keys)


@dataclass(frozen=True, config=SECTION)
class LimitsConfig(Keys):
    max_file_size: Size = 512 * 1024**2
    max_batch_file_size: Size = 200 * 1024**2
    tenant_storage_quota: Size = 100 * 1000**3
    max_batch_lines: Annotated[int, whole(1)] = 50_000
    max_json_body: Size = 32 * 1024**2
    # background Responses turns the gateway runs at once per worker (proxy/bridge/background.py)
    background_concurrency: Annotated[int, whole(1)] = 16
    # An Upload's file limit instead of max_file_size / max_batch_file_size (unset: those apply)
    max_upload_size: Size | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """The whole config, assembled from validated sections by :func:`parse_config`."""

    server: ServerConfig
    store: StoreConfig
    auth: AuthConfig
    limits: LimitsConfig
    default_provider: str
    providers: tuple[ProviderConfig, ...]    # each one of the models of PROVIDER_TYPES
    filters: tuple[str, ...]
    log_level: str
    warnings: tuple[str, ...] = ()           # "<key path>: <what>", e.g. a deprecated key name used

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


# --------------------------------------------------------------------------- reading YAML


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


# --------------------------------------------------------------------------- pydantic's errors → problems


_MAPPING_ERRORS = ("dataclass_type", "dataclass_exact_type", "dict_type", "model_type", "model_attributes_type")
_UNKNOWN_KEY_ERRORS = ("unexpected_keyword_argument", "extra_forbidden")


def _key_path(path: str, loc: tuple[Any, ...] | list[Any]) -> str:
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else str(part)
    return path


def _problem(error: Any, provider: bool) -> tuple[tuple[Any, ...], bool, str]:
    """``(location, is an unknown key, message)`` for one pydantic error; for a provider, the
    first element of the location is the union's tag (its type), dropped here."""
    loc = list(error["loc"])
    kind = error["type"]
    tag = loc.pop(0) if provider and loc else None
    if kind in _UNKNOWN_KEY_ERRORS:
        other_type = provider and len(loc) == 1 and tag != UNKNOWN_TYPE_TAG and loc[0] in PROVIDER_KEYS
        message = f"not used by provider type {tag}" if other_type else "unknown key"
    elif kind == "missing":
        message = "required"
    elif kind in _MAPPING_ERRORS:
        message = "must be a mapping"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])    # the converters' own message
    else:                                       # ours (PydanticCustomError), or pydantic's as a clause
        message = error["msg"][:1].lower() + error["msg"][1:]
    return tuple(loc), kind in _UNKNOWN_KEY_ERRORS, message


def _in_reading_order(found: list[tuple[tuple[Any, ...], bool, str]],
                      provider: bool) -> list[tuple[tuple[Any, ...], bool, str]]:
    """pydantic reports a mapping's values in field order, then its unknown keys; a reader fixes
    typos first, so each unknown key moves before the first problem inside its mapping; and a
    provider's ``name`` and ``type`` come before all else, as they say what the rest is."""
    ordered = [item for item in found if not item[1]]
    for item in (item for item in found if item[1]):
        parent = item[0][:-1]
        at = next((i for i, (loc, unknown, _) in enumerate(ordered)
                   if loc[:len(parent)] == parent and not (unknown and loc[:-1] == parent)), len(ordered))
        ordered.insert(at, item)
    if provider:
        ordered.sort(key=lambda item: item[0][:1] not in (("name",), ("type",)) or len(item[0]) > 1)
    return ordered


@lru_cache(maxsize=None)
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


class _Reader:
    """Validates one section at a time, collecting the problems of each."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.context: dict[str, Any] = {"env": env}
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def read(self, kind: Any, value: Any, path: str, *, provider: bool = False) -> Any:
        """``value`` validated as ``kind``; None, and its problems recorded, when it is wrong."""
        used: list[tuple[str, str]] = []
        self.context[DEPRECATED] = used     # the deprecated key names of this section (config_values.Keys)
        try:
            return _adapter(kind).validate_python(value, context=self.context)
        except ValidationError as exc:
            found = _in_reading_order([_problem(error, provider) for error in exc.errors()], provider)
            self.problems += [f"{_key_path(path, loc)}: {message}" for loc, _, message in found]
            return None
        finally:
            self.warnings += [f"{_key_path(path, (old,))}: deprecated name of {new}; set {new} instead"
                              for old, new in dict.fromkeys(used)]

    def items(self, value: Any, path: str) -> list[tuple[str, Any]] | None:
        """The items of a list with their key paths; None when absent or not a list."""
        if value is None:
            return None
        if not isinstance(value, list):
            self.problems.append(f"{path}: must be a list")
            return None
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


# --------------------------------------------------------------------------- sections


def _parse_providers(r: _Reader, value: Any) -> tuple[tuple[ProviderConfig, ...], list[str]]:
    """The configured providers and their names; with none configured, the one ``local``
    provider. The names of invalid providers count too, so that no other problem is reported
    about them (a ``default_provider`` naming one)."""
    items = r.items(value, "providers")
    if not items or not any(isinstance(item, Mapping) for _, item in items):
        for path, item in items or ():
            r.problems.append(f"{path}: must be a mapping")
        return (r.read(LocalConfig, {"name": "local"}, "providers[0]"),), ["local"]
    providers: list[ProviderConfig] = []
    first_use: dict[str, str] = {}      # name → the path of the provider that has it first
    for path, item in items:
        provider = r.read(AnyProviderConfig, item, path, provider=True)
        if provider is not None:
            providers.append(provider)
        name = provider.name if provider is not None else _name_of(item, r.context)
        if name is None:
            continue
        if name in first_use:
            r.problems.append(f"{path}.name: duplicate provider name {name!r} (also {first_use[name]})")
        else:
            first_use[name] = path
    return tuple(providers), list(first_use)


def _name_of(item: Any, context: dict[str, Any]) -> str | None:
    """The valid name of a provider that is not valid otherwise, if it has one."""
    if type_tag(item) == UNKNOWN_TYPE_TAG:
        return None
    try:
        return str(_adapter(ProviderName).validate_python(item.get("name"), context=context))
    except ValidationError:
        return None


def _parse_default_provider(r: _Reader, value: Any, names: list[str]) -> str:
    default = r.read(Str, value, "default_provider") if value is not None else None
    if default is None:
        return "local" if "local" in names or not names else names[0]
    if default not in names:
        r.problems.append(f"default_provider: no provider named {default!r} (configured: {', '.join(names)})")
    return str(default)


def _parse_filters(r: _Reader, value: Any, auth: AuthConfig | None) -> tuple[str, ...]:
    listed = r.items(value, "filters")
    if listed is None:
        return DEFAULT_FILTERS
    items = [(path, name) for path, item in listed if (name := r.read(Str, item, path)) is not None]
    names: list[str] = []
    for path, name in items:
        if name not in FILTER_NAMES:
            r.problems.append(f"{path}: unknown filter {name!r} (valid filters: {', '.join(FILTER_NAMES)})")
        elif name in names:
            r.problems.append(f"{path}: duplicate filter {name!r}")
        elif name == "auth" and names:
            r.problems.append(f"{path}: auth must be the first filter")
        names.append(name)
    if auth is not None and auth.enabled and "auth" not in names:
        r.problems.append("filters: auth.keys are configured but the auth filter is not in the list")
    return tuple(names)


def check_log_level(value: str) -> str:
    """``value`` as a level name of LOG_LEVELS (any case); the config and the command line share it."""
    level = value.lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


LogLevel = Annotated[str, BeforeValidator(lambda v, info: check_log_level(to_str(resolve_env(v, info))))]


# --------------------------------------------------------------------------- entry points


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Config:
    """The validated config for ``data`` (parsed YAML); raises :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(["config: the top level must be a mapping of keys"])
    r = _Reader(env)
    sections = {f.name for f in dataclasses.fields(Config)} - {"warnings"}   # what the load found, not a section
    r.problems += [f"{key}: unknown key" for key in data if key not in sections]
    # null is absent; "" too where a scalar is expected (a section or list that is "" is reported)
    given = {key: value for key, value in data.items()
             if value is not None and not (value == "" and key in ("default_provider", "log_level"))}
    server = r.read(ServerConfig, given.get("server", {}), "server")
    r.context["data_dir"] = server.data_dir if server else os.path.abspath(DEFAULT_DATA_DIR)
    store = r.read(StoreConfig, given.get("store", {}), "store")
    auth = r.read(AuthConfig, given.get("auth", {}), "auth")
    limits = r.read(LimitsConfig, given.get("limits", {}), "limits")
    providers, names = _parse_providers(r, given.get("providers"))
    default_provider = _parse_default_provider(r, given.get("default_provider"), names)
    filters = _parse_filters(r, given.get("filters"), auth)
    log_level = r.read(LogLevel, given.get("log_level", "info"), "log_level")
    if r.problems:
        raise ConfigError(r.problems)
    return Config(server, store, auth, limits, default_provider, providers, filters, log_level, tuple(r.warnings))


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
        if mark is None:  # a marked error without its mark: PyYAML's own text says what it can
            raise ConfigError([f"{path}: {exc}"]) from None
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
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    count = len(config.providers)
    names = ", ".join(p.name for p in config.providers)
    print(f"OK: {count} provider{'s' if count != 1 else ''} ({names})")
    return 0
