"""Provider types: each one's config keys with their defaults, and the one registry of types.

A type is registered once, in :data:`PROVIDER_TYPES`: its config model (a frozen pydantic
dataclass declaring every key the type reads, with its default or as required) and the
adapter class that serves it, named as ``"module:Class"`` and imported only when a provider
of that type is created — loading or checking a config never imports an SDK (aiobotocore,
gcloud-aio). ``config.py`` derives the ``providers[]`` schema from the registry: a union
discriminated on ``type``; a type missing or not registered goes to a model that takes every
key any type knows and says which types there are.

Keys every type takes are in :class:`ProviderConfig`; a key of another type is refused with
the type's name (``not used by provider type s3``), any other unknown key as unknown.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic.dataclasses import dataclass

from ..config_values import (
    ENV_PREFIX, SECTION, Bool, File, Keys, PositiveDuration, Proxy, Size, Str, StrMap, Url, data_path, pem_problems,
    removed_key, resolve_env, resolved, to_str, whole,
)

if TYPE_CHECKING:
    from .base import Provider

# Provider names appear in model prefixes (``name/model``) and headers.
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

OPENAI_API_BASE = "https://api.openai.com/v1"
GROQ_API_BASE = "https://api.groq.com/openai/v1"
GROQ_MAX_FILE_SIZE = 100 * 1000**2          # "100 MB" (docs/provider-facts.md §6)
ANTHROPIC_API_BASE = "https://api.anthropic.com"
ANTHROPIC_MAX_FILE_SIZE = 500 * 1000**2     # "500 MB per file" (docs/provider-facts.md §5.5)
ANTHROPIC_FILES_BETA = "files-api-2025-04-14"


def _provider_name(value: Any) -> str:
    name = to_str(value)
    if not _PROVIDER_NAME.fullmatch(name):
        raise ValueError("may contain only letters, digits, '.', '_' and '-'")
    return name


ProviderName = Annotated[str, resolved(_provider_name)]

# An IAM role ARN as CreateModelInvocationJob takes it (botocore's bedrock model, RoleArn).
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")


def _role_arn(value: Any) -> str:
    arn = to_str(value)
    if not _ROLE_ARN.fullmatch(arn) or len(arn) > 2048:
        raise ValueError("must be an IAM role ARN such as arn:aws:iam::123456789012:role/BedrockBatch")
    return arn


RoleArn = Annotated[str, resolved(_role_arn)]
Retries = Annotated[int, whole(0)]


@dataclass(frozen=True, config=SECTION)
class TimeoutConfig(Keys):
    """Upstream timeouts in seconds, one meaning each on every path (buffered calls, SSE,
    uploads, downloads): ``connect`` bounds opening a connection (TCP, proxy tunnel, TLS);
    ``read`` is the longest gap between two reads from the upstream (before the first byte of
    the answer, and between any two pieces of it); ``total``, if set, bounds one attempt,
    from the request to the end of the answer (README, config reference)."""

    connect: PositiveDuration = 10.0
    read: PositiveDuration = 600.0
    total: PositiveDuration | None = None
    # Removed (it was the SSE gap; ``read`` is every gap now): refused with that pointer, never
    # silently ignored. Always None.
    idle: Annotated[None, resolved(removed_key(
        "removed: timeouts.read now bounds every gap between two reads, SSE events included"))] = None


@dataclass(frozen=True, kw_only=True, config=SECTION)
class ProviderConfig(Keys):
    """The keys of every provider type; each type's model adds its own."""

    name: ProviderName
    type: str
    shared: Bool = False          # all tenants may reach upstream ids the gateway has not seen
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    max_retries: Retries = 2
    max_file_size: Size | None = None   # this provider's own cap, if lower than limits.max_file_size

    @property
    def disk_path(self) -> str | None:
        """The directory on the gateway's own disk where this provider keeps files, if any."""
        return None


# --------------------------------------------------------------------------- HTTP APIs


@dataclass(frozen=True, kw_only=True, config=SECTION)
class TlsConfig(Keys):
    """How the gateway checks an HTTP upstream and proves itself to it: a private CA, mTLS."""

    ca_bundle: File | None = None        # PEM CAs to trust instead of the system's
    client_cert: File | None = None      # PEM client certificate (mTLS), with client_key
    client_key: File | None = None
    verify: Bool = True                  # false: no certificate check at all (test setups only)
    together = (("client_key", "client_cert"), ("client_cert", "client_key"))

    @model_validator(mode="after")
    def _loads(self) -> "TlsConfig":
        # Files that exist must also load, so that check-config (not the first request) says so;
        # each problem under its own key.
        problems = pem_problems(self.ca_bundle, self.client_cert, self.client_key)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("pem", message), loc=(key,), input=None)
                for key, message in problems])
        return self


