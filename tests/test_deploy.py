"""Static checks of deploy/: the Dockerfile, the Kubernetes manifests and the Helm chart.

Fast, no network, no docker, no helm. Every sluicegate config shipped in deploy/ (the image's
default config, the ConfigMaps' config.yaml, the chart's values and each values-*.yaml
overlay) is validated with ``proxy.config.parse_config`` with a fake value for each
``os.environ/`` reference (a PostgreSQL URL for ``store.url``), and the manifests are checked
against the gateway's contracts: probe paths, ports, the drain budget, the ingress limits,
where the gateway writes, and for the replicated layout the shape that makes replicas
interchangeable (a shared store from a Secret, no pod-owned volume, an autoscaler, a
disruption budget, spreading over nodes).
"""
from __future__ import annotations

import configparser
import copy
import json
import re
import shlex
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml

import proxy.config as config_module
from proxy.config import DEFAULT_DATA_DIR, ENV_PREFIX, Config, ServerConfig, parse_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
CHART = DEPLOY / "helm" / "sluicegate"
CONFIG_MOUNT = "/etc/sluicegate"
# The value a store.url reference stands for in these checks: the replicated layout reads it
# from the Secret.
FAKE_STORE_URL = "postgresql://sluicegate:fake-password@postgres.example:5432/sluicegate"
# Provider types whose bytes every replica sees (the operator's bucket).
SHARED_OBJECT_STORES = ("s3", "gcs")
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


def store_url_ref(data: Any) -> str | None:
    """NAME when the config's ``store.url`` is ``os.environ/NAME``."""
    url = ((data or {}).get("store") or {}).get("url") if isinstance(data, dict) else None
    return url[len(ENV_PREFIX):] if isinstance(url, str) and url.startswith(ENV_PREFIX) else None


def validate(data: Any) -> Config:
    """The parsed config, with a distinct fake value for every env reference (auth keys must
    differ from each other) and a PostgreSQL URL for a ``store.url`` reference."""
    env = {name: f"fake-{name.lower()}-value" for name in env_refs(data)}
    if (name := store_url_ref(data)) is not None:
        env[name] = FAKE_STORE_URL
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
    def drain_timeout(self) -> float:
        """server.drain_timeout as written (the loader's default when absent)."""
        raw = (self.config_data.get("server") or {}).get("drain_timeout")
        return ServerConfig.drain_timeout if raw is None else parse_duration(raw)

    @property
    def replicated(self) -> bool:
        """More than one replica, or an autoscaler that may make more."""
        return self.workload["spec"].get("replicas", 1) > 1 or self.autoscaler() is not None

    def autoscaler(self) -> dict[str, Any] | None:
        ref = {"apiVersion": "apps/v1", "kind": self.workload["kind"], "name": self.workload["metadata"]["name"]}
        return next((d for d in self.docs if d["kind"] == "HorizontalPodAutoscaler"
                     and d["spec"]["scaleTargetRef"] == ref), None)

    def selects_pods(self, selector: dict[str, Any]) -> bool:
        labels = self.workload["spec"]["template"]["metadata"]["labels"]
        return bool(selector) and selector.items() <= labels.items()

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
    drain = gw.drain_timeout
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
    # data_dir always (scratch, the defaults of every path; as written: the loader makes a
    # relative one absolute against the test's directory, the gateway against its WORKDIR);
    # the store and local files when on disk.
    paths = [(gw.config_data.get("server") or {}).get("data_dir") or DEFAULT_DATA_DIR]
    paths += [p for p in [sqlite_path(gw.config.store.url)] if p]
    paths += [p.path for p in gw.config.providers if p.type == "local" and p.path]
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


# --------------------------------------------------------------------------- replicated layout
#
# Replicas are interchangeable only when nothing the gateway keeps is on a pod: the store is a
# shared PostgreSQL (its URL, with the password, from a Secret), file bytes are in a bucket
# (s3/gcs) or upstream, and no pod owns a volume. These checks read the manifests as written,
# without the config loader.


