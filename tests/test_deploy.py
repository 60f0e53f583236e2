"""Static checks of deploy/: the Dockerfile, the Kubernetes manifests and the Helm chart.

Fast, no network, no docker, no helm. Every sluicegate config shipped in deploy/ (the image's
default config, the ConfigMaps' config.yaml, the chart's values) is validated with
``proxy.config.parse_config`` with a fake value for each ``os.environ/`` reference, and the
manifests are checked against the gateway's contracts: probe paths, ports, the drain budget,
the ingress limits, where the gateway writes.
"""
from __future__ import annotations

import configparser
import json
import re
import shlex
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml

import proxy.config as config_module
from proxy.config import ENV_PREFIX, Config, parse_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
CHART = DEPLOY / "helm" / "sluicegate"
CONFIG_MOUNT = "/etc/sluicegate"
# The gateway's own YAML reading (keeps dates as strings, rejects duplicate keys), when present.
_CONFIG_LOADER = getattr(config_module, "_YamlLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- helpers


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def env_refs(value: Any) -> set[str]:
    """Every NAME of an ``os.environ/NAME`` string anywhere in a parsed config."""
    if isinstance(value, str):
        return {value[len(ENV_PREFIX):]} if value.startswith(ENV_PREFIX) else set()
    if isinstance(value, dict):
        return set().union(*(env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value)) if value else set()
    return set()


def validate(data: Any) -> Config:
    """The parsed config, with a distinct fake value for every env reference (auth keys must
    differ from each other)."""
    env = {name: f"fake-{name.lower()}-value" for name in env_refs(data)}
    return parse_config(data, env=env)


def load_config_text(text: str) -> Any:
    return yaml.load(text, Loader=_CONFIG_LOADER)


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def console_scripts() -> dict[str, str]:
    raw = setup_cfg()["options.entry_points"]["console_scripts"]
    scripts = {}
    for line in raw.strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def nginx_size(value: str) -> int:
    """Bytes from an nginx size (``600m``, ``1g``, ``512k``, ``1024``)."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value.strip())
    assert m, f"not an nginx size: {value!r}"
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def arg_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def probe_target(probe: dict[str, Any]) -> tuple[str, Any]:
    """(path, port) a probe checks: httpGet, or the URL in an exec command."""
    if "httpGet" in probe:
        return probe["httpGet"]["path"], probe["httpGet"]["port"]
    command = " ".join(probe["exec"]["command"])
    m = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/]*)", command)
    assert m, f"exec probe without a loopback URL: {command}"
    return m.group(2), int(m.group(1))


def is_under(path: str, directory: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(directory))


def sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    return None if path == ":memory:" else path


# --------------------------------------------------------------------------- manifests model


class Gateway:
    """One sluicegate container in a workload, with everything the checks need."""

    def __init__(self, path: Path, docs: list[dict[str, Any]], workload: dict[str, Any],
                 container: dict[str, Any], sidecar: bool) -> None:
        self.path, self.docs, self.workload, self.container, self.sidecar = path, docs, workload, container, sidecar
        self.pod = workload["spec"]["template"]["spec"]
        self.args = [str(a) for a in container.get("args", [])]

    def __repr__(self) -> str:
        return f"{self.path.name}:{self.workload['metadata']['name']}/{self.container['name']}"

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name), None)

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.pod.get("volumes", []) if v["name"] == name)

    def mounts(self) -> list[dict[str, Any]]:
        return self.container.get("volumeMounts", [])

    @cached_property
    def config_data(self) -> Any:
        """The sluicegate config the container reads: --config, through its ConfigMap mount."""
        config_arg = arg_value(self.args, "--config")
        assert config_arg, f"{self}: no --config argument"
        mount = next((m for m in self.mounts() if is_under(config_arg, m["mountPath"])), None)
        assert mount, f"{self}: --config {config_arg} is not under a volume mount"
        volume = self.volume(mount["name"])
        assert "configMap" in volume, f"{self}: the config volume is not a ConfigMap"
        configmap = self.find("ConfigMap", volume["configMap"]["name"])
        assert configmap, f"{self}: ConfigMap {volume['configMap']['name']} is not in {self.path.name}"
        key = str(PurePosixPath(config_arg).relative_to(mount["mountPath"]))
        assert key in configmap["data"], f"{self}: ConfigMap has no key {key}"
        return load_config_text(configmap["data"][key])

    @cached_property
    def config(self) -> Config:
        return validate(self.config_data)

    @property
    def port(self) -> int:
        arg = arg_value(self.args, "--port")
        return int(arg) if arg is not None else self.config.server.port

    @property
    def host(self) -> str:
        return arg_value(self.args, "--host") or self.config.server.host

    def named_port(self, port: Any) -> int:
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port)

    def prestop_seconds(self) -> float:
        pre = self.container.get("lifecycle", {}).get("preStop")
        if not pre:
            return 0.0
        if "sleep" in pre:
            return float(pre["sleep"]["seconds"])
        command = pre["exec"]["command"]
        m = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", " ".join(command))
        assert m, f"{self}: unrecognised preStop {command}"
        return float(m.group(1))

    def env_names(self) -> set[str]:
        """Environment variables the container is given, with the Secret keys behind envFrom."""
        names = {e["name"] for e in self.container.get("env", [])}
        for source in self.container.get("envFrom", []):
            ref = source.get("secretRef") or source.get("configMapRef")
            kind = "Secret" if "secretRef" in source else "ConfigMap"
            obj = self.find(kind, ref["name"])
            assert obj, f"{self}: envFrom {kind} {ref['name']} is not in {self.path.name}"
            keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            names |= {source.get("prefix", "") + k for k in keys}
        return names


def gateways() -> Iterator[Gateway]:
    for path in K8S_FILES:
        docs = load_docs(path)
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            candidates = [(c, False) for c in pod.get("containers", [])]
            candidates += [(c, c.get("restartPolicy") == "Always") for c in pod.get("initContainers", [])]
            for container, native_sidecar in candidates:
                if "sluicegate" in container["image"]:
                    yield Gateway(path, docs, doc, container, native_sidecar)


try:
    GATEWAYS, _GATEWAYS_ERROR = list(gateways()), None
except Exception as exc:  # reported by test_every_manifest_runs_sluicegate, not as a collection error
    GATEWAYS, _GATEWAYS_ERROR = [], exc


# --------------------------------------------------------------------------- the manifests


def test_manifest_files_exist_and_parse() -> None:
    names = {p.name for p in K8S_FILES}
    assert {"gateway.yaml", "sidecar.yaml"} <= names
    for path in K8S_FILES:
        docs = load_docs(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: {doc}"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"
            assert "namespace" not in doc["metadata"], f"{path.name}: leave the namespace to kubectl -n"


def test_every_manifest_runs_sluicegate() -> None:
    if _GATEWAYS_ERROR is not None:
        raise _GATEWAYS_ERROR
    files = {g.path.name for g in GATEWAYS}
    assert {"gateway.yaml", "sidecar.yaml"} <= files
    assert any(g.sidecar for g in GATEWAYS if g.path.name == "sidecar.yaml")


@pytest.mark.parametrize("gw", GATEWAYS, ids=repr)
def test_embedded_config_is_valid_and_env_is_supplied(gw: Gateway) -> None:
    gw.config  # parse_config with fake env values; raises ConfigError listing every problem
    # Every env reference must reach the container.
    missing = env_refs(gw.config_data) - gw.env_names()
    assert not missing, f"{gw}: os.environ/ references with no env var in the pod: {sorted(missing)}"


@pytest.mark.parametrize("gw", GATEWAYS, ids=repr)
def test_probes(gw: Gateway) -> None:
    c = gw.container
    assert probe_target(c["readinessProbe"])[0] == "/readyz"
    assert probe_target(c["livenessProbe"])[0] == "/healthz"
    if "startupProbe" in c:
        assert probe_target(c["startupProbe"])[0] in ("/readyz", "/healthz")
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in c:
            assert gw.named_port(probe_target(c[kind])[1]) == gw.port, f"{gw}: {kind} checks another port"
            if "exec" in c[kind]:
                # exec probes are for a loopback-only listener; the kubelet's httpGet cannot reach it
                assert gw.host in ("127.0.0.1", "localhost"), f"{gw}: exec probe on a {gw.host} listener"


@pytest.mark.parametrize("gw", GATEWAYS, ids=repr)
def test_ports_and_listen_address(gw: Gateway) -> None:
    ports = gw.container.get("ports", [])
    if gw.sidecar:
        assert gw.host == "127.0.0.1", f"{gw}: a sidecar listens on loopback only"
        assert not ports, f"{gw}: a loopback-only sidecar exposes no container port"
        return
    assert gw.host == "0.0.0.0", f"{gw}: an ingress target must listen on all addresses"
    assert [p["containerPort"] for p in ports] == [gw.port], f"{gw}: containerPort != the gateway's port"
    assert gw.config.auth.enabled, f"{gw}: a gateway reachable from outside the pod needs auth.keys"
    labels = gw.workload["spec"]["template"]["metadata"]["labels"]
    services = [d for d in gw.docs if d["kind"] == "Service"
                and d["spec"]["selector"].items() <= labels.items()]
    assert services, f"{gw}: no Service selects the pods"
    for svc in services:
        for p in svc["spec"]["ports"]:
            assert gw.named_port(p.get("targetPort", p["port"])) == gw.port, f"{svc['metadata']['name']}: targetPort"


@pytest.mark.parametrize("gw", GATEWAYS, ids=repr)
def test_grace_period_covers_prestop_and_drain(gw: Gateway) -> None:
    grace = gw.pod.get("terminationGracePeriodSeconds", 30)
    drain = gw.config.server.drain_timeout
    # A drain that times out is followed by aiohttp's shutdown, which can wait drain_timeout
    # again (server.py passes it as shutdown_timeout): budget twice the drain.
    needed = gw.prestop_seconds() + 2 * drain
    assert grace > needed, f"{gw}: terminationGracePeriodSeconds {grace} <= preStop + 2 x drain_timeout = {needed}"
    if not gw.sidecar:
        # Keep serving while the endpoint is removed from the Service and the ingress.
        assert gw.prestop_seconds() >= 5, f"{gw}: needs a preStop sleep before the drain"


@pytest.mark.parametrize("gw", GATEWAYS, ids=repr)
def test_security_context_and_writable_paths(gw: Gateway) -> None:
    pod_sc = gw.pod.get("securityContext", {})
    sc = gw.container.get("securityContext", {})
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("readOnlyRootFilesystem") is True
    # With a read-only root, everything the gateway writes must be under a writable volume.
    writable = [m["mountPath"] for m in gw.mounts()
                if not m.get("readOnly") and {"emptyDir", "persistentVolumeClaim"} & set(gw.volume(m["name"]))]
    workdir = dockerfile_workdir()
    paths = [p for p in [sqlite_path(gw.config.store.url)] if p]
    paths += [p.path for p in gw.config.providers if p.type == "local" and p.path]
    assert paths
    for path in paths:
        absolute = path if path.startswith("/") else str(PurePosixPath(workdir) / path)
        assert any(is_under(absolute, w) for w in writable), f"{gw}: {absolute} is not on a writable volume {writable}"


def test_secret_templates_hold_no_secrets() -> None:
    for path in K8S_FILES:
        for doc in load_docs(path):
            if doc["kind"] != "Secret":
                continue
            assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "secret-template", \
                f"{path.name}: a shipped Secret must be labelled as the template (apply skips it with -l)"
            values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            assert values, f"{path.name}: empty Secret template"
            assert all(v in ("", None) for v in values.values()), f"{path.name}: the Secret template holds a value"


def test_sidecar_app_uses_the_loopback_gateway() -> None:
    (gw,) = [g for g in GATEWAYS if g.sidecar]
    apps = [c for c in gw.pod["containers"] if "sluicegate" not in c["image"]]
    assert apps
    base = f"http://127.0.0.1:{gw.port}{gw.config.server.base_path or '/v1'}"
    for app in apps:
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        assert env.get("OPENAI_BASE_URL") == base
        assert env.get("OPENAI_API_KEY"), "the OpenAI SDK needs some key even with auth off"
        assert not app.get("envFrom"), "the provider keys stay in the sidecar"


def check_ingress_annotations(annotations: dict[str, str], config: Config, where: str) -> None:
    prefix = "nginx.ingress.kubernetes.io/"
    a = {k[len(prefix):]: str(v) for k, v in annotations.items() if k.startswith(prefix)}
    body = nginx_size(a["proxy-body-size"])
    # The gateway allows up to 1 MiB of form fields beyond the file limit.
    largest = max([config.limits.max_file_size] + [p.max_file_size or 0 for p in config.providers])
    assert body >= largest + 1024**2, f"{where}: proxy-body-size {a['proxy-body-size']} < max_file_size + 1MiB"
    assert a["proxy-request-buffering"] == "off", where
    assert a["proxy-buffering"] == "off", where
    slowest = max(p.timeouts.read for p in config.providers if p.type != "local") if any(
        p.type != "local" for p in config.providers) else 60
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(a[key]) > slowest, f"{where}: {key} {a[key]} <= the providers' read timeout {slowest}"


def test_ingress() -> None:
    path = DEPLOY / "k8s" / "gateway.yaml"
    docs = load_docs(path)
    (gw,) = [g for g in GATEWAYS if g.path == path]
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    check_ingress_annotations(ingress["metadata"]["annotations"], gw.config, "gateway.yaml Ingress")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    api_prefixes = {"/v1", gw.config.server.base_path or "/v1"}
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            # Only the API is public: /healthz, /readyz and /metrics stay in the cluster.
            assert p["path"] in api_prefixes, f"Ingress exposes {p['path']}"
            backend = p["backend"]["service"]
            svc = services[backend["name"]]
            port = backend["port"]
            assert any(sp.get("name") == port.get("name") or sp["port"] == port.get("number")
                       for sp in svc["spec"]["ports"]), f"Ingress port {port} is not a port of {svc['metadata']['name']}"


def test_pod_disruption_budget_matches_the_gateway() -> None:
    docs = load_docs(DEPLOY / "k8s" / "gateway.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


# --------------------------------------------------------------------------- the Dockerfile


def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def last(instruction: str) -> str:
    values = [v for k, v in dockerfile_instructions() if k == instruction]
    assert values, f"no {instruction} in the Dockerfile"
    return values[-1]


def dockerfile_workdir() -> str:
    return last("WORKDIR")


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    entrypoint = json.loads(last("ENTRYPOINT"))
    scripts = console_scripts()
    assert entrypoint == ["sluicegate"]
    assert entrypoint[0] in scripts
    module, _, func = scripts[entrypoint[0]].partition(":")
    imported = __import__(module, fromlist=[func])
    assert callable(getattr(imported, func))
    assert json.loads(last("CMD")) == ["--config", f"{CONFIG_MOUNT}/config.yaml", "--host", "0.0.0.0"]


def test_dockerfile_runtime_settings() -> None:
    instructions = dockerfile_instructions()
    args = dict(v.partition("=")[::2] for k, v in instructions if k == "ARG" and "=" in v)
    froms = [v.split()[0] for k, v in instructions if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    resolved = {re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), f) for f in froms}
    assert resolved == {"python:3.11-slim"}
    assert last("EXPOSE").split() == ["8080"]
    assert last("STOPSIGNAL") == "SIGTERM"
    assert last("WORKDIR") == "/data"
    assert json.loads(last("VOLUME")) == ["/data"]
    user = last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER (runAsNonRoot can verify only a uid)"
    for gw in GATEWAYS:
        sc = {**gw.pod.get("securityContext", {}), **gw.container.get("securityContext", {})}
        assert str(sc.get("runAsUser")) == user, f"{gw}: runAsUser differs from the image's USER"
    healthcheck = last("HEALTHCHECK")
    assert "urllib" in healthcheck and "/healthz" in healthcheck
    assert any(k == "RUN" and "pip install ." in v for k, v in instructions)


def test_dockerfile_copies_exist_and_pass_the_context_filter() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context filter is an allow-list"
    for k, v in dockerfile_instructions():
        if k != "COPY" or v.startswith("--from"):
            continue
        *sources, _dest = shlex.split(v)
        for src in sources:
            src = src.rstrip("/").removeprefix("./")
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert src in allowed, f"COPY {src}: excluded by deploy/Dockerfile.dockerignore"


def test_image_default_config_is_valid() -> None:
    config = validate(load_config_text((DEPLOY / "config.yaml").read_text()))
    assert config.server.port == 8080
    for path in [sqlite_path(config.store.url)] + [p.path for p in config.providers if p.type == "local"]:
        assert path and is_under(path, "/data"), path


def test_no_dockerignore_at_the_repository_root() -> None:
    # The context filter is deploy/Dockerfile.dockerignore; a root one would override it for
    # every other build from this context.
    assert not (ROOT / ".dockerignore").exists()


# --------------------------------------------------------------------------- the Helm chart


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "sluicegate"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", str(chart["version"]))
    assert str(chart["appVersion"]) == setup_cfg()["metadata"]["version"]
    for name in ("_helpers.tpl", "deployment.yaml", "service.yaml", "configmap.yaml", "secret.yaml",
                 "ingress.yaml", "NOTES.txt"):
        assert (CHART / "templates" / name).is_file(), name


def test_chart_values_config_is_valid_and_matches_the_manifest() -> None:
    values = chart_values()
    config = validate(values["config"])
    # Every env reference is a key of the chart-made Secret (or of an existingSecret you supply).
    assert env_refs(values["config"]) <= set(values["secrets"]["env"])
    assert all(v in ("", None) for v in values["secrets"]["env"].values()), "values.yaml holds a secret"
    # With default values the chart renders gateway.yaml's config.
    (gw,) = [g for g in GATEWAYS if g.path.name == "gateway.yaml"]
    assert values["config"] == gw.config_data
    assert values["replicaCount"] == gw.workload["spec"]["replicas"]
    assert config.server.port == gw.port == values["service"]["port"]


def test_chart_values_probes_drain_and_ingress() -> None:
    values = chart_values()
    config = validate(values["config"])
    assert values["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert values["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert values["terminationGracePeriodSeconds"] > values["preStopSleepSeconds"] + 2 * config.server.drain_timeout
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["ingress"]["className"] == "nginx"
    check_ingress_annotations(values["ingress"]["annotations"], config, "values.yaml ingress")
    (gw,) = [g for g in GATEWAYS if g.path.name == "gateway.yaml"]
    (ingress,) = [d for d in gw.docs if d["kind"] == "Ingress"]
    assert values["ingress"]["annotations"] == ingress["metadata"]["annotations"]
    assert values["terminationGracePeriodSeconds"] == gw.pod["terminationGracePeriodSeconds"]
    assert values["preStopSleepSeconds"] == gw.prestop_seconds()


def test_chart_templates_are_balanced_and_includes_are_defined() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(re.findall(r'define\s+"([^"]+)"', helpers))
    for tpl in (CHART / "templates").iterdir():
        text = tpl.read_text()
        assert text.count("{{") == text.count("}}"), f"{tpl.name}: unbalanced {{{{ }}}}"
        opened = len(re.findall(r"{{-?\s*(?:if|range|with|define)\b", text))
        closed = len(re.findall(r"{{-?\s*end\b", text))
        assert opened == closed, f"{tpl.name}: {opened} blocks opened, {closed} closed"
        for name in re.findall(r'include\s+"([^"]+)"', text):
            assert name in defined, f"{tpl.name}: include of undefined template {name!r}"


def test_durations_and_sizes_used_here_parse() -> None:
    # The helpers above rely on these units; keep them honest against the config module.
    assert parse_duration("30s") == 30.0
    assert parse_size("512MiB") == 512 * 1024**2
    assert nginx_size("600m") == 600 * 1024**2