@dataclass(frozen=True, kw_only=True, config=SECTION)
class HttpProviderConfig(ProviderConfig):
    """The types whose upstream is an HTTP API (``openai``, ``azure``, ``groq``, ``anthropic``)."""

    api_base: Url                        # required unless the type's model gives a default
    api_key: Str = field(repr=False)
    headers: StrMap = field(default_factory=dict, repr=False)   # may carry credentials
    proxy: Proxy | None = field(default=None, repr=False)       # http://[user:pass@]host:port, or none
    tls: TlsConfig = field(default_factory=TlsConfig)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class OpenAIConfig(HttpProviderConfig):
    type: Literal["openai"] = "openai"
    api_base: Url = OPENAI_API_BASE
    organization: Str | None = None
    project: Str | None = None


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AzureConfig(HttpProviderConfig):
    type: Literal["azure"] = "azure"
    api_version: Str
    deployments: StrMap = field(default_factory=dict)   # model → deployment


@dataclass(frozen=True, kw_only=True, config=SECTION)
class GroqConfig(HttpProviderConfig):
    type: Literal["groq"] = "groq"
    api_base: Url = GROQ_API_BASE
    max_file_size: Size | None = GROQ_MAX_FILE_SIZE


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AnthropicConfig(HttpProviderConfig):
    type: Literal["anthropic"] = "anthropic"
    api_base: Url = ANTHROPIC_API_BASE
    max_file_size: Size | None = ANTHROPIC_MAX_FILE_SIZE
    anthropic_version: Str = "2023-06-01"
    anthropic_beta: Str = ANTHROPIC_FILES_BETA
    # Batch files are kept on the gateway's disk (Message Batches take requests inline).
    path: Annotated[str, data_path("anthropic-batches")] = Field(default=None, validate_default=True)
    model: Str | None = None             # default model of translated batch rows

    @property
    def disk_path(self) -> str | None:
        return self.path


# --------------------------------------------------------------------------- the gateway's disk


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LocalConfig(ProviderConfig):
    type: Literal["local"] = "local"
    path: Annotated[str, data_path("files")] = Field(default=None, validate_default=True)
    shared_filesystem: Bool = False      # `path` is a filesystem every replica mounts

    @property
    def disk_path(self) -> str | None:
        return self.path


# --------------------------------------------------------------------------- buckets


@dataclass(frozen=True, kw_only=True, config=SECTION)
class BucketConfig(ProviderConfig):
    bucket: Str
    prefix: Str = ""
    endpoint_url: Url | None = None      # an S3-compatible store, an emulator
    upload_chunk_size: Size | None = None   # S3 part size; GCS resumable chunk


@dataclass(frozen=True, kw_only=True, config=SECTION)
class S3KeysConfig(BucketConfig):
    """``s3`` and ``bedrock``: a bucket of S3's API."""

    aws_access_key_id: Str | None = None         # with aws_secret_access_key; else the default AWS chain
    aws_secret_access_key: Str | None = field(default=None, repr=False)
    together = (("aws_access_key_id", "aws_secret_access_key"), ("aws_secret_access_key", "aws_access_key_id"))


@dataclass(frozen=True, kw_only=True, config=SECTION)
class S3Config(S3KeysConfig):
    type: Literal["s3"] = "s3"
    region: Str = "us-east-1"


@dataclass(frozen=True, kw_only=True, config=SECTION)
class BedrockConfig(S3KeysConfig):
    """Not an S3Config: a key redeclared without a default (``region``) would keep the parent's."""

    type: Literal["bedrock"] = "bedrock"
    region: Str
    model: Str | None = None
    batch_role_arn: RoleArn | None = None     # the service role Bedrock batch jobs run as
    batch_endpoint_url: Url | None = None     # the Bedrock control plane (a fake); else AWS's regional one
    runtime_endpoint_url: Url | None = None   # the bedrock-runtime API (Converse); an emulator


