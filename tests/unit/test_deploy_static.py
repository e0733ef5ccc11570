"""Static validation of the deployment-as-code: Grafana provisioning, dashboard, compose,
.env.example and the Dockerfile. No Docker engine and no Grafana run here, so everything that
can be checked without them is checked; the dashboard's queries are proven against a real
Prometheus in tests/integration/test_prometheus_stack.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow.core.settings import Settings
from streamflow.observability.panels import (
    DATASOURCE_UID,
    panel_queries,
    render_legend,
    substitute_template_vars,
)
from tests.helpers.repo import COMPOSE, DASHBOARD, DOCKERFILE, ENV_EXAMPLE, GRAFANA, REPO, iter_panels

DS = {"type": "prometheus", "uid": DATASOURCE_UID}

# bind-mount sources that legitimately do not exist in a fresh clone
CREATED_AT_RUNTIME = {"./reports"}
# written by the lead in a later step; checked as soon as it exists

VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(?::?[-?+])[^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The checked-in JSON Grafana provisions (tests/unit/test_dashboards.py: it is exactly the
    output of the Python definition whose queries `panel_queries()` lists)."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def volume_specs(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's short-syntax (or long-syntax) volumes."""
    specs = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            specs.append((str(vol["source"]), str(vol["target"])))
        else:
            source, target = str(vol).split(":")[:2]
            specs.append((source, target))
    return specs


# ------------------------------------------------------------------------- dashboard
def test_dashboard_is_valid_json_for_grafana_11(dashboard: dict[str, Any]) -> None:
    json.loads(DASHBOARD.read_text())  # strict JSON
    assert dashboard["uid"] == "streamflow-overview"
    assert dashboard["refresh"] == "10s"
    assert dashboard["time"] == {"from": "now-30m", "to": "now"}
    assert 39 <= dashboard["schemaVersion"] <= 41  # Grafana 11.x
    assert dashboard["id"] is None  # provisioned: Grafana assigns the id
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_panel_and_target_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    assert "${DS_" not in DASHBOARD.read_text()
    assert "__inputs" not in dashboard
    panels = list(iter_panels(dashboard))
    assert panels
    for panel in panels:
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS, (panel["title"], target["refId"])
            assert target["expr"].strip(), (panel["title"], target["refId"])
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_dashboard_queries_are_plain_promql(dashboard: dict[str, Any]) -> None:
    """No Grafana template variable: the report and the tests run the exprs verbatim."""
    for query in panel_queries():
        assert "$" not in query.expr, query
    for panel in iter_panels(dashboard):
        for target in panel["targets"]:
            assert "$" not in target["expr"], (panel["title"], target["refId"])


def test_dashboard_has_the_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(t["expr"] for p in iter_panels(dashboard) for t in p["targets"])
    assert exprs == "\n".join(q.expr for q in panel_queries())  # the JSON is the Python definition
    assert "rate(api_request_latency_seconds_sum[5m]) / rate(api_request_latency_seconds_count[5m])" in exprs
    for needle in [
        "job:api_requests:rate1m",  # RPS by endpoint
        "job:api_request_latency_seconds:p50_5m",
        "job:api_request_latency_seconds:p95_5m",
        "job:api_request_latency_seconds:p99_5m",
        "job:api_requests:rate5m",  # responses by status
        "api_predictions_total",
        "api_churn_probability_bucket",
        "api_requests_in_flight",
        "api_model_info",
        "api_feature_lookup_seconds",
        "api_model_inference_seconds",
        "streamflow_drift_share",
        "streamflow_drift_decision",
        "streamflow_feature_drift_score",
    ]:
        assert needle in exprs, needle
    assert any(q.expr == "up" for q in panel_queries())
    heatmaps = [p for p in iter_panels(dashboard) if p["type"] == "heatmap"]
    assert heatmaps and heatmaps[0]["targets"][0].get("format") == "heatmap"


