"""proxy/config.py: YAML → typed, validated config."""
from __future__ import annotations

import dataclasses
import textwrap
import types

import pytest

from proxy.config import (
    DEFAULT_FILTERS,
    AuthConfig,
    AuthKey,
    Config,
    ConfigError,
    LimitsConfig,
    ServerConfig,
    StoreConfig,
    TimeoutConfig,
    check_config_main,
    default_config,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from proxy.providers.configs import AnthropicConfig, AzureConfig, LocalConfig, S3Config, TlsConfig as TLSConfig

MiB = 1024**2

FULL_EXAMPLE = """\
server: {host: 0.0.0.0, port: 9000, workers: 4, base_path: /gateway/v1/, drain_timeout: 45s, chunk_size: 1MiB}
store: {url: "sqlite:///gw/os.environ-not-a-ref.db"}
auth:
  keys:
    - {key: os.environ/TEAM_A_KEY, tenant: team-a}
    - {key: os.environ/ADMIN_KEY, tenant: ops, admin: true}
limits: {max_file_size: 512MiB, max_batch_file_size: 200MiB, tenant_storage_quota: 100GB, max_batch_lines: 50000, max_json_body: 32MiB}
default_provider: local
providers:
  - {name: my-openai, type: openai, api_base: https://api.openai.com/v1, api_key: os.environ/OPENAI_API_KEY}
  - {name: my-azure,  type: azure,  api_base: https://res.openai.azure.com, api_key: os.environ/AZURE_API_KEY, api_version: "2024-10-21", deployments: {gpt-4o: my-gpt4o-deployment}}
  - {name: local,     type: local,  path: ./sluicegate-data/files}
  - name: my-bedrock
    type: bedrock
    bucket: batch-in
    region: us-east-1
    prefix: gw/
    endpoint_url: http://localhost:5000
    aws_access_key_id: os.environ/AWS_KEY_ID
    aws_secret_access_key: os.environ/AWS_SECRET
    timeouts: {connect: 500ms, read: 5m, total: 30}
    max_retries: 0
  - {name: my-vertex, type: vertex, bucket: gcs-in, project_id: proj-1, service_file: /secrets/sa.json}
  - {name: claude, type: anthropic, api_key: os.environ/ANTHROPIC_API_KEY, max_file_size: 500MB}
  - {name: groq, type: groq, api_key: os.environ/GROQ_API_KEY, headers: {X-Trace: os.environ/TRACE}}
filters: [auth, provider_route, size_limit, batch_jsonl, quota, access_log, metrics]
log_level: DEBUG
"""

ENV = {
    "TEAM_A_KEY": "sk-team-a",
    "ADMIN_KEY": "sk-admin",
    "OPENAI_API_KEY": "sk-openai-secret",
    "AZURE_API_KEY": "azure-secret",
    "AWS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET": "aws-secret-value",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "GROQ_API_KEY": "gsk-secret",
    "TRACE": "on",
}


def write(tmp_path, text: str) -> str:
    path = tmp_path / "sluicegate.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems_of(data: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return info.value.problems


def one_problem(data: dict, env: dict[str, str] | None = None) -> str:
    problems = problems_of(data, env)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- defaults


def test_default_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = default_config()
    data = tmp_path / "sluicegate-data"
    assert config.server == ServerConfig("127.0.0.1", 8080, 1, "/v1", 30.0, 256 * 1024, data_dir=str(data))
    assert config.server.orphan_upload_age == 3600.0
    assert parse_config({"server": {"orphan_upload_age": "5m"}}, env={}).server.orphan_upload_age == 300.0
    assert config.store == StoreConfig(f"sqlite:///{data}/sluicegate.db")
    assert config.auth == AuthConfig(())
    assert not config.auth.enabled
    assert config.limits == LimitsConfig(512 * MiB, 200 * MiB, 100 * 10**9, 50_000, 32 * MiB)
    assert config.default_provider == "local"
    assert config.providers == (LocalConfig(name="local", path=str(data / "files")),)
    assert config.filters == DEFAULT_FILTERS == (
        "auth", "provider_route", "size_limit", "batch_jsonl", "quota", "access_log", "metrics")
    assert config.log_level == "info"


def test_client_connection_bounds():
    s = default_config().server
    assert (s.header_timeout, s.body_idle_timeout, s.keepalive_timeout, s.max_connections) == (10.0, 60.0, 75.0, 10000)
    s = parse_config({"server": {"header_timeout": "500ms", "body_idle_timeout": "2m", "keepalive_timeout": 5,
                                 "max_connections": 64}}, env={}).server
    assert (s.header_timeout, s.body_idle_timeout, s.keepalive_timeout, s.max_connections) == (0.5, 120.0, 5.0, 64)
    assert default_config().server.body_min_rate == 1024
    assert parse_config({"server": {"body_min_rate": "10KiB"}}, env={}).server.body_min_rate == 10240


def test_no_path_empty_file_and_empty_dict_are_the_defaults(tmp_path):
    assert load_config(None) == default_config()
    assert load_config(write(tmp_path, ""), env={}) == default_config()
    assert load_config(write(tmp_path, "# only a comment\n"), env={}) == default_config()
    assert parse_config({}, env={}) == default_config()


def test_null_sections_and_empty_lists_mean_defaults():
    config = parse_config({"server": None, "auth": {"keys": []}, "providers": []}, env={})
    assert config == default_config()


def test_provider_defaults():
    timeouts = TimeoutConfig()
    assert (timeouts.connect, timeouts.read, timeouts.total) == (10.0, 600.0, None)
    # each type's keys are on its own model: AzureConfig has deployments, S3Config prefix, ...
    p = AzureConfig(name="x", api_base="https://r", api_key="k", api_version="v")
    assert (p.max_retries, p.deployments, p.headers, p.shared, p.timeouts) == (2, {}, {}, False, timeouts)
    assert S3Config(name="x", bucket="b").prefix == ""
    a = AnthropicConfig(name="x", api_key="k")
    assert (a.anthropic_version, a.anthropic_beta) == ("2023-06-01", "files-api-2025-04-14")


@pytest.mark.parametrize(
    "provider, field, expected",
    [
        ({"type": "openai", "api_key": "k"}, "api_base", "https://api.openai.com/v1"),
        ({"type": "groq", "api_key": "k"}, "api_base", "https://api.groq.com/openai/v1"),
        ({"type": "anthropic", "api_key": "k"}, "api_base", "https://api.anthropic.com"),
        ({"type": "vertex", "bucket": "b", "project_id": "p"}, "region", "us-central1"),
        ({"type": "s3", "bucket": "b"}, "region", "us-east-1"),
        ({"type": "gcs", "bucket": "b"}, "prefix", ""),
        ({"type": "local"}, "shared_filesystem", False),
    ],
)
def test_provider_type_defaults(provider, field, expected):
    config = parse_config({"providers": [{"name": "p", **provider}]}, env={})
    assert getattr(config.providers[0], field) == expected


def test_default_provider_is_local_when_present_else_the_first():
    with_local = parse_config({"providers": [{"name": "o", "type": "openai", "api_key": "k"},
                                             {"name": "local", "type": "local"}]}, env={})
    assert with_local.default_provider == "local"
    without_local = parse_config({"providers": [{"name": "o", "type": "openai", "api_key": "k"},
                                                {"name": "g", "type": "groq", "api_key": "k"}]}, env={})
    assert without_local.default_provider == "o"


def test_config_objects_are_frozen():
    config = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- full example


def test_full_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, FULL_EXAMPLE), env=ENV)
    assert isinstance(config, Config)
    assert config.server == ServerConfig("0.0.0.0", 9000, 4, "/gateway/v1", 45.0, MiB,
                                         data_dir=str(tmp_path / "sluicegate-data"))
    # explicit relative paths are relative to the working directory, made absolute at load
    assert config.store.url == f"sqlite:///{tmp_path}/gw/os.environ-not-a-ref.db"
    assert config.auth.enabled
    assert config.auth.keys == (AuthKey("sk-team-a", "team-a"), AuthKey("sk-admin", "ops", admin=True))
    assert config.limits == LimitsConfig(512 * MiB, 200 * MiB, 100 * 10**9, 50_000, 32 * MiB)
    assert config.default_provider == "local"
    assert [p.name for p in config.providers] == [
        "my-openai", "my-azure", "local", "my-bedrock", "my-vertex", "claude", "groq"]
    assert config.filters == DEFAULT_FILTERS
    assert config.log_level == "debug"

    assert config.provider("my-openai").api_key == "sk-openai-secret"
    azure = config.provider("my-azure")
    assert (azure.api_base, azure.api_key, azure.api_version) == (
        "https://res.openai.azure.com", "azure-secret", "2024-10-21")
    assert azure.deployments == {"gpt-4o": "my-gpt4o-deployment"}
    assert config.provider("local").path == str(tmp_path / "sluicegate-data" / "files")
    bedrock = config.provider("my-bedrock")
    assert (bedrock.bucket, bedrock.region, bedrock.prefix, bedrock.endpoint_url) == (
        "batch-in", "us-east-1", "gw/", "http://localhost:5000")
    assert (bedrock.aws_access_key_id, bedrock.aws_secret_access_key) == ("AKIAEXAMPLE", "aws-secret-value")
    assert bedrock.timeouts == TimeoutConfig(connect=0.5, read=300.0, total=30.0)
    assert bedrock.max_retries == 0
    vertex = config.provider("my-vertex")
    assert (vertex.bucket, vertex.project_id, vertex.region, vertex.service_file) == (
        "gcs-in", "proj-1", "us-central1", "/secrets/sa.json")
    assert config.provider("claude").max_file_size == 500 * 10**6
    assert config.provider("groq").headers == {"X-Trace": "on"}
    assert config.provider("nope") is None


