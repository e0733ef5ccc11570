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
    model_poll_seconds: float = Field(
        10.0, gt=0, description="How often the API checks the deployment record (model_deployments)."
    )
    model_db_timeout_seconds: float = Field(
        5.0, gt=0, description="API: connect and statement timeout of the deployment poll."
    )
    model_fetch_timeout_seconds: float = Field(
        60.0, gt=0, description="API: statement timeout of reading a new deployment's ONNX bytes."
    )
    mlflow_http_timeout_seconds: int = Field(
        10,
        ge=1,
        validation_alias=AliasChoices("STREAMFLOW_MLFLOW_HTTP_TIMEOUT_SECONDS", "MLFLOW_HTTP_REQUEST_TIMEOUT"),
        description="Timeout (s) of each HTTP request to an http(s) MLflow server; MLflow's own "
        "MLFLOW_HTTP_REQUEST_TIMEOUT is honoured when the STREAMFLOW_ variable is unset.",
    )
    mlflow_http_max_retries: int = Field(
        2,
        ge=0,
        le=10,
        validation_alias=AliasChoices("STREAMFLOW_MLFLOW_HTTP_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
        description="Retries of a failed or timed-out MLflow HTTP request (or MLFLOW_HTTP_REQUEST_MAX_RETRIES).",
    )
    mlflow_http_backoff_factor: int = Field(
        1,
        ge=0,
        validation_alias=AliasChoices("STREAMFLOW_MLFLOW_HTTP_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"),
        description="Backoff factor between MLflow HTTP retries (or MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR).",
    )
    promote_lock_timeout_seconds: float = Field(
        120.0, ge=0, description="How long a promotion waits for another one to finish before giving up."
    )
    feature_poll_seconds: float = Field(2.0, description="How often the API checks the online store.")

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
    fault_release_file: Path | None = Field(
        None, description="Tests only: a fault point pauses until this file exists (at most fault_pause_seconds)."
    )

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
    def mlflow_call_bound_seconds(self) -> float:
        """The longest one MLflow HTTP call can take before it fails: every attempt times out and
        urllib3 sleeps ``backoff_factor * 2**(n-1)`` (+ <= 1 s of jitter) before retries 2..n."""
        retries = self.mlflow_http_max_retries
        sleeps = sum(self.mlflow_http_backoff_factor * 2 ** (n - 1) + 1.0 for n in range(2, retries + 1))
        return float((retries + 1) * self.mlflow_http_timeout_seconds + sleeps)

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
