"""The one settings object of StreamFlow (env prefix ``STREAMFLOW_``).

Every path, URL and tunable lives here; code asks ``get_settings()`` (or is handed a
``Settings``) instead of reading the environment or hard-coding locations. Two variables
keep the names other tools give them: ``MLFLOW_TRACKING_URI`` (MLflow's own, wins over
``STREAMFLOW_MLFLOW_TRACKING_URI``) and ``REPORT_DIR`` (the course's, wins over
``STREAMFLOW_REPORT_DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore", populate_by_name=True)

    home: Path = Field(Path(".streamflow"), description="All local state lives below this directory.")
    database_url: str | None = Field(
        None,
        description="postgresql://user:pass@host:port/db. Unset: an embedded PostgreSQL under home/pgdata.",
    )
    db_sslmode: str = Field("disable", description="sslmode used by Feast's PostgreSQL stores.")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level of our key=value logs.")

    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "STREAMFLOW_MLFLOW_TRACKING_URI"),
        description="MLflow tracking + registry URI (MLFLOW_TRACKING_URI wins). Unset: sqlite under home.",
    )
    model_name: str = "streamflow_churn"
    model_alias: str = "production"
    random_seed: int = 42
    n_estimators: int = 300

    feast_project: str = "streamflow"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str | None = Field(None, description="URL the load generator and reports use for the API.")
    model_poll_seconds: float = Field(10.0, description="How often the API checks the production alias.")
    feature_poll_seconds: float = Field(2.0, description="How often the API checks the online store.")
    # Online store and how the API reads it -------------------------------------------------
    online_store: Literal["postgres", "redis"] = Field(
        "postgres",
        description="Feast's online store: PostgreSQL (the database's own tables, default) or Redis (redis_url).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis of the online store when online_store=redis (redis:// or rediss://).",
    )
    online_lookup: Literal["mirror", "direct"] = Field(
        "mirror",
        description="API: hold every user's online features in memory (mirror) or look them up in the online store "
        "per request (direct: one indexed query / one Redis round trip per request or batch).",
    )
    online_pool_size: int = Field(4, ge=1, le=64, description="API, direct lookups: connections to the online store.")
    online_lookup_timeout_seconds: float = Field(
        1.0, gt=0, description="API, direct lookups: timeout of one lookup (and of waiting for a pooled connection)."
    )
    feature_poll_timeout_seconds: float = Field(
        3.0, gt=0, description="API: statement and connect timeout of the online-store poll (the health check)."
    )
    feature_reload_timeout_seconds: float = Field(
        900.0, gt=0, description="API: statement timeout of the mirror's bulk read of the online store."
    )
    feature_reload_workers: int = Field(
        2, ge=1, le=4, description="API: connections reading the online store's views in parallel on the first load."
    )
    feature_reload_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="API: nice increment of the mirror's loader process on a reload (not the first load).",
    )
    feature_reload_work_mem: str = Field(
        "256MB", description="API: work_mem of the mirror's bulk-read session (PostgreSQL pivots the online tables)."
    )
    feature_reload_backoff_max_seconds: float = Field(
        300.0,
        gt=0,
        description="API: longest wait between two attempts of a failing mirror reload (exponential, jittered).",
    )
    feature_max_stale_seconds: float = Field(
        0.0,
        ge=0,
        description="API: /ready answers 503 when the mirror has served an older snapshot than the newest "
        "materialization for longer than this (0: never; staleness is reported, not fatal).",
    )

    prometheus_port: int = 9090
    prometheus_url: str | None = None
    pushgateway_port: int = 9091
    pushgateway_url: str | None = Field(None, description="Where drift metrics are pushed, if set.")
    repo_root: Path | None = Field(
        None, description="Checkout holding services/ (prometheus rules, dashboards); found automatically if unset."
    )

    report_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("REPORT_DIR", "STREAMFLOW_REPORT_DIR"),
        description="Where the Evidently reports go (the course's REPORT_DIR). Unset: home/reports/evidently.",
    )
    orchestrator: Literal["auto", "prefect", "none"] = Field(
        "auto",
        description="How `monitor` runs: through Prefect (falling back to a direct run when Prefect cannot start, "
        "auto), always through Prefect, or directly (none).",
    )
    prefect_startup_seconds: int = Field(60, ge=1, description="Wait this long for Prefect's local API server.")
    drift_threshold: float = 0.3
    promote_min_delta: float = Field(0.0, description="Candidate AUC must beat production by more than this.")
    min_auc: float = Field(
        0.70, ge=0.0, le=1.0, description="Retraining is triggered when the realized AUC of a month is below this."
    )
    max_auc_drop: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Retraining is triggered when the realized AUC (or, before labels, the CBPE estimate) is this "
        "far or further below the production model's validation AUC.",
    )

    # Monthly data path (ingest → publish) ----------------------------------------------
    ingest_max_file_bytes: int = Field(
        4 * 1024**3, gt=0, description="A month CSV larger than this is refused before it is read."
    )
    ingest_max_header_bytes: int = Field(
        64 * 1024, gt=0, description="A CSV header line longer than this is refused before the file is read."
    )
    ingest_max_columns: int = Field(256, gt=0, description="A CSV header with more columns is refused.")
    ingest_lock_timeout_seconds: float = Field(
        600.0, ge=0, description="How long an ingest waits for another one to finish before giving up (exit 2)."
    )
    materialize_writer: Literal["bulk", "feast"] = Field(
        "bulk",
        description="bulk: SQL writer of Feast's online tables, swapped in atomically; feast: Feast's own "
        "materialize (reference implementation, slow and not atomic).",
    )
    materialize_workers: int = Field(2, ge=1, le=8, description="Parallel connections filling the online tables.")
    materialize_lock_timeout_seconds: float = Field(
        600.0, ge=0, description="How long a materialization waits for another one (or for readers to swap)."
    )
    materialize_maintenance_work_mem: str = Field(
        "256MB", description="maintenance_work_mem of each connection building the online tables' indexes."
    )
    fault_pause_at: str | None = Field(
        None, description="Tests only: pause at this named fault point (see streamflow.faults)."
    )
    fault_pause_seconds: float = Field(60.0, description="Tests only: how long a fault point pauses.")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    # Derived locations -------------------------------------------------------------
    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def feast_repo_dir(self) -> Path:
        return self.home / "feast"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def evidently_dir(self) -> Path:
        return self.report_dir or self.reports_dir / "evidently"

    @property
    def run_dir(self) -> Path:
        """PID files and logs of background processes started by `streamflow up`."""
        return self.home / "run"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_prometheus_url(self) -> str:
        return self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}"


def get_settings() -> Settings:
    """The settings of this process's environment (read afresh: cheap, and never stale)."""
    return Settings()