def test_unquoted_date_stays_a_string(tmp_path):
    path = write(tmp_path, """\
        providers:
          - {name: az, type: azure, api_base: https://r.openai.azure.com, api_key: k, api_version: 2024-10-21}
        """)
    assert load_config(path, env={}).providers[0].api_version == "2024-10-21"


def test_urls_and_base_path_are_normalised():
    config = parse_config({
        "server": {"base_path": "/"},
        "providers": [{"name": "o", "type": "openai", "api_key": "k", "api_base": "http://fake:8000/v1/"}],
    }, env={})
    assert config.server.base_path == ""
    assert config.providers[0].api_base == "http://fake:8000/v1"


def test_blank_optional_value_means_default():
    config = parse_config({"providers": [{"name": "o", "type": "openai", "api_key": "k", "organization": "",
                                          "api_base": None}]}, env={})
    assert config.providers[0].organization is None
    assert config.providers[0].api_base == "https://api.openai.com/v1"


# --------------------------------------------------------------------------- server.data_dir


@pytest.mark.parametrize("data_dir", ["/srv/gw-data", "rel/data"])
def test_data_dir_is_the_base_of_the_default_paths(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    config = parse_config({"server": {"data_dir": data_dir},
                           "providers": [{"name": "local", "type": "local"},
                                         {"name": "claude", "type": "anthropic", "api_key": "k"}]}, env={})
    base = tmp_path / data_dir if not data_dir.startswith("/") else data_dir
    assert config.server.data_dir == str(base)
    assert config.store.url == f"sqlite:///{base}/sluicegate.db"
    assert config.provider("local").path == f"{base}/files"
    assert config.provider("claude").path == f"{base}/anthropic-batches"
    # without providers, the embedded local provider too
    assert parse_config({"server": {"data_dir": data_dir}}, env={}).providers[0].path == f"{base}/files"


def test_explicit_paths_do_not_move_with_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({"server": {"data_dir": "/srv/gw-data"}, "store": {"url": "sqlite:///db/gw.db"},
                           "providers": [{"name": "local", "type": "local", "path": "files"},
                                         {"name": "abs", "type": "local", "path": "/mnt/files"}]}, env={})
    assert config.store.url == f"sqlite:///{tmp_path}/db/gw.db"
    assert [p.path for p in config.providers] == [str(tmp_path / "files"), "/mnt/files"]
    assert parse_config({"store": {"url": "sqlite:///:memory:"}}, env={}).store.url == "sqlite:///:memory:"


def test_overrides_win_over_the_file_and_move_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "server: {port: 9000, host: 0.0.0.0, data_dir: from-file}\nlog_level: warning\n")
    config = load_config(path, env={}, overrides={"server.port": 9100, "server.data_dir": "/srv/d",
                                                  "log_level": "debug"})
    assert (config.server.port, config.server.host, config.log_level) == (9100, "0.0.0.0", "debug")
    assert config.store.url == "sqlite:////srv/d/sluicegate.db"
    assert load_config(None, env={}, overrides={"server.workers": 3}).server.workers == 3
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"log_level": "verbose"})
    assert info.value.problems == ["log_level: must be one of debug, info, warning, error, critical"]


