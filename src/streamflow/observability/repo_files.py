"""Repository files the observability code reads: the shipped Prometheus config, its rules and the
Grafana dashboard. They are repository files (``services/``), not package data.

:func:`find_repo_root` looks, in order, at ``settings.repo_root``, at the parents of this file
(editable install: ``<repo>/src/streamflow/observability``) and at the current directory and its
parents, for the marker ``services/prometheus/prometheus.yml``. The Docker image copies
``services/`` into its working directory, so the cwd lookup works there too.
"""

from __future__ import annotations

from pathlib import Path

from streamflow.core.settings import Settings

SHIPPED_CONFIG = Path("services/prometheus/prometheus.yml")
RULES_DIR = Path("services/prometheus/rules")
DASHBOARD_JSON = Path("services/grafana/provisioning/dashboards/json/streamflow.json")


def find_repo_root(settings: Settings | None = None) -> Path:
    """Directory holding ``services/prometheus/prometheus.yml`` (see module docstring)."""
    candidates: list[Path] = []
    configured = settings.repo_root if settings is not None else None
    if configured:
        candidates.append(Path(configured).expanduser().resolve())
    here = Path(__file__).resolve()
    candidates.extend(here.parents)
    cwd = Path.cwd().resolve()
    candidates.extend([cwd, *cwd.parents])
    for candidate in candidates:
        if (candidate / SHIPPED_CONFIG).is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot locate the StreamFlow repository ({SHIPPED_CONFIG} not found above {here} nor {cwd}); "
        "run from the repository or install it in editable mode"
    )


def shipped_config_path(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / SHIPPED_CONFIG


def rules_dir(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / RULES_DIR


def dashboard_path(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / DASHBOARD_JSON
