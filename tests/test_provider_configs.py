"""proxy/providers/configs.py: one config model per provider type, chosen by ``type``."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from proxy.config import ConfigError, ProviderConfig, parse_config
from proxy.providers.configs import PROVIDER_TYPES, GroqConfig

MiB = 1024**2

# The keys each type cannot do without, in the order their problems are reported.
REQUIRED = {
    "openai": ["api_key"],
    "azure": ["api_base", "api_key", "api_version"],
    "groq": ["api_key"],
    "anthropic": ["api_key"],
    "local": [],
    "bedrock": ["bucket", "region"],
    "vertex": ["bucket", "project_id"],
    "s3": ["bucket"],
    "gcs": ["bucket"],
}
MINIMAL = {
    "openai": {"api_key": "k"},
    "azure": {"api_base": "https://r.openai.azure.com", "api_key": "k", "api_version": "2024-10-21"},
    "groq": {"api_key": "k"},
    "anthropic": {"api_key": "k"},
    "local": {},
    "bedrock": {"bucket": "b", "region": "us-east-1"},
    "vertex": {"bucket": "b", "project_id": "p"},
    "s3": {"bucket": "b"},
    "gcs": {"bucket": "b"},
}
# A key of some other type, which each type refuses by name.
FOREIGN_KEY = {"openai": "bucket", "azure": "organization", "groq": "deployments", "anthropic": "project",
               "local": "api_key", "bedrock": "service_file", "vertex": "aws_access_key_id", "s3": "model",
               "gcs": "region"}
HTTP_TYPES = ("openai", "azure", "groq", "anthropic")
VALID_TYPES = "openai, azure, groq, anthropic, local, bedrock, vertex, s3, gcs"


def provider(kind: str, **keys) -> dict:
    return {"name": "p", "type": kind, **MINIMAL[kind], **keys}


def problems(*providers: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": list(providers)}, env=env or {})
    return info.value.problems


def loaded(item: dict, env: dict[str, str] | None = None) -> ProviderConfig:
    return parse_config({"providers": [item]}, env=env or {}).providers[0]


def test_every_registered_type_is_covered_here():
    assert list(PROVIDER_TYPES) == list(REQUIRED) == list(MINIMAL) == list(FOREIGN_KEY)


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_each_type_loads_as_its_own_model(kind):
    config = loaded(provider(kind))
    assert type(config) is PROVIDER_TYPES[kind].config and isinstance(config, ProviderConfig)
    assert config.type == kind


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_each_type_reports_its_required_keys_in_order(kind):
    if not REQUIRED[kind]:
        assert loaded({"name": "p", "type": kind}).type == kind
        return
    assert problems({"name": "p", "type": kind}) == [f"providers[0].{key}: required" for key in REQUIRED[kind]]


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_unknown_key_of_each_type_is_refused_with_its_path(kind):
    assert problems(provider("local", name="ok"), provider(kind, colour="blue")) == [
        "providers[1].colour: unknown key"]


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_key_of_another_type_is_refused_naming_the_type(kind):
    assert problems(provider(kind, **{FOREIGN_KEY[kind]: "x"})) == [
        f"providers[0].{FOREIGN_KEY[kind]}: not used by provider type {kind}"]


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_keys_every_type_takes(kind):
    config = loaded(provider(kind, shared=True, max_retries=0, timeouts={"read": "5m"}, max_file_size="1MiB"))
    assert (config.shared, config.max_retries, config.timeouts.read, config.max_file_size) == (True, 0, 300.0, MiB)


@pytest.mark.parametrize(
    "kind, defaults",
    [
        ("openai", {"api_base": "https://api.openai.com/v1", "organization": None, "project": None, "headers": {},
                    "proxy": None, "max_file_size": None}),
        ("azure", {"deployments": {}, "headers": {}, "proxy": None}),
        ("groq", {"api_base": "https://api.groq.com/openai/v1", "max_file_size": 100 * 10**6, "headers": {}}),
        ("anthropic", {"api_base": "https://api.anthropic.com", "max_file_size": 500 * 10**6,
                       "anthropic_version": "2023-06-01", "anthropic_beta": "files-api-2025-04-14",
                       "path": "/srv/gw/anthropic-batches", "model": None}),
        ("local", {"path": "/srv/gw/files", "shared_filesystem": False}),
        ("bedrock", {"prefix": "", "endpoint_url": None, "aws_access_key_id": None, "aws_secret_access_key": None,
                     "model": None, "upload_chunk_size": None, "batch_role_arn": None, "batch_endpoint_url": None}),
        ("vertex", {"region": "us-central1", "prefix": "", "service_file": None, "model": None,
                    "api_endpoint": None}),
        ("s3", {"region": "us-east-1", "prefix": "", "endpoint_url": None, "upload_chunk_size": None}),
        ("gcs", {"prefix": "", "endpoint_url": None, "service_file": None}),
    ],
)
def test_defaults_of_each_type(kind, defaults):
    config = parse_config({"server": {"data_dir": "/srv/gw"}, "providers": [provider(kind)]}, env={}).providers[0]
    assert {key: getattr(config, key) for key in defaults} == defaults
    assert (config.shared, config.max_retries, config.timeouts.connect) == (False, 2, 10.0)


def test_type_missing_or_unknown_lists_the_types_and_still_checks_name_and_keys():
    assert problems({"name": "p"}) == ["providers[0].type: required"]
    assert problems({"name": "a/b", "type": "cohere", "bucket": "b", "colour": 1}) == [
        "providers[0].name: may contain only letters, digits, '.', '_' and '-'",
        f"providers[0].type: unknown provider type 'cohere' (valid types: {VALID_TYPES})",
        "providers[0].colour: unknown key",
    ]
    assert problems({"name": "p", "type": 3}) == ["providers[0].type: must be a string"]
    assert problems({"name": "p", "type": ["s3"]}) == ["providers[0].type: must be a string"]


def test_type_may_come_from_the_environment():
    assert loaded({"name": "p", "type": "os.environ/KIND", "bucket": "b"}, env={"KIND": "gcs"}).type == "gcs"
    assert problems({"name": "p", "type": "os.environ/KIND"}) == [
        "providers[0].type: environment variable KIND is not set"]


def test_a_provider_that_is_wrong_keeps_its_name_for_the_checks_across_providers():
    # its name counts: no "duplicate" miss, no "no provider named" on top of the real problem
    assert problems({"name": "o", "type": "openai"}, {"name": "o", "type": "local"}) == [
        "providers[0].api_key: required", "providers[1].name: duplicate provider name 'o' (also providers[0])"]
    with pytest.raises(ConfigError) as info:
        parse_config({"default_provider": "o", "providers": [{"name": "o", "type": "openai"}]}, env={})
    assert info.value.problems == ["providers[0].api_key: required"]


def test_blank_means_default_for_values_but_not_for_mappings_lists_or_unknown_keys():
    config = loaded(provider("s3", prefix="", region=None, endpoint_url=""))
    assert (config.prefix, config.region, config.endpoint_url) == ("", "us-east-1", None)
    assert problems(provider("s3", timeouts="")) == ["providers[0].timeouts: must be a mapping"]
    assert problems(provider("azure", deployments="")) == ["providers[0].deployments: must be a mapping"]
    assert problems(provider("s3", colour=None, model="")) == [
        "providers[0].colour: unknown key", "providers[0].model: not used by provider type s3"]
    with pytest.raises(ConfigError) as info:
        parse_config({"store": "", "limits": {"max_filesize": None}, "auth": {"keys": ""}, "log_level": ""}, env={})
    assert info.value.problems == ["store: must be a mapping", "auth.keys: must be a list",
                                   "limits.max_filesize: unknown key"]


def test_unknown_keys_come_first_in_their_own_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config({"auth": {"keys": [{"tenant": 1, "role": "x"}]}}, env={})
    assert info.value.problems == [
        "auth.keys[0].role: unknown key", "auth.keys[0].key: required", "auth.keys[0].tenant: must be a string"]


def test_keys_set_in_pairs_are_reported_with_the_other_problems():
    assert problems(provider("s3", aws_access_key_id="AKIA", prefix=3, timeouts={"read": 0})) == [
        "providers[0].timeouts.read: must be greater than 0",
        "providers[0].prefix: must be a string",
        "providers[0].aws_secret_access_key: required when aws_access_key_id is set",
    ]


def test_models_are_frozen_and_built_directly_with_their_defaults():
    groq = GroqConfig(name="g", api_key="k")
    assert (groq.type, groq.api_base, groq.max_file_size) == ("groq", "https://api.groq.com/openai/v1", 100 * 10**6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        groq.api_key = "other"  # type: ignore[misc]
    assert "api_key" not in repr(groq)


def test_the_groq_provider_reads_its_api_base_from_its_config():
    from proxy.providers.groq import GroqProvider

    assert GroqProvider(GroqConfig(name="g", api_key="k")).base == "https://api.groq.com/openai/v1"
    assert GroqProvider(GroqConfig(name="g", api_key="k", api_base="http://127.0.0.1:9/v1/")).base == (
        "http://127.0.0.1:9/v1")


def test_loading_a_config_imports_no_provider_adapter():
    # the registry names each adapter as "module:Class": its SDK loads only when a provider is created
    code = ("import sys; from proxy.config import parse_config; "
            f"parse_config({{'providers': {[provider(kind, name=kind) for kind in PROVIDER_TYPES]!r}}}, env={{}}); "
            "print(sorted(m for m in sys.modules if m.startswith('proxy.providers.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), timeout=60).stdout
    assert out.strip() == "['proxy.providers.base', 'proxy.providers.configs']"


# --------------------------------------------------------------------------- proxy and tls (HTTP types)


@pytest.fixture
def pem(tmp_path):
    import trustme

    cert, key, ca = (tmp_path / name for name in ("client.pem", "client.key", "ca.pem"))
    authority = trustme.CA()  # real PEM files: the config loads them (a junk file is refused)
    authority.cert_pem.write_to_path(str(ca))
    issued = authority.issue_cert("client.example")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return {"client_cert": str(cert), "client_key": str(key), "ca_bundle": str(ca)}


@pytest.mark.parametrize("kind", HTTP_TYPES)
def test_http_types_take_a_proxy_and_tls_settings(kind, pem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = loaded(provider(kind, proxy="http://user:secret@proxy.internal:3128",
                             tls={"ca_bundle": "ca.pem", "client_cert": pem["client_cert"],
                                  "client_key": pem["client_key"], "verify": True}))
    assert config.proxy == "http://user:secret@proxy.internal:3128"
    assert "secret" not in repr(config)
    assert (config.tls.ca_bundle, config.tls.client_cert, config.tls.client_key, config.tls.verify) == (
        pem["ca_bundle"], pem["client_cert"], pem["client_key"], True)   # relative: to the working directory
    assert loaded(provider(kind, tls={"verify": False})).tls.verify is False
    default = loaded(provider(kind))
    assert (default.proxy, default.tls.ca_bundle, default.tls.client_cert, default.tls.verify) == (
        None, None, None, True)


@pytest.mark.parametrize("kind", ["local", "bedrock", "vertex", "s3", "gcs"])
def test_other_types_refuse_proxy_and_tls(kind):
    assert problems(provider(kind, proxy="http://proxy:3128", tls={"verify": False})) == [
        f"providers[0].proxy: not used by provider type {kind}", f"providers[0].tls: not used by provider type {kind}"]


@pytest.mark.parametrize(
    "tls, expected",
    [
        ({"ca_bundle": "/nonexistent/ca.pem"}, "providers[0].tls.ca_bundle: no such file: /nonexistent/ca.pem"),
        ({"client_cert": "cert"}, "providers[0].tls.client_key: required when client_cert is set"),
        ({"client_key": "key"}, "providers[0].tls.client_cert: required when client_key is set"),
        ({"verify": "no"}, "providers[0].tls.verify: must be true or false"),
        ({"cert": "x"}, "providers[0].tls.cert: unknown key"),
        ("/etc/ssl/ca.pem", "providers[0].tls: must be a mapping"),
    ],
)
def test_tls_problems(tls, expected, pem):
    tls = {k: pem["client_cert"] if v == "cert" else pem["client_key"] if v == "key" else v
           for k, v in tls.items()} if isinstance(tls, dict) else tls
    assert problems(provider("azure", tls=tls)) == [expected]


def test_proxy_must_be_an_http_url():
    assert problems(provider("openai", proxy="proxy.internal:3128")) == [
        "providers[0].proxy: must be an http:// URL (or none), not 'proxy.internal:3128'"]
    assert loaded(provider("openai", proxy="os.environ/P"), env={"P": "http://p:8443"}).proxy == "http://p:8443"


def test_a_map_with_a_key_that_is_not_a_string_reports_its_value():
    # YAML `headers: {1: true}`: the key is read as "1" and its value checked (was "required")
    assert problems(provider("azure", headers={1: True, 2: "ok"})) == ["providers[0].headers.1: must be a string"]
    assert loaded(provider("azure", deployments={4: "d"})).deployments == {"4": "d"}


def test_bedrock_batch_keys():
    arn = "arn:aws:iam::123456789012:role/service-role/BedrockBatch"
    config = loaded(provider("bedrock", batch_role_arn=arn, batch_endpoint_url="http://127.0.0.1:9000"))
    assert (config.batch_role_arn, config.batch_endpoint_url) == (arn, "http://127.0.0.1:9000")
    assert loaded(provider("bedrock", batch_role_arn="os.environ/ROLE"), env={"ROLE": arn}).batch_role_arn == arn
    assert problems(provider("bedrock", batch_role_arn="BedrockBatch"),
                    provider("bedrock", name="q", batch_role_arn="arn:aws:iam::123456789012:user/me")) == [
        "providers[0].batch_role_arn: must be an IAM role ARN such as arn:aws:iam::123456789012:role/BedrockBatch",
        "providers[1].batch_role_arn: must be an IAM role ARN such as arn:aws:iam::123456789012:role/BedrockBatch",
    ]
    assert problems(provider("s3", batch_role_arn=arn)) == ["providers[0].batch_role_arn: not used by provider type s3"]


def test_vertex_api_endpoint_and_its_deprecated_name_batch_endpoint_url():
    # One key for the Vertex AI API (batch jobs and the Responses bridge); its old name for batch
    # jobs still works, as that key, with one warning.
    config = parse_config({"providers": [provider("vertex", api_endpoint="http://127.0.0.1:9001/")]}, env={})
    assert (config.providers[0].api_endpoint, config.warnings) == ("http://127.0.0.1:9001", ())
    deprecated = "providers[0].batch_endpoint_url: deprecated name of api_endpoint; set api_endpoint instead"
    for old, new in (("http://127.0.0.1:9001", None), ("os.environ/VX", None), ("http://127.0.0.1:9001/", ""),
                     ("http://127.0.0.1:9001/", "http://127.0.0.1:9001")):   # the same value twice is no conflict
        config = parse_config({"providers": [provider("vertex", batch_endpoint_url=old, api_endpoint=new)]},
                              env={"VX": "http://127.0.0.1:9001"})
        assert (config.providers[0].api_endpoint, config.warnings) == ("http://127.0.0.1:9001", (deprecated,))
        assert not hasattr(config.providers[0], "batch_endpoint_url")
    assert parse_config({"providers": [provider("vertex", batch_endpoint_url=None)]}, env={}).warnings == ()
    with pytest.raises(ConfigError) as info:    # what a load found is no key of the file
        parse_config({"warnings": [deprecated]}, env={})
    assert info.value.problems == ["warnings: unknown key"]
    # both, to different values: an error naming both keys
    assert problems(provider("vertex", batch_endpoint_url="http://127.0.0.1:9001", api_endpoint="http://127.0.0.1:9002"),
                    provider("vertex", name="q", batch_endpoint_url="vertex", api_endpoint="http://127.0.0.1:9002")) == [
        "providers[0].batch_endpoint_url: deprecated name of api_endpoint, which is also set, to another value: "
        "set only api_endpoint",
        "providers[1].batch_endpoint_url: deprecated name of api_endpoint, which is also set, to another value: "
        "set only api_endpoint",
    ]
    # a wrong value under the old name is reported under the name it was given as
    assert problems(provider("vertex", batch_endpoint_url="vertex")) == [
        "providers[0].batch_endpoint_url: must be an http:// or https:// URL"]
    # bedrock's batch_endpoint_url (the Bedrock control plane) is its own key, not deprecated
    config = parse_config({"providers": [provider("bedrock", batch_endpoint_url="http://127.0.0.1:9000")]}, env={})
    assert (config.providers[0].batch_endpoint_url, config.warnings) == ("http://127.0.0.1:9000", ())
    assert problems(provider("gcs", batch_endpoint_url="http://127.0.0.1:9000")) == [
        "providers[0].batch_endpoint_url: not used by provider type gcs"]