def test_store_postgresql_url_and_pool():
    config = parse_config({"store": {"url": "os.environ/DB_URL", "pool_min": 0, "pool_max": 4,
                                     "statement_timeout": "2500ms"}},
                          env={"DB_URL": "postgres://gw:pw@db.internal:5432/gw"})
    assert config.store == StoreConfig("postgres://gw:pw@db.internal:5432/gw", pool_min=0, pool_max=4,
                                       statement_timeout=2.5)
    # Defaults; a PostgreSQL URL is taken as written (no path resolution).
    store = parse_config({"store": {"url": "postgresql://gw@db/gw"}}, env={}).store
    assert (store.url, store.pool_min, store.pool_max, store.statement_timeout) == ("postgresql://gw@db/gw", 1, 10, 10.0)


def test_store_masked_url():
    assert StoreConfig("postgresql://gw:hunter2@db:5432/gw").masked_url == "postgresql://gw:***@db:5432/gw"
    assert StoreConfig("sqlite:////data/gw.db").masked_url == "sqlite:////data/gw.db"


# --------------------------------------------------------------------------- environment references


def test_env_reference_set():
    config = parse_config({
        "store": {"url": "os.environ/DB_URL"},
        "server": {"chunk_size": "os.environ/CHUNK", "host": "os.environ/HOST"},
        "providers": [{"name": "o", "type": "openai", "api_key": "os.environ/OPENAI_API_KEY"}],
        "filters": ["os.environ/FIRST_FILTER"],
    }, env={"DB_URL": "sqlite:////var/lib/gw.db", "CHUNK": "64 KiB", "HOST": "::", "OPENAI_API_KEY": "sk-1",
            "FIRST_FILTER": "auth"})
    assert config.store.url == "sqlite:////var/lib/gw.db"
    assert config.server.chunk_size == 64 * 1024
    assert config.server.host == "::"
    assert config.providers[0].api_key == "sk-1"
    assert config.filters == ("auth",)