def shared_object_stores(config_data: dict[str, Any]) -> list[str]:
    return [p["name"] for p in config_data.get("providers") or [] if p.get("type") in SHARED_OBJECT_STORES]


def pod_local_providers(config_data: dict[str, Any]) -> list[str]:
    """``local`` providers whose bytes only one pod sees (no shared_filesystem)."""
    return [p["name"] for p in config_data.get("providers") or []
            if p.get("type") == "local" and not p.get("shared_filesystem")]


def check_disruption_budget(spec: dict[str, Any], fewest_replicas: int, where: str) -> None:
    """One pod at a time may be evicted, and at least one stays (so a drain can proceed)."""
    if "maxUnavailable" in spec:
        assert spec["maxUnavailable"] == 1, f"{where}: maxUnavailable {spec['maxUnavailable']}"
    else:
        assert 1 <= spec["minAvailable"] <= fewest_replicas - 1, f"{where}: minAvailable {spec['minAvailable']}"


REPLICATED = [g for g in GATEWAYS if g.replicated]


def ingress_gateway() -> Gateway:
    (gw,) = [g for g in GATEWAYS if g.path.name == "gateway.yaml"]
    return gw


def test_gateway_manifest_runs_three_autoscaled_replicas() -> None:
    gw = ingress_gateway()
    spec = gw.workload["spec"]
    assert gw.workload["kind"] == "Deployment"
    assert spec["replicas"] >= 3
    hpa = gw.autoscaler()
    assert hpa, "no HorizontalPodAutoscaler targets the Deployment"
    assert hpa["apiVersion"] == "autoscaling/v2"
    h = hpa["spec"]
    assert 3 <= h["minReplicas"] <= spec["replicas"] <= h["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in h["metrics"]), "scale on CPU"
    # CPU utilisation is relative to the request: without one the autoscaler cannot act.
    assert gw.container["resources"]["requests"]["cpu"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("gw", REPLICATED, ids=repr)
def test_replicated_gateway_has_a_disruption_budget(gw: Gateway) -> None:
    pdbs = [d for d in gw.docs if d["kind"] == "PodDisruptionBudget"
            and gw.selects_pods(d["spec"]["selector"].get("matchLabels", {}))]
    assert len(pdbs) == 1, f"{gw}: {len(pdbs)} PodDisruptionBudgets select the pods"
    hpa = gw.autoscaler()
    fewest = hpa["spec"]["minReplicas"] if hpa else gw.workload["spec"]["replicas"]
    check_disruption_budget(pdbs[0]["spec"], fewest, repr(gw))


@pytest.mark.parametrize("gw", REPLICATED, ids=repr)
def test_replicated_gateway_shares_its_state(gw: Gateway) -> None:
    data = gw.config_data
    name = store_url_ref(data)
    assert name, f"{gw}: store.url must be os.environ/NAME (a PostgreSQL URL from a Secret)"
    from_secrets = {e["name"] for e in gw.container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for source in gw.container.get("envFrom", []):
        if "secretRef" in source:
            secret = gw.find("Secret", source["secretRef"]["name"])
            assert secret, f"{gw}: Secret {source['secretRef']['name']} is not in {gw.path.name}"
            keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
            from_secrets |= {source.get("prefix", "") + k for k in keys}
    assert name in from_secrets, f"{gw}: {name} (store.url) does not come from a Secret"
    assert shared_object_stores(data), f"{gw}: no {'/'.join(SHARED_OBJECT_STORES)} provider"
    assert not pod_local_providers(data), f"{gw}: local providers keep bytes on one pod"


@pytest.mark.parametrize("gw", REPLICATED, ids=repr)
def test_replicated_gateway_owns_no_volume(gw: Gateway) -> None:
    assert "volumeClaimTemplates" not in gw.workload["spec"], f"{gw}: a StatefulSet's per-pod volumes"
    assert not [d for d in gw.docs if d["kind"] == "PersistentVolumeClaim"], f"{gw}: a PVC in the replicated layout"
    for volume in gw.pod.get("volumes", []):
        assert "persistentVolumeClaim" not in volume, f"{gw}: volume {volume['name']} is a PVC"
    for mount in gw.mounts():
        volume = gw.volume(mount["name"])
        if not mount.get("readOnly"):
            assert "emptyDir" in volume, f"{gw}: writable {mount['mountPath']} is not an emptyDir"


@pytest.mark.parametrize("gw", REPLICATED, ids=repr)
def test_replicated_gateway_spreads_over_nodes(gw: Gateway) -> None:
    keys = {c["topologyKey"] for c in gw.pod.get("topologySpreadConstraints", [])
            if gw.selects_pods(c["labelSelector"]["matchLabels"])}
    anti = gw.pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = [term.get("podAffinityTerm", term) for kind in (
        "preferredDuringSchedulingIgnoredDuringExecution", "requiredDuringSchedulingIgnoredDuringExecution")
        for term in anti.get(kind, [])]
    anti_keys = {term["topologyKey"] for term in terms if gw.selects_pods(term["labelSelector"]["matchLabels"])}
    assert "kubernetes.io/hostname" in keys, f"{gw}: no topology spread over nodes"
    assert "kubernetes.io/hostname" in anti_keys, f"{gw}: no pod anti-affinity between replicas"


def test_sidecar_keeps_its_state_in_the_pod() -> None:
    # A sidecar is per pod: its store is SQLite on the pod's own emptyDir, next to its app.
    (gw,) = [g for g in GATEWAYS if g.sidecar]
    assert sqlite_path(gw.config.store.url)
    assert not gw.autoscaler()
    assert all("persistentVolumeClaim" not in v for v in gw.pod.get("volumes", []))


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


def helm_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``helm -f override.yaml`` over ``base``: maps merge key by key, anything else (lists
    too) replaces, and null deletes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


CHART_OVERLAYS = sorted(CHART.glob("values-*.yaml"))
# Every layout the chart documents: the default values, and each values-*.yaml over them.
CHART_VALUE_SETS = {"values.yaml": chart_values()} | {
    p.name: helm_merge(chart_values(), yaml.safe_load(p.read_text())) for p in CHART_OVERLAYS}


def template_text(name: str) -> str:
    return (CHART / "templates" / name).read_text()


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


def test_chart_defaults_match_the_manifest_structure() -> None:
    values = chart_values()
    gw = ingress_gateway()
    assert values["config"] == gw.config_data
    assert values["replicaCount"] == gw.workload["spec"]["replicas"]
    hpa = gw.autoscaler()["spec"]
    a = values["autoscaling"]
    assert (a["minReplicas"], a["maxReplicas"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert a["behavior"] == hpa["behavior"]
    (cpu,) = [m["resource"]["target"] for m in hpa["metrics"] if m["type"] == "Resource"]
    assert cpu == {"type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}
    (pdb,) = [d for d in gw.docs if d["kind"] == "PodDisruptionBudget"]
    assert values["podDisruptionBudget"]["maxUnavailable"] == pdb["spec"]["maxUnavailable"]
    assert values["resources"] == gw.container["resources"]
    assert set(values["secrets"]["env"]) == set(gw.find("Secret", "sluicegate-secrets")["stringData"])


def test_chart_ships_the_documented_layouts() -> None:
    assert set(CHART_VALUE_SETS) == {"values.yaml", "values-gcs.yaml", "values-sqlite.yaml"}
    layouts = {name: (v["store"]["mode"], sorted({p["type"] for p in v["config"]["providers"]}))
               for name, v in CHART_VALUE_SETS.items()}
    assert layouts == {
        "values.yaml": ("postgresql", ["openai", "s3"]),
        "values-gcs.yaml": ("postgresql", ["gcs", "openai"]),
        "values-sqlite.yaml": ("sqlite", ["local", "openai"]),
    }


@pytest.mark.parametrize("name", CHART_VALUE_SETS)
def test_chart_value_set_config_is_valid(name: str) -> None:
    values = CHART_VALUE_SETS[name]
    validate(values["config"])  # the gateway's loader, as `sluicegate check-config` runs it
    assert env_refs(values["config"]) <= set(values["secrets"]["env"]), f"{name}: a reference the Secret lacks"
    assert all(v in ("", None) for v in values["secrets"]["env"].values()), f"{name} holds a secret"


@pytest.mark.parametrize("name", CHART_VALUE_SETS)
def test_chart_value_set_fits_its_store_mode(name: str) -> None:
    # What templates/_helpers.tpl "sluicegate.validate" enforces at install, and the shape each
    # mode renders, checked on the shipped values (helm is not part of the test environment).
    values = CHART_VALUE_SETS[name]
    config = values["config"]
    url = config["store"]["url"]
    mode = values["store"]["mode"]
    if mode == "postgresql":
        ref = store_url_ref(config)
        assert ref and ref in values["secrets"]["env"], f"{name}: store.url must come from the Secret"
        assert shared_object_stores(config), f"{name}: no s3/gcs provider"
        assert not pod_local_providers(config), f"{name}: local providers keep bytes on one pod"
        a = values["autoscaling"]
        assert a["enabled"] and 3 <= a["minReplicas"] <= a["maxReplicas"], f"{name}: autoscaling"
        assert values["replicaCount"] >= 3
        assert values["resources"]["requests"]["cpu"], f"{name}: the autoscaler needs a CPU request"
        assert values["podDisruptionBudget"]["enabled"]
        check_disruption_budget(values["podDisruptionBudget"], a["minReplicas"], name)
        assert all("persistentVolumeClaim" not in v for v in values["extraVolumes"] or []), name
    else:
        assert mode == "sqlite", f"{name}: store.mode {mode!r}"
        path = sqlite_path(url)
        assert path and is_under(path, "/data"), f"{name}: the SQLite file must be on the /data volume"
        assert values["persistence"]["enabled"] and values["persistence"]["accessModes"] == ["ReadWriteOnce"]
        for p in config["providers"]:
            if p["type"] == "local":
                assert is_under(p["path"], "/data"), f"{name}: {p['name']} is not on the /data volume"
    drain = parse_duration(config["server"]["drain_timeout"])
    assert values["terminationGracePeriodSeconds"] > values["preStopSleepSeconds"] + 2 * drain, name


def test_chart_templates_follow_the_store_mode() -> None:
    # The chart cannot be rendered here; check that the switches are wired where they belong.
    helpers = template_text("_helpers.tpl")
    assert re.search(r'define "sluicegate\.replicated".*?eq \(toString \.Values\.store\.mode\) "postgresql"',
                     helpers, re.S)
    for name in ("hpa.yaml", "pdb.yaml"):
        assert template_text(name).startswith('{{- if and (include "sluicegate.replicated" .)'), name
    assert template_text("pvc.yaml").startswith('{{- if and (not (include "sluicegate.replicated" .))')
    deployment = template_text("deployment.yaml")
    assert deployment.startswith('{{- include "sluicegate.validate" . }}\n')
    # sqlite: exactly one replica, Recreate; postgresql: the autoscaler's count, RollingUpdate.
    assert re.search(r'{{- if not \$replicated }}\n(?:\s*#.*\n)?\s*replicas: 1\n'
                     r'\s*{{- else if not \.Values\.autoscaling\.enabled }}\n\s*replicas: {{ \.Values\.replicaCount }}\n',
                     deployment)
    assert re.search(r'{{- if not \$replicated }}\n(?:\s*#.*\n)?\s*type: Recreate\n', deployment)
    assert re.search(r'- name: data\n\s*{{- if \$pvc }}\n\s*persistentVolumeClaim:', deployment)
    assert "{{- $pvc := and (not $replicated) .Values.persistence.enabled }}" in deployment
    assert 'serviceAccountName: {{ include "sluicegate.serviceAccountName" . }}' in deployment


def test_chart_templates_reference_only_defined_values() -> None:
    values = chart_values()
    for tpl in (CHART / "templates").iterdir():
        for m in re.finditer(r"\.Values((?:\.\w+)+)", tpl.read_text()):
            node: Any = values
            for part in m.group(1).split(".")[1:]:
                if not isinstance(node, dict):
                    break
                assert part in node, f"{tpl.name}: .Values{m.group(1)} is not in values.yaml"
                node = node[part]


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