@dataclass(frozen=True, kw_only=True, config=SECTION)
class GcsBucketConfig(BucketConfig):
    """``gcs`` and ``vertex``: a bucket of GCS's API (each type its own ``type`` literal)."""

    service_file: Str | None = None      # else the default credentials


@dataclass(frozen=True, kw_only=True, config=SECTION)
class GcsConfig(GcsBucketConfig):
    type: Literal["gcs"] = "gcs"


@dataclass(frozen=True, kw_only=True, config=SECTION)
class VertexConfig(GcsBucketConfig):
    type: Literal["vertex"] = "vertex"
    project_id: Str
    region: Str = "us-central1"
    model: Str | None = None
    # The Vertex AI API, of batch jobs and of the Responses bridge alike (a fake, a private
    # endpoint); else the region's host, {region}-aiplatform.googleapis.com.
    api_endpoint: Url | None = None
    renamed = (("batch_endpoint_url", "api_endpoint"),)   # its name for batch jobs until both were one key


# --------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class ProviderType:
    config: type[ProviderConfig]
    implementation: str                  # "module:Class" under proxy.providers

    @property
    def name(self) -> str:
        return str(self.config.type)     # the model's default of its `type` key

    def provider_class(self) -> type[Provider]:
        from .base import Provider

        module, _, name = self.implementation.partition(":")
        cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise TypeError(f"{self.implementation} is not a Provider class")
        return cls


PROVIDER_TYPES: dict[str, ProviderType] = {t.name: t for t in (
    ProviderType(OpenAIConfig, "openai:OpenAIProvider"),
    ProviderType(AzureConfig, "azure:AzureProvider"),
    ProviderType(GroqConfig, "groq:GroqProvider"),
    ProviderType(AnthropicConfig, "anthropic:AnthropicProvider"),
    ProviderType(LocalConfig, "local:LocalProvider"),
    ProviderType(BedrockConfig, "bedrock:BedrockProvider"),
    ProviderType(VertexConfig, "vertex:VertexProvider"),
    ProviderType(S3Config, "s3:S3Provider"),
    ProviderType(GcsConfig, "gcs:GCSProvider"),
)}

# Every key some type takes: one of them under another type is "not used by provider type X".
PROVIDER_KEYS = frozenset(f.name for t in PROVIDER_TYPES.values() for f in dataclasses.fields(t.config))
UNKNOWN_TYPE_TAG = "unknown type"


def _known_type(value: Any) -> str:
    raise ValueError(f"unknown provider type {to_str(value)!r} (valid types: {', '.join(PROVIDER_TYPES)})")


# A provider whose `type` is missing or unknown: its name is checked and its keys are known
# ones, but their values mean nothing without a type.
_OTHER_KEYS = sorted(PROVIDER_KEYS - {"name", "type"})
_UnknownTypeConfig = dataclass(frozen=True, kw_only=True, config=SECTION)(type("UnknownTypeConfig", (Keys,), {
    "__annotations__": {"name": ProviderName, "type": Annotated[str, resolved(_known_type)],
                        **{key: Any for key in _OTHER_KEYS}},
    **{key: None for key in _OTHER_KEYS},
}))


def type_tag(value: Any) -> str:
    """The registered type a ``providers[]`` item names, else UNKNOWN_TYPE_TAG."""
    kind = value.get("type") if isinstance(value, Mapping) else None
    return kind if isinstance(kind, str) and kind in PROVIDER_TYPES else UNKNOWN_TYPE_TAG


def _type_resolved(value: Any, info: ValidationInfo) -> Any:
    """``type: os.environ/NAME`` chooses the type by the variable's value."""
    if isinstance(value, Mapping) and isinstance(value.get("type"), str) and value["type"].startswith(ENV_PREFIX):
        try:
            return {**value, "type": resolve_env(value["type"], info)}
        except ValueError:
            return value        # the unknown-type model reports the variable
    return value


# One item of ``providers[]``: the union of the registered models, discriminated on ``type``.
# Errors have the tag as the first element of their location. Built from the registry at run
# time, so it is a value for pydantic (``TypeAdapter``), not an annotation a checker could read.
AnyProviderConfig: object = Annotated[
    Union[tuple(Annotated[t.config, Tag(name)] for name, t in PROVIDER_TYPES.items())
          + (Annotated[_UnknownTypeConfig, Tag(UNKNOWN_TYPE_TAG)],)],
    Discriminator(type_tag), BeforeValidator(_type_resolved)]