def test_env_reference_missing():
    data = {"providers": [{"name": "o", "type": "openai", "api_key": "os.environ/OPENAI_API_KEY"}]}
    assert one_problem(data) == "providers[0].api_key: environment variable OPENAI_API_KEY is not set"


def test_env_reference_empty_is_an_error_not_an_empty_string():
    data = {"auth": {"keys": [{"key": "os.environ/TEAM_A_KEY", "tenant": "a"}]}}
    assert one_problem(data, env={"TEAM_A_KEY": ""}) == "auth.keys[0].key: environment variable TEAM_A_KEY is empty"


def test_env_reference_in_maps_and_lists_reports_the_item_path():
    data = {
        "providers": [{"name": "a", "type": "azure", "api_base": "https://r", "api_key": "k", "api_version": "v",
                       "deployments": {"gpt-4o": "os.environ/DEPLOYMENT"}}],
        "filters": ["auth", "os.environ/OTHER"],
    }
    assert problems_of(data) == [
        "providers[0].deployments.gpt-4o: environment variable DEPLOYMENT is not set",
        "filters[1]: environment variable OTHER is not set",
    ]


def test_load_config_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICEGATE_TEST_KEY", "sk-from-env")
    path = write(tmp_path, "providers: [{name: o, type: openai, api_key: os.environ/SLUICEGATE_TEST_KEY}]\n")
    assert load_config(path).providers[0].api_key == "sk-from-env"


