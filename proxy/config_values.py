"""The value types of config keys, for the pydantic models of ``config.py`` and ``providers/configs.py``.

Every leaf type is an ``Annotated`` type whose before-validator first resolves an
``os.environ/NAME`` reference (from the validation context's ``env``, else ``os.environ``),
then converts and checks the value with the gateway's own rules and messages: pydantic's
lax coercions (``"8080"`` → 8080, ``1`` → ``True``) are not the config's, so each converter
decides alone and raises ``ValueError`` with the message the user sees. :class:`Keys` is the
base of every mapping section: a null or ``""`` value counts as absent (templated configs leave
keys blank), unknown keys are refused, ``together`` declares keys set only in pairs and
``renamed`` the deprecated names a key is still read under.
"""
from __future__ import annotations

import dataclasses
import os
import re
import ssl
from collections.abc import Mapping
from functools import lru_cache, partial
from math import isfinite
from typing import Annotated, Any, Callable, ClassVar, cast
from urllib.parse import urlsplit

from pydantic.dataclasses import dataclass
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError
from pydantic_core.core_schema import ErrorType

ENV_PREFIX = "os.environ/"
DEFAULT_DATA_DIR = "./sluicegate-data"

# Every section: unknown keys refused (frozen is set on each dataclass: frozen dataclasses inherit only from frozen ones).
SECTION = ConfigDict(extra="forbid")

_SIZE_UNITS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}
_DURATION_UNITS = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?) ?([A-Za-z]*)")
_MAX_DIGITS = 30  # longer numbers are typos; and a float of 400 digits is infinite
_HTTP_URL = re.compile(r"https?://[^/\s]+\S*")


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