def test_dashboard_recording_rules_exist() -> None:
    recorded = set()
    for path in (REPO / "services" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            recorded |= {r["record"] for r in group["rules"] if "record" in r}
    used = set(re.findall(r"\bjob:[a-z_:0-9]+", DASHBOARD.read_text()))
    assert used and used <= recorded


def test_template_substitution_and_legends() -> None:
    expr = "sum(rate(x[$__rate_interval])) / $__interval_ms + ${__range_s} + increase(y[$__range])"
    out = substitute_template_vars(expr, step_s=15, range_s=1800, scrape_interval_s=10)
    assert out == "sum(rate(x[40s])) / 15000 + 1800 + increase(y[1800s])"
    assert substitute_template_vars("rate(x[$__rate_interval])", step_s=60, range_s=3600) == "rate(x[70s])"
    assert render_legend("{{endpoint}} {{ status }}", {"endpoint": "/predict", "status": "200"}) == "/predict 200"
    assert render_legend("__auto", {"__name__": "up", "job": "api"}) == 'up{job="api"}'
    assert render_legend("", {}) == "value"


# ------------------------------------------------------------------------- grafana provisioning
def test_datasource_provisioning() -> None:
    data = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())
    assert data["apiVersion"] == 1
    (ds,) = data["datasources"]
    assert ds["uid"] == DATASOURCE_UID
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True
    assert ds["access"] == "proxy"


def test_dashboard_provider_path_matches_the_compose_mount(compose: dict[str, Any]) -> None:
    data = yaml.safe_load((GRAFANA / "dashboards" / "dashboards.yml").read_text())
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    container_path = provider["options"]["path"]
    mounts = {target: source for source, target in volume_specs(compose["services"]["grafana"])}
    assert mounts["/etc/grafana/provisioning"] == "./services/grafana/provisioning"
    relative = Path(container_path).relative_to("/etc/grafana/provisioning")
    host_dir = REPO / "services" / "grafana" / "provisioning" / relative
    assert (host_dir / "streamflow.json").is_file()
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{container_path}/streamflow.json"


# ------------------------------------------------------------------------- prometheus.yml
def test_shipped_prometheus_config() -> None:
    config = yaml.safe_load((REPO / "services" / "prometheus" / "prometheus.yml").read_text())
    assert config["global"] == {"scrape_interval": "10s", "evaluation_interval": "10s"}
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["api"]["metrics_path"] == "/metrics"
    assert jobs["api"]["static_configs"] == [{"targets": ["api:8000"]}]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"] == [{"targets": ["pushgateway:9091"]}]


# ------------------------------------------------------------------------- compose
BIND = "${STREAMFLOW_BIND_ADDRESS:-127.0.0.1}"  # loopback unless .env opens it (docs/security.md)
EXPECTED_SERVICES: dict[str, dict[str, Any]] = {
    "postgres": {"image": "postgres:16", "ports": [f"{BIND}:5432:5432"]},
    "mlflow": {"ports": [f"{BIND}:5000:5000"]},
    "prefect": {"ports": None, "expose": ["4200"]},  # internal network only
    "api": {"ports": [f"{BIND}:8000:8000"]},
    "init": {"ports": None},
    "pushgateway": {"image_prefix": "prom/pushgateway", "ports": None, "expose": ["9091"]},  # internal only
    "prometheus": {
        "image": "prom/prometheus:v2.55.1",
        "container_name": "streamflow-prometheus",
        "ports": [f"{BIND}:9090:9090"],
    },
    "grafana": {
        "image": "grafana/grafana:11.2.0",
        "container_name": "streamflow-grafana",
        "ports": [f"{BIND}:3000:3000"],
    },
}