# --------------------------------------------------------------------------- sizes and durations


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0), (1024, 1024), ("1024", 1024), ("1B", 1),
        ("1KB", 1000), ("1MB", 10**6), ("1GB", 10**9), ("1TB", 10**12),
        ("1KiB", 1024), ("1MiB", 1024**2), ("1GiB", 1024**3), ("1TiB", 1024**4),
        ("512 MiB", 512 * MiB), (" 200MB ", 200 * 10**6), ("1.5GiB", 3 * 512 * MiB), ("100GB", 100 * 10**9),
    ],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["512mib", "1kb", "1 K", "MiB", "-1", -1, "1.5.2MB", "1  MiB", 1.5, True, None, "12 parsecs"])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError, match="must be a size"):
        parse_size(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        (30, 30.0), (0.25, 0.25), ("30", 30.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
        ("1h", 3600.0), ("1.5m", 90.0), ("250 ms", 0.25), (0, 0.0),
    ],
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["5M", "5 min", "s", "-1s", -1, float("inf"), float("nan"), True, None, "1d"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(value)


# --------------------------------------------------------------------------- errors, each with its key path


AZURE_OK = {"name": "az", "type": "azure", "api_base": "https://r.openai.azure.com", "api_key": "k", "api_version": "v"}


@pytest.mark.parametrize(
    "data, expected",
    [
        # server
        ({"server": {"port": "8080"}}, "server.port: must be an integer"),
        ({"server": {"port": True}}, "server.port: must be an integer"),
        ({"server": {"port": 0}}, "server.port: must be between 1 and 65535"),
        ({"server": {"port": 70000}}, "server.port: must be between 1 and 65535"),
        ({"server": {"workers": 0}}, "server.workers: must be at least 1"),
        ({"server": {"host": 127}}, "server.host: must be a string"),
        ({"server": {"base_path": "v1"}}, "server.base_path: must start with '/'"),
        ({"server": {"drain_timeout": "30 seconds"}},
         "server.drain_timeout: must be a duration such as 500ms, 30s or 5m, not '30 seconds'"),
        ({"server": {"chunk_size": 0}}, "server.chunk_size: must be greater than 0"),
        ({"server": {"header_timeout": 0}}, "server.header_timeout: must be greater than 0"),
        ({"server": {"body_idle_timeout": "0s"}}, "server.body_idle_timeout: must be greater than 0"),
        ({"server": {"keepalive_timeout": "soon"}},
         "server.keepalive_timeout: must be a duration such as 500ms, 30s or 5m, not 'soon'"),
        ({"server": {"max_connections": 0}}, "server.max_connections: must be at least 1"),
        ({"server": {"body_min_rate": 0}}, "server.body_min_rate: must be greater than 0"),
        ({"server": {"orphan_upload_age": 0}}, "server.orphan_upload_age: must be greater than 0"),
        ({"server": {"orphan_upload_age": "an hour"}},
         "server.orphan_upload_age: must be a duration such as 500ms, 30s or 5m, not 'an hour'"),
        ({"server": [1, 2]}, "server: must be a mapping"),
        # store
        ({"store": {"url": "mysql://h/db"}}, "store.url: must be a sqlite:/// or a postgresql:// (postgres://) URL"),
        ({"store": {"url": "postgresql://h/db", "pool_max": 0}}, "store.pool_max: must be at least 1"),
        ({"store": {"pool_min": -1}}, "store.pool_min: must be at least 0"),
        ({"store": {"pool_min": 11}}, "store.pool_min: must not exceed store.pool_max (10)"),
        ({"store": {"pool_min": 3, "pool_max": 2}}, "store.pool_min: must not exceed store.pool_max (2)"),
        ({"store": {"statement_timeout": 0}}, "store.statement_timeout: must be greater than 0"),
        ({"store": {"statement_timeout": "soon"}},
         "store.statement_timeout: must be a duration such as 500ms, 30s or 5m, not 'soon'"),
        # auth
        ({"auth": {"keys": {"key": "k"}}}, "auth.keys: must be a list"),
        ({"auth": {"keys": ["sk-1"]}}, "auth.keys[0]: must be a mapping"),
        ({"auth": {"keys": [{"tenant": "a"}]}}, "auth.keys[0].key: required"),
        ({"auth": {"keys": [{"key": "k"}]}}, "auth.keys[0].tenant: required"),
        ({"auth": {"keys": [{"key": "k", "tenant": "a", "admin": "yes"}]}}, "auth.keys[0].admin: must be true or false"),
        ({"auth": {"keys": [{"key": "k", "tenant": "a"}, {"key": "k", "tenant": "b"}]}},
         "auth.keys[1].key: same key as auth.keys[0].key"),
        # limits
        ({"limits": {"max_file_size": "512 mb"}},
         "limits.max_file_size: must be a size such as 512MiB or 200MB "
         "(units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), not '512 mb'"),
        ({"limits": {"tenant_storage_quota": 0}}, "limits.tenant_storage_quota: must be greater than 0"),
        ({"limits": {"max_batch_lines": 0}}, "limits.max_batch_lines: must be at least 1"),
        # top level
        ({"default_provider": "nope"}, "default_provider: no provider named 'nope' (configured: local)"),
        ({"log_level": "loud"}, "log_level: must be one of debug, info, warning, error, critical"),
        ({"filters": "auth"}, "filters: must be a list"),
        ({"filters": ["auth", "gzip"]},
         "filters[1]: unknown filter 'gzip' (valid filters: auth, provider_route, size_limit, batch_jsonl, "
         "quota, access_log, metrics)"),
        ({"filters": ["quota", "auth"]}, "filters[1]: auth must be the first filter"),
        ({"filters": ["auth", "quota", "quota"]}, "filters[2]: duplicate filter 'quota'"),
        ({"filters": ["auth", 3]}, "filters[1]: must be a string"),
        ({"auth": {"keys": [{"key": "k", "tenant": "a"}]}, "filters": ["quota"]},
         "filters: auth.keys are configured but the auth filter is not in the list"),
        # providers
        ({"providers": {"name": "x"}}, "providers: must be a list"),
        ({"providers": ["my-openai"]}, "providers[0]: must be a mapping"),
        ({"providers": [{"type": "local"}]}, "providers[0].name: required"),
        ({"providers": [{"name": "a/b", "type": "local"}]},
         "providers[0].name: may contain only letters, digits, '.', '_' and '-'"),
        ({"providers": [{"name": "x"}]}, "providers[0].type: required"),
        ({"providers": [{"name": "x", "type": "cohere"}]},
         "providers[0].type: unknown provider type 'cohere' "
         "(valid types: openai, azure, groq, anthropic, local, bedrock, vertex, s3, gcs)"),
        ({"providers": [{"name": "x", "type": "local"}, {"name": "x", "type": "local"}]},
         "providers[1].name: duplicate provider name 'x' (also providers[0])"),
        ({"providers": [{"name": "o", "type": "openai"}]}, "providers[0].api_key: required"),
        ({"providers": [{"name": "g", "type": "groq"}]}, "providers[0].api_key: required"),
        ({"providers": [{"name": "c", "type": "anthropic"}]}, "providers[0].api_key: required"),
        ({"providers": [{**AZURE_OK, "api_version": None}]}, "providers[0].api_version: required"),
        ({"providers": [{"name": "b", "type": "bedrock", "region": "us-east-1"}]}, "providers[0].bucket: required"),
        ({"providers": [{"name": "b", "type": "bedrock", "bucket": "x"}]}, "providers[0].region: required"),
        ({"providers": [{"name": "b", "type": "bedrock", "bucket": "x", "region": "r", "aws_access_key_id": "id"}]},
         "providers[0].aws_secret_access_key: required when aws_access_key_id is set"),
        ({"providers": [{"name": "v", "type": "vertex", "bucket": "x"}]}, "providers[0].project_id: required"),
        ({"providers": [{"name": "v", "type": "vertex", "project_id": "p"}]}, "providers[0].bucket: required"),
        ({"providers": [{"name": "s", "type": "s3", "region": "auto"}]}, "providers[0].bucket: required"),
        ({"providers": [{"name": "s", "type": "s3", "bucket": "x", "aws_secret_access_key": "k"}]},
         "providers[0].aws_access_key_id: required when aws_secret_access_key is set"),
        ({"providers": [{"name": "s", "type": "s3", "bucket": "x", "model": "m"}]},
         "providers[0].model: not used by provider type s3"),
        ({"providers": [{"name": "g", "type": "gcs"}]}, "providers[0].bucket: required"),
        ({"providers": [{"name": "g", "type": "gcs", "bucket": "x", "project_id": "p"}]},
         "providers[0].project_id: not used by provider type gcs"),
        ({"providers": [{"name": "g", "type": "gcs", "bucket": "x", "region": "us"}]},
         "providers[0].region: not used by provider type gcs"),
        ({"providers": [{"name": "l", "type": "local", "shared_filesystem": "yes"}]},
         "providers[0].shared_filesystem: must be true or false"),
        ({"providers": [{"name": "s", "type": "s3", "bucket": "x", "shared_filesystem": True}]},
         "providers[0].shared_filesystem: not used by provider type s3"),
        ({"providers": [{**AZURE_OK, "api_base": "res.openai.azure.com"}]},
         "providers[0].api_base: must be an http:// or https:// URL"),
        ({"providers": [{**AZURE_OK, "deployments": ["gpt-4o"]}]}, "providers[0].deployments: must be a mapping"),
        ({"providers": [{**AZURE_OK, "deployments": {"gpt-4o": 4}}]},
         "providers[0].deployments.gpt-4o: must be a string"),
        ({"providers": [{**AZURE_OK, "max_retries": -1}]}, "providers[0].max_retries: must be at least 0"),
        ({"providers": [{**AZURE_OK, "shared": "no"}]}, "providers[0].shared: must be true or false"),
        ({"providers": [{**AZURE_OK, "timeouts": {"read": 0}}]}, "providers[0].timeouts.read: must be greater than 0"),
        ({"providers": [{**AZURE_OK, "timeouts": {"total": "2 hours"}}]},
         "providers[0].timeouts.total: must be a duration such as 500ms, 30s or 5m, not '2 hours'"),
        ({"providers": [{**AZURE_OK, "timeouts": {"idle": "2m"}}]},
         "providers[0].timeouts.idle: removed: timeouts.read now bounds every gap between two reads, SSE events included"),
        ({"providers": [{**AZURE_OK, "proxy": "socks5://p:1080"}]},
         "providers[0].proxy: must be an http:// URL (or none), not 'socks5://p:1080'"),
        ({"providers": [{**AZURE_OK, "proxy": "ftp://user:secret@p:21"}]},
         "providers[0].proxy: must be an http:// URL (or none), not 'ftp://***@p:21'"),
        ({"providers": [{**AZURE_OK, "proxy": "http://p:3128/path"}]},
         "providers[0].proxy: must be scheme://[user:password@]host[:port] (no path)"),
        ({"providers": [{**AZURE_OK, "tls": {"ca_bundle": "/no/such/ca.pem"}}]},
         "providers[0].tls.ca_bundle: no such file: /no/such/ca.pem"),
        ({"providers": [{**AZURE_OK, "tls": {"verify": "maybe"}}]},
         "providers[0].tls.verify: must be true or false"),
        ({"providers": [{**AZURE_OK, "tls": {"ca": "x"}}]}, "providers[0].tls.ca: unknown key"),
        ({"providers": [{"name": "b", "type": "bedrock", "bucket": "b", "region": "r", "proxy": "http://p:1"}]},
         "providers[0].proxy: not used by provider type bedrock"),
        ({"providers": [{**AZURE_OK, "bucket": "b"}]}, "providers[0].bucket: not used by provider type azure"),
    ],
)
def test_error_paths(data, expected):
    assert one_problem(data) == expected


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config(["server"], env={})  # type: ignore[arg-type]
    assert info.value.problems == ["config: the top level must be a mapping of keys"]


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"server": {"prot": 8080}}, "server.prot: unknown key"),
        ({"sever": {}}, "sever: unknown key"),
        ({"store": {"path": "x"}}, "store.path: unknown key"),
        ({"auth": {"key": []}}, "auth.key: unknown key"),
        ({"auth": {"keys": [{"key": "k", "tenant": "t", "role": "admin"}]}}, "auth.keys[0].role: unknown key"),
        ({"limits": {"max_filesize": 1}}, "limits.max_filesize: unknown key"),
        ({"providers": [{"name": "l", "type": "local", "pth": "/x"}]}, "providers[0].pth: unknown key"),
        ({"providers": [{"name": "l", "type": "local", "timeouts": {"write": 1}}]},
         "providers[0].timeouts.write: unknown key"),
        ({"providers": [{"name": "x", "type": "nope", "colour": 1}]},
         "providers[0].colour: unknown key"),
    ],
)
def test_unknown_keys(data, expected):
    assert expected in problems_of(data)