# --------------------------------------------------------------------------- converters


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def to_int(value: Any, *, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("must be an integer")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def to_size(value: Any) -> int:
    size = parse_size(value)
    if size == 0:
        raise ValueError("must be greater than 0")
    return size


def to_duration(value: Any, *, positive: bool) -> float:
    seconds = parse_duration(value)
    if positive and seconds == 0:
        raise ValueError("must be greater than 0")
    return seconds


def to_url(value: Any) -> str:
    url = to_str(value)
    if not _HTTP_URL.fullmatch(url):
        raise ValueError("must be an http:// or https:// URL")
    return url.rstrip("/")


def to_proxy(value: Any) -> str:
    """An egress proxy: ``none`` (no proxy, whatever the environment says) or
    ``http://[user:password@]host[:port]``; credentials never appear in a message."""
    text = to_str(value)
    if text.lower() == "none":
        return "none"
    u = urlsplit(text)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"must be an http:// URL (or none), not {redact_userinfo(text)!r}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError("must be scheme://[user:password@]host[:port] (no path)")
    try:
        u.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return text.rstrip("/")


def redact_userinfo(url: str) -> str:
    """``http://user:pass@host`` → ``http://***@host``: proxy credentials never reach a message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def no_key_password() -> bytes:
    """A client key must be unencrypted: never prompt on the terminal for its passphrase."""
    return b""


def pem_problems(ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> list[tuple[str, str]]:
    """``(key, problem)`` for each of these files that does not load as what it should be."""
    problems = []
    try:
        if ca_bundle is not None:
            ssl.create_default_context(cafile=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(("ca_bundle", f"not a PEM bundle of CA certificates: {getattr(exc, 'reason', None) or exc}"))
    try:
        if client_cert is not None and client_key is not None:
            ssl.create_default_context().load_cert_chain(client_cert, client_key, password=no_key_password)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(("client_cert", "cannot load the certificate with client_key (PEM, unencrypted key): "
                         f"{getattr(exc, 'reason', None) or exc}"))
    return problems


def removed_key(message: str) -> Callable[[Any], Any]:
    """The converter of a key that no longer exists: always refused, with what replaces it."""
    def refuse(value: Any) -> Any:
        raise ValueError(message)
    return refuse


def to_path(value: Any) -> str:
    """An absolute path; a relative one is relative to the working directory at load."""
    return os.path.abspath(to_str(value))


def to_file(value: Any) -> str:
    """The absolute path of a file that exists (a CA bundle, a client certificate)."""
    path = to_path(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


def data_dir_of(info: ValidationInfo) -> str:
    """``server.data_dir`` of the config being loaded (the default outside a load)."""
    return (info.context or {}).get("data_dir") or os.path.abspath(DEFAULT_DATA_DIR)


def resolve_env(value: Any, info: ValidationInfo) -> Any:
    """``value`` with an ``os.environ/NAME`` reference replaced by the variable's value. A
    variable that is unset or empty is an error, never a silent empty string."""
    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
        return value
    env = (info.context or {}).get("env", os.environ)
    name = value[len(ENV_PREFIX):]
    if name not in env:
        raise ValueError(f"environment variable {name} is not set")
    if not env[name]:
        raise ValueError(f"environment variable {name} is empty")
    return env[name]


def resolved(convert: Callable[[Any], Any]) -> BeforeValidator:
    """The before-validator that resolves an env reference, then applies ``convert``."""
    return BeforeValidator(lambda value, info: convert(resolve_env(value, info)))


def _required_str(value: Any) -> str:
    if value is None or value == "":  # an item of a map has no default to fall back to
        raise ValueError("required")
    return to_str(value)


def _string_map(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping")
    return {str(k): v for k, v in value.items()}


def _list(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be a list")
    return value


# --------------------------------------------------------------------------- the types


Str = Annotated[str, resolved(to_str)]
Url = Annotated[str, resolved(to_url)]
Proxy = Annotated[str, resolved(to_proxy)]
Bool = Annotated[bool, resolved(to_bool)]
Size = Annotated[int, resolved(to_size)]             # bytes, > 0
Duration = Annotated[float, resolved(partial(to_duration, positive=False))]
PositiveDuration = Annotated[float, resolved(partial(to_duration, positive=True))]
Path = Annotated[str, resolved(to_path)]
File = Annotated[str, resolved(to_file)]
# A map of strings (headers, deployments): every value given, env references resolved.
StrMap = Annotated[dict[str, Annotated[str, resolved(_required_str)]], BeforeValidator(_string_map)]
List = BeforeValidator(_list)                         # YAML sequences only (a string is not a list)


def whole(minimum: int, maximum: int | None = None) -> BeforeValidator:
    """An integer key's validator: ``Annotated[int, whole(1, 65535)]``."""
    return resolved(partial(to_int, minimum=minimum, maximum=maximum))


def data_path(subdir: str) -> BeforeValidator:
    """A path key whose default is ``<server.data_dir>/<subdir>``: ``Annotated[str, data_path("files")]``,
    declared ``= Field(default=None, validate_default=True)`` so that the default is resolved too."""
    def convert(value: Any, info: ValidationInfo) -> str:
        if value is None:
            return os.path.join(data_dir_of(info), subdir)
        return to_path(resolve_env(value, info))
    return BeforeValidator(convert)


def _absent(cls: "type[Keys]", key: Any, value: Any) -> bool:
    """A key of ``cls`` that is null, or ``""`` where a scalar is expected, takes its default;
    an unknown key is reported whatever its value."""
    found = cls.__dataclass_fields__.get(key)
    if found is None or value is not None and not (isinstance(value, str) and value == ""):
        return False
    structured = found.default_factory is not dataclasses.MISSING or isinstance(found.default, tuple)
    return value is None or not structured     # "" is no mapping or list: that is reported


def _present(data: Mapping[Any, Any], key: str) -> bool:
    return data.get(key) not in (None, "")


# The validation context's list of the deprecated names a config used, as (old, new) pairs.
DEPRECATED = "deprecated"


@lru_cache(maxsize=None)
def _field_adapter(cls: type, key: str) -> TypeAdapter[Any]:
    """The validator of ``cls``'s key ``key`` alone (its type with its converter)."""
    return TypeAdapter(getattr(cls, "__pydantic_fields__")[key].annotation)


def _same_value(cls: type, key: str, a: Any, b: Any, info: ValidationInfo) -> bool:
    """``a`` and ``b`` mean the same value of ``key`` (``https://h/`` and ``https://h``); a
    value that does not convert means nothing the same."""
    if a == b:
        return True
    adapter = _field_adapter(cls, key)
    try:
        return bool(adapter.validate_python(a, context=info.context) == adapter.validate_python(b, context=info.context))
    except ValidationError:
        return False


@dataclass(frozen=True, config=SECTION)
class Keys:
    """Base of every mapping section (subclasses are ``@dataclass(frozen=True, config=SECTION)``)."""

    # (key, partner): ``key`` is required when ``partner`` is set; list both directions.
    together: ClassVar[tuple[tuple[str, str], ...]] = ()
    # (old, new): ``old`` is a deprecated name of the key ``new``, read as ``new`` (and noted in
    # the validation context's DEPRECATED list, for one warning at start-up); both set to
    # different values is an error.
    renamed: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _read(cls, data: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return handler(data)    # direct construction (keywords) or not a mapping (an error)
        lonely = [InitErrorDetails(type=PydanticCustomError("together", "required when {partner} is set",
                                                            {"partner": partner}), loc=(key,), input=None)
                  for key, partner in cls.together if _present(data, partner) and not _present(data, key)]
        given = {str(k): v for k, v in data.items() if not _absent(cls, k, v)}
        moved: dict[str, str] = {}      # new → the old name its value was given under
        for old, new in cls.renamed:
            value = given.pop(old, None)
            if not _present(data, old):
                continue
            if not _present(given, new):
                given[new] = value
                moved[new] = old
            elif not _same_value(cls, new, value, given[new], info):
                lonely.append(InitErrorDetails(type=PydanticCustomError(
                    "renamed", "deprecated name of {new}, which is also set, to another value: set only {new}",
                    {"new": new}), loc=(old,), input=None))
            if isinstance(info.context, dict):
                info.context.setdefault(DEPRECATED, []).append((old, new))
        try:
            result = handler(given)
        except ValidationError as exc:
            if not lonely and not moved:
                raise
            # a problem of a value given under its old name is reported under that name
            found = _init_details(exc)
            for d in found:
                loc = tuple(d.get("loc", ()))
                if loc and loc[0] in moved:
                    d["loc"] = (moved[str(loc[0])], *loc[1:])
            raise ValidationError.from_exception_data(exc.title, [*found, *lonely]) from None
        if lonely:
            raise ValidationError.from_exception_data(cls.__name__, lonely)
        return result


def _init_details(exc: ValidationError) -> list[InitErrorDetails]:
    """``exc``'s errors as they can be raised again together with more."""
    details = []
    for e in exc.errors():
        try:
            # pydantic's own (the KeyError below tells, at run time): raised again by name
            PydanticKnownError(cast(ErrorType, e["type"]), e.get("ctx"))
            details.append(InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx") or {}))
        except KeyError:                                    # one of ours: its message is final
            message = e["msg"].replace("{", "{{").replace("}", "}}")
            details.append(InitErrorDetails(type=PydanticCustomError(e["type"], message), loc=e["loc"], input=e["input"]))
    return details