def test_compose_services_images_ports_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == set(EXPECTED_SERVICES)
    for name, expected in EXPECTED_SERVICES.items():
        svc = services[name]
        assert svc.get("ports") == expected["ports"], name
        assert svc.get("expose") == expected.get("expose"), name
        if "image" in expected:
            assert svc["image"] == expected["image"], name
        if "image_prefix" in expected:
            assert svc["image"].startswith(expected["image_prefix"] + ":v"), name  # pinned tag
        if "container_name" in expected:
            assert svc["container_name"] == expected["container_name"], name
    for name in ("mlflow", "prefect", "api", "init"):  # one image, the repository's Dockerfile
        build = services[name]["build"]
        assert build == {"context": ".", "dockerfile": "services/docker/Dockerfile"}, name


def test_compose_volumes_and_mounts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    assert {"pgdata", "mlartifacts", "grafana-data"} <= declared
    for name, svc in services.items():
        for source, _target in volume_specs(svc):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: named volume {source} not declared"
                continue
            if source in CREATED_AT_RUNTIME:
                continue
            path = (REPO / source).resolve()
            assert path.exists(), f"{name}: bind-mount source {source} missing in the repository"
    assert ("pgdata", "/var/lib/postgresql/data") in volume_specs(services["postgres"])
    assert ("mlartifacts", "/mlartifacts") in volume_specs(services["mlflow"])
    assert ("grafana-data", "/var/lib/grafana") in volume_specs(services["grafana"])
    prefect = volume_specs(services["prefect"])
    assert ("./reports", "/reports") in prefect
    assert ("./services/prefect/monitor_flow.py", "/opt/prefect/flows/monitor_flow.py") in prefect
    prom = dict(volume_specs(services["prometheus"]))
    assert prom["./services/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # the rules mount is where prometheus.yml's rule_files glob looks
    assert prom["./services/prometheus/rules"] == "/etc/prometheus/rules"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_compose_api_prefect_mlflow_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api = services["api"]
    # the API starts once the one-shot bootstrap (seeds → ingest → train) has succeeded
    assert services["init"]["command"] == ["streamflow", "bootstrap"]
    assert api["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    # the same settings, plus the API's own optional admin token (off unless .env sets it)
    api_env = dict(api["environment"])
    assert api_env.pop("STREAMFLOW_ADMIN_TOKEN") == "${STREAMFLOW_ADMIN_TOKEN:-}"
    assert services["init"]["environment"] == api_env
    assert api["command"] == ["streamflow", "serve", "--host", "0.0.0.0", "--port", "8000"]
    env = api["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["STREAMFLOW_HOME"] == "/data"
    assert re.fullmatch(
        r"postgresql://\$\{APP_DB_USER:\?[^}]*\}:\$\{APP_DB_PASSWORD:\?[^}]*\}@postgres:5432/\$\{POSTGRES_DB:\?[^}]*\}",
        env["STREAMFLOW_DATABASE_URL"],
    )
    assert re.fullmatch(
        r"postgresql://\$\{FEAST_DB_USER:\?[^}]*\}:\$\{FEAST_DB_PASSWORD:\?[^}]*\}@postgres:5432/\$\{POSTGRES_DB:\?[^}]*\}",
        env["STREAMFLOW_FEAST_DATABASE_URL"],
    )
    assert "PREFECT_API_URL" in services["prefect"]["environment"]
    assert services["prefect"]["command"][:3] == ["prefect", "server", "start"]
    entrypoint = services["mlflow"]["entrypoint"][0]
    script = (REPO / "services" / "docker" / Path(entrypoint).name).read_text()
    assert "--serve-artifacts" in script
    assert '--artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}"' in script
    assert "--port" in script and "postgresql" in script
    # the backend URL (with the password) goes through the environment, not the command line
    assert "--backend-store-uri" not in script and "export MLFLOW_BACKEND_STORE_URI" in script
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_compose_depends_on_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "mlflow", "prefect", "api", "pushgateway", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
    for name in ("mlflow", "api", "prefect"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert services["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "api" in services["prometheus"]["depends_on"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def strings(node: Any) -> list[str]:
    """Every string (keys and values) of a parsed YAML document; comments are not included."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_every_compose_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    referenced = {var for text in strings(compose) for var in VAR_RE.findall(text)}
    example = env_example()
    assert referenced, "compose takes no credential from .env?"
    assert referenced <= set(example), referenced - set(example)
    assert set(example) <= referenced, set(example) - referenced  # nothing stale in the example


def test_credentials_only_from_env(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping syntax for environment"
        for key, value in env.items():
            if "PASSWORD" in key or key == "STREAMFLOW_DATABASE_URL":
                assert VAR_RE.search(str(value)), f"{name}.{key} is hard-coded"
    grafana_env = compose["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    example = env_example()
    assert example["GRAFANA_ADMIN_PASSWORD"] not in {"", "admin"}
    assert example["GRAFANA_ADMIN_USER"]
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_dockerfile_installs_the_package() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^COPY pyproject\.toml\b", text, re.M)
    assert re.search(r"^COPY src \./src$", text, re.M)
    assert re.search(r"^RUN pip install \.$", text, re.M)
    assert re.search(r"^COPY services \./services$", text, re.M)
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert "**/.venv" in ignore and ".env" in ignore
    for match in re.finditer(r"^COPY (\S+)", text, re.M):
        source = match.group(1).rstrip("*")
        assert (REPO / source).exists() or source.startswith("README"), source


# ------------------------------------------------------------------------- secure by default
def test_published_ports_listen_on_loopback_by_default(compose: dict[str, Any]) -> None:
    """Every published port is bound to STREAMFLOW_BIND_ADDRESS, 127.0.0.1 unless .env says otherwise;
    the Pushgateway (anyone who can push can mask the drift alert) and Prefect (anyone who reaches it
    can start a flow) are not published at all."""
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            assert isinstance(spec, str) and spec.startswith(BIND + ":"), f"{name}: {spec} is not bound to {BIND}"
            host_port, container_port = spec.removeprefix(BIND + ":").split(":")
            assert host_port == container_port, name
    for name in ("pushgateway", "prefect"):
        assert "ports" not in compose["services"][name], name
    assert env_example()["STREAMFLOW_BIND_ADDRESS"] == "127.0.0.1"


def test_prometheus_has_no_lifecycle_or_admin_api(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["prometheus"]["command"])
    assert "--web.enable-lifecycle" not in command  # POST /-/quit, /-/reload
    assert "--web.enable-admin-api" not in command  # TSDB deletion, snapshots


def test_api_health_is_readiness_and_shutdown_fits_the_grace_period(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "/ready" in probe and "/health'" not in probe  # an API that never becomes ready is unhealthy
    # uvicorn's graceful shutdown of `streamflow serve` + the prediction log's last flush
    defaults = Settings()
    graceful = defaults.api_graceful_shutdown_seconds + defaults.prediction_log_shutdown_seconds
    grace = re.fullmatch(r"(\d+)s", api["stop_grace_period"])
    assert grace and int(grace[1]) > graceful, "Docker would SIGKILL the API during its graceful shutdown"


def test_least_privilege_database_roles(compose: dict[str, Any]) -> None:
    """The superuser's password reaches only the postgres container; the application gets its own
    role and Feast's, MLflow only its own (services/postgres/10-streamflow-roles.sh creates them)."""
    services = compose["services"]
    for name, svc in services.items():
        env = svc.get("environment", {})
        if name != "postgres":
            assert "POSTGRES_PASSWORD" not in env and "POSTGRES_USER" not in env, name
            assert not any("${POSTGRES_PASSWORD" in str(v) for v in env.values()), name
    assert set(services["mlflow"]["environment"]) == {
        "POSTGRES_HOST",
        "MLFLOW_DB_USER",
        "MLFLOW_DB_PASSWORD",
        "MLFLOW_DB",
    }
    for name in ("api", "init", "prefect"):
        env = services[name]["environment"]
        assert "MLFLOW_DB_PASSWORD" not in env, name
        assert "${APP_DB_USER" in env["STREAMFLOW_DATABASE_URL"], name
    script = REPO / "services" / "postgres" / "10-streamflow-roles.sh"
    assert ("./services/postgres", "/docker-entrypoint-initdb.d") in volume_specs(services["postgres"])
    assert os.access(script, os.X_OK), "the image sources a non-executable script (its set -eu would leak)"
    text = script.read_text()
    for needle in ("NOSUPERUSER", "REVOKE ALL ON DATABASE", 'GRANT :"feast_user" TO :"app_user"', "\\getenv"):
        assert needle in text, needle
    example = env_example()
    assert example["POSTGRES_USER"] not in {example["APP_DB_USER"], example["FEAST_DB_USER"], example["MLFLOW_DB_USER"]}


PLACEHOLDER_GUARD = "refuse-placeholders.sh"


def guarded_variables(entrypoint: list[str]) -> set[str]:
    """The variables an entrypoint's placeholder guard checks (``VAR`` or ``VAR=NAME`` before ``--``)."""
    guard = next(i for i, part in enumerate(entrypoint) if part.endswith(PLACEHOLDER_GUARD))
    return {part.split("=", 1)[0] for part in entrypoint[guard + 1 : entrypoint.index("--")]}


# what each third-party service (or Prefect's server) itself reads; the app's URLs are Settings' job
SERVICE_SECRETS = {
    "postgres": {"POSTGRES_PASSWORD", "APP_DB_PASSWORD", "FEAST_DB_PASSWORD", "MLFLOW_DB_PASSWORD"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD"},
    "prefect": {"PREFECT_SERVER_API_AUTH_STRING"},
}


def test_every_secret_of_env_example_is_a_refused_placeholder(compose: dict[str, Any]) -> None:
    """Each secret of .env.example is a `change-me-…` value, and every service reading one refuses it at
    start: the app (Settings: the database URLs, PREFECT_API_AUTH_STRING), MLflow (its entrypoint),
    postgres, grafana and the Prefect server (the entrypoint guard, exit 2 naming the variable)."""
    example = env_example()
    secrets = {k for k in example if "PASSWORD" in k or k.endswith("AUTH_STRING")}
    assert secrets and all("change-me" in example[k] for k in secrets), secrets
    for name, expected in SERVICE_SECRETS.items():
        svc = compose["services"][name]
        assert guarded_variables(svc["entrypoint"]) == expected, name
        assert expected <= set(svc["environment"]), name
    assert compose["services"]["grafana"]["entrypoint"][-1] == "/run.sh"  # then the image's own entrypoint
    assert compose["services"]["postgres"]["entrypoint"][-1] == "docker-entrypoint.sh"
    mlflow_script = (REPO / "services" / "docker" / "mlflow-entrypoint.sh").read_text()
    assert f'/{PLACEHOLDER_GUARD}" MLFLOW_DB_PASSWORD -- true' in mlflow_script
    for name in ("postgres", "grafana"):  # third-party images: the guard is mounted
        assert ("./services/docker/refuse-placeholders.sh", "/streamflow/refuse-placeholders.sh") in volume_specs(
            compose["services"][name]
        )


def test_dockerfile_home_is_private_and_guard_installed() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"chmod 0700 /data\b", text)
    assert "COPY services/docker/refuse-placeholders.sh /usr/local/bin/refuse-placeholders.sh" in text
    # Prefect's server copies its UI at start: to the image user's home, not to root's site-packages
    user = re.search(r"useradd .*--uid \d+ (\w+)", text)[1]  # type: ignore[index]
    ui_dir = re.search(r"PREFECT_UI_STATIC_DIRECTORY=(\S+)", text)[1]  # type: ignore[index]
    assert ui_dir.startswith(f"/home/{user}/")
    assert re.search(r"^USER streamflow$", text, re.M) and user == "streamflow"