def test_problems_are_collected_not_first_only():
    problems = problems_of({
        "server": {"prot": 1, "port": "x", "workers": 0},
        "providers": [{"name": "o", "type": "openai"}, {"name": "a", "type": "azure"}],
        "log_level": "loud",
    })
    assert problems == [
        "server.prot: unknown key",
        "server.port: must be an integer",
        "server.workers: must be at least 1",
        "providers[0].api_key: required",
        "providers[1].api_base: required",
        "providers[1].api_key: required",
        "providers[1].api_version: required",
        "log_level: must be one of debug, info, warning, error, critical",
    ]


def test_config_error_str_joins_problems():
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert error.problems == ["a: one", "b: two"]


def test_problem_messages_never_show_secrets():
    data = {"auth": {"keys": [{"key": "sk-secret-1", "tenant": "a"}, {"key": "sk-secret-1", "tenant": "b"}]}}
    assert "sk-secret-1" not in "\n".join(problems_of(data))


# --------------------------------------------------------------------------- YAML files


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = write(tmp_path, "server:\n  port: 8080\n  host: [oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: line 4, column 1: ")


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "server:\n  port: 8080\n  port: 9090\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}: line 3, column 3: duplicate key 'port'"]


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


# --------------------------------------------------------------------------- secrets in repr


def test_repr_hides_secrets(tmp_path):
    config = load_config(write(tmp_path, FULL_EXAMPLE), env=ENV)
    text = repr(config)
    for secret in ENV.values():
        if secret not in ("on", "AKIAEXAMPLE"):
            assert secret not in text, secret
    assert "api_key" not in repr(config.provider("my-openai"))
    assert "aws_secret_access_key" not in repr(config.provider("my-bedrock"))
    assert repr(AuthKey("sk-123", "t")) == "AuthKey(tenant='t', admin=False)"
    assert repr(StoreConfig("postgresql://gw:hunter2@db:5432/gw")) == (
        "StoreConfig(url='postgresql://gw:***@db:5432/gw', pool_min=1, pool_max=10, statement_timeout=10.0)")


# --------------------------------------------------------------------------- check-config


def test_check_config_main_ok(tmp_path, capsys, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert check_config_main(write(tmp_path, FULL_EXAMPLE)) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 7 providers (my-openai, my-azure, local, my-bedrock, my-vertex, claude, groq)\n"
    assert err == ""


def test_check_config_main_defaults(capsys):
    assert check_config_main(None) == 0
    assert capsys.readouterr().out == "OK: 1 provider (local)\n"


def test_check_config_main_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = write(tmp_path, """\
        server: {prot: 8080}
        providers:
          - {name: o, type: openai, api_key: os.environ/OPENAI_API_KEY}
        """)
    assert check_config_main(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("server.prot: unknown key\n"
                   "providers[0].api_key: environment variable OPENAI_API_KEY is not set\n")


def test_check_config_main_yaml_error(tmp_path, capsys):
    path = write(tmp_path, "server: {port: 8080\n")
    assert check_config_main(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: line 2, column 1: ")


# -- s3 / gcs: the operator's own bucket; local with a store shared by replicas ----------------


def test_s3_and_gcs_take_the_connection_keys_of_bedrock_and_vertex():
    config = parse_config({"providers": [
        {"name": "bytes", "type": "s3", "bucket": "b", "prefix": "p/", "region": "auto",
         "endpoint_url": "https://acct.r2.cloudflarestorage.com", "aws_access_key_id": "AKIA",
         "aws_secret_access_key": "os.environ/S3_SECRET", "upload_chunk_size": "8MiB"},
        {"name": "gbytes", "type": "gcs", "bucket": "g", "prefix": "q/", "service_file": "/sa.json",
         "upload_chunk_size": "16MiB"},
    ]}, env={"S3_SECRET": "s3-secret-value"})
    s3, gcs = config.providers
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint_url, s3.aws_access_key_id, s3.aws_secret_access_key,
            s3.upload_chunk_size) == ("b", "p/", "auto", "https://acct.r2.cloudflarestorage.com", "AKIA",
                                      "s3-secret-value", 8 * MiB)
    assert "s3-secret-value" not in repr(s3)
    assert (gcs.bucket, gcs.prefix, gcs.service_file, gcs.upload_chunk_size) == ("g", "q/", "/sa.json", 16 * MiB)


def _with_store(config: Config, url: str) -> Config:
    # A StoreConfig takes lowercase schemes only (as the store does); the warning reads only
    # `store.url`, and checks its scheme in any case.
    store = StoreConfig(url) if url.islower() else types.SimpleNamespace(url=url)
    return dataclasses.replace(config, store=store)


def test_local_files_with_a_postgresql_store_are_replica_only_unless_shared_filesystem():
    from proxy.providers.local import replica_only_providers

    config = parse_config({"providers": [
        {"name": "disk", "type": "local", "path": "/srv/files"},
        {"name": "nfs", "type": "local", "path": "/mnt/nfs/files", "shared_filesystem": True},
        {"name": "bytes", "type": "s3", "bucket": "b"},
    ]}, env={})
    assert replica_only_providers(config) == []  # SQLite: one host, nothing is shared
    for url in ("postgresql://u:p@db:5432/sg", "postgres://db/sg", "PostgreSQL://db/sg"):
        assert [p.name for p in replica_only_providers(_with_store(config, url))] == ["disk"], url


def test_start_up_warns_about_replica_only_local_files(caplog):
    from proxy.server import _log_where_data_goes

    config = _with_store(parse_config({"providers": [
        {"name": "disk", "type": "local", "path": "/srv/files"},
        {"name": "nfs", "type": "local", "path": "/mnt/nfs/files", "shared_filesystem": True},
    ]}, env={}), "postgresql://u:secret@db/sg")
    with caplog.at_level("INFO", logger="sluicegate"):
        _log_where_data_goes(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "provider disk" in warnings[0] and "/srv/files" in warnings[0], warnings
    assert "visible only to this replica" in warnings[0] and "shared_filesystem: true" in warnings[0]
    assert all("secret" not in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ egress: proxy and tls


def _openai(**keys):
    return {"providers": [{"name": "o", "type": "openai", "api_key": "k", **keys}]}


def test_tls_and_proxy_defaults():
    p = parse_config(_openai(), env={}).provider("o")
    assert (p.proxy, p.tls) == (None, TLSConfig())
    assert (p.tls.ca_bundle, p.tls.client_cert, p.tls.client_key, p.tls.verify) == (None, None, None, True)


def test_tls_files_and_proxy_are_read(tmp_path):
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("client.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    p = parse_config(_openai(proxy="http://u:p@proxy.corp:3128", tls={
        "ca_bundle": str(tmp_path / "ca.pem"), "client_cert": str(tmp_path / "c.pem"),
        "client_key": str(tmp_path / "k.pem"), "verify": False}), env={}).provider("o")
    assert p.proxy == "http://u:p@proxy.corp:3128"
    assert p.tls == TLSConfig(ca_bundle=str(tmp_path / "ca.pem"), client_cert=str(tmp_path / "c.pem"),
                              client_key=str(tmp_path / "k.pem"), verify=False)


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_proxy_none_disables_the_environment(value):
    assert parse_config(_openai(proxy=value), env={}).provider("o").proxy == "none"


@pytest.mark.parametrize("given,missing", [("client_cert", "client_key"), ("client_key", "client_cert")])
def test_client_cert_and_key_go_together(tmp_path, given, missing):
    (tmp_path / "f.pem").write_text("x")
    with pytest.raises(ConfigError) as e:
        parse_config(_openai(tls={given: str(tmp_path / "f.pem")}), env={})
    assert f"providers[0].tls.{missing}: required when {given} is set" in str(e.value)


def test_proxy_credentials_never_in_a_config_error():
    with pytest.raises(ConfigError) as e:
        parse_config(_openai(proxy="https://user:hunter2@p:1"), env={})
    assert "hunter2" not in str(e.value) and "user" not in str(e.value)


def test_tls_files_must_load(tmp_path):
    import trustme

    (tmp_path / "junk.pem").write_text("not a certificate\n")
    ca = trustme.CA()
    cert = ca.issue_cert("client.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    trustme.CA().issue_cert("other.example").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    with pytest.raises(ConfigError) as e:
        parse_config(_openai(tls={"ca_bundle": str(tmp_path / "junk.pem"), "client_cert": str(tmp_path / "c.pem"),
                                  "client_key": str(tmp_path / "other.key")}), env={})
    assert "providers[0].tls.ca_bundle: not a PEM bundle of CA certificates" in str(e.value)
    assert "providers[0].tls.client_cert: cannot load the certificate with client_key" in str(e.value)
