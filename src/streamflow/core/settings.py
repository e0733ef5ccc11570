"""The one settings object of StreamFlow (env prefix ``STREAMFLOW_``).

Every path, URL and tunable lives here; code asks ``get_settings()`` (or is handed a
``Settings``) instead of reading the environment or hard-coding locations. Two variables
keep the names other tools give them: ``MLFLOW_TRACKING_URI`` (MLflow's own, wins over
``STREAMFLOW_MLFLOW_TRACKING_URI``) and ``REPORT_DIR`` (the course's, wins over
``STREAMFLOW_REPORT_DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamflow.core.errors import InputError

# The secrets of .env.example / services/k8s/secrets/*.env.example are `change-me-…`: a value
# that still contains this marker was copied without being changed, and is refused at start.
PLACEHOLDER_MARKER = "change-me"


class SettingsError(InputError, ValueError):
    """The environment's settings are invalid (exit 2): the message names each variable."""


def _refuse_placeholder(variable: str, value: str | None) -> None:
    if value is not None and PLACEHOLDER_MARKER in value.lower():
        raise ValueError(
            f"{variable} holds a `{PLACEHOLDER_MARKER}-…` placeholder secret of .env.example: set a real secret "
            "(e.g. `openssl rand -hex 24`) in .env or the Secret it comes from"
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore", populate_by_name=True)

    home: Path = Field(Path(".streamflow"), description="All local state lives below this directory.")
    database_url: str | None = Field(
        None,
        description="postgresql://user:pass@host:port/db. Unset: an embedded PostgreSQL under home/pgdata.",
    )
    db_sslmode: str = Field("disable", description="sslmode used by Feast's PostgreSQL stores.")
    feast_database_url: str | None = Field(
        None,
        description="The database URL Feast's registry, online and offline stores use (feature_store.yaml): a role "
        "owning only Feast's tables and reading the snapshot tables (services/postgres/). Unset: database_url.",
    )
    prefect_api_auth_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("PREFECT_API_AUTH_STRING"),
        description="Prefect's own client variable (user:password of the Prefect server); read here only to refuse "
        "a placeholder at start.",
    )

    # Embedded PostgreSQL (no database_url) ------------------------------------------------
    embedded_max_wal_size: str = Field(
        "4GB", description="max_wal_size of the embedded server: bulk loads of a month write GBs of WAL."
    )
    embedded_min_wal_size: str = Field("256MB", description="min_wal_size of the embedded server.")
    embedded_checkpoint_timeout: str = Field("15min", description="checkpoint_timeout of the embedded server.")
    embedded_wal_level: Literal["minimal", "replica"] = Field(
        "minimal",
        description="wal_level of the embedded server. 'minimal' (no replica, no archive: the embedded server has "
        "neither) lets a table created and filled in one transaction — every snapshot partition, rebuilt live "
        "table and online-store table — skip the WAL; 'replica' for a server you stream or archive.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level of our key=value logs.")

    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "STREAMFLOW_MLFLOW_TRACKING_URI"),
        description="MLflow tracking + registry URI (MLFLOW_TRACKING_URI wins). Unset: sqlite under home.",
    )
    model_name: str = "streamflow_churn"
    model_alias: str = "production"
    random_seed: int = 42
    n_estimators: int = Field(300, ge=1, description="Trees of the RandomForest.")
    min_samples_leaf: int = Field(
        20,
        ge=1,
        description="Smallest leaf of the forest's trees (bounds tree size; chosen by measurement, "
        "benchmarks/README.md).",
    )
    max_depth: int | None = Field(None, ge=1, description="Depth limit of the forest's trees (None: no limit).")
    max_samples: int | None = Field(
        25_000,
        ge=1,
        description="Bootstrap rows per tree: each tree sees at most this many rows (all training rows when there "
        "are fewer; None: always all). Logged with the run's params.",
    )
    score_threads: int = Field(
        2, ge=1, le=64, description="onnxruntime threads when training and the monitor score whole months."
    )
    fit_chunk_trees: int = Field(
        25, ge=1, description="Trees grown per step of the forest's fit (progress granularity; same forest)."
    )

    feast_project: str = "streamflow"
    dataset_work_mem: str = Field(
        "256MB", description="PostgreSQL work_mem of the query reading a month's dataset (its hash joins)."
    )
    dataset_reader: Literal["snapshots", "feast"] = Field(
        "snapshots",
        description="How training and monitoring read a month's point-in-time dataset: snapshots = one SQL per "
        "month straight from the snapshot tables (typed columns, streamed); feast = Feast's offline retrieval "
        "(the reference; an integration test proves both equal).",
    )

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
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of POST /admin/reload (at least 16 characters, compared in constant time). "
        "Unset: the endpoint is off (404).",
    )
    admin_reload_cooldown_seconds: float = Field(
        5.0,
        ge=0,
        description="After a reload through /admin/reload, the next one is refused (429 + Retry-After) for this "
        "long: loading a model is expensive, an abusive token holder must not keep the API loading.",
    )
    api_limit_concurrency: int | None = Field(
        1024,
        ge=1,
        description="Per worker: open connections + requests in progress beyond which new requests are shed "
        "(503 + Retry-After; uvicorn's limit_concurrency). /health, /ready and /metrics are never shed.",
    )
    api_max_requests_per_client: int | None = Field(
        64,
        ge=1,
        description="Per worker: requests in progress (queued or running) from one client address beyond which "
        "its new requests are shed (503 + Retry-After). Behind a proxy every client is the proxy: raise it.",
    )
    api_graceful_shutdown_seconds: int = Field(
        5,
        ge=1,
        description="On SIGTERM, wait at most this long for requests in progress (uvicorn); then the prediction "
        "log is flushed (prediction_log_shutdown_seconds). Together they stay below Docker's 10 s grace.",
    )

    # Prediction log (every prediction served, written off the request path) -----------
    prediction_log_enabled: bool = Field(True, description="Record every served prediction in `predictions`.")
    prediction_log_buffer_rows: int = Field(
        100_000,
        ge=1,
        description="Per worker: rows waiting to be written (or being written); beyond it new rows are dropped "
        "and counted. Size it above the peak rows/s times prediction_log_flush_seconds.",
    )
    prediction_log_flush_seconds: float = Field(
        1.0, gt=0, description="The background writer COPYs the buffered rows this often."
    )
    prediction_log_copy_chunk_rows: int = Field(
        256,
        ge=1,
        description="The writer formats and sends a flush's rows in chunks of this many, yielding the GIL "
        "between two chunks, so a flush never holds the serving thread for more than one chunk's work.",
    )
    prediction_log_retries: int = Field(
        3, ge=0, description="A failed write of a batch is retried this many times (backoff) before it is dropped."
    )
    prediction_log_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between two attempts (the backoff doubles from the flush interval)."
    )
    prediction_log_db_timeout_seconds: float = Field(
        5.0, gt=0, description="Connect and statement timeout of the prediction log's writes."
    )
    prediction_log_shutdown_seconds: float = Field(
        3.0, gt=0, description="At shutdown, the last flush may take at most this long."
    )
    prediction_log_prune_lock_timeout_seconds: float = Field(
        30.0, gt=0, description="`predictions prune` waits this long for the writers' locks before giving up."
    )

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
    monitor_sample_rows: int | None = Field(
        200_000,
        ge=1000,
        description="Evidently compares at most this many rows per month (a seeded sample, stratified by label; "
        "stated in the summary's `sample` and the report; None: every row). Target drift, realized metrics and "
        "the CBPE estimate always use every row.",
    )
    monitor_sample_seed: int = Field(42, description="Seed of the monitor's sample.")
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
    # Scale-out engine of the monthly batch work (Apache Spark, docs/scale.md) ---------------
    monitor_engine: Literal["local", "spark"] = Field(
        "local",
        description="Default engine of `monitor`: local (PostgreSQL + Feast + Evidently in this process) or spark.",
    )
    spark_master: str = Field(
        "local[2]", description="Spark master URL: local[N], spark://host:7077, yarn, k8s://https://host:443."
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark configuration as a JSON object (wins over StreamFlow's defaults), e.g. the "
        'Hadoop filesystem settings of an object store: {"spark.hadoop.fs.s3a.endpoint": "…"}.',
    )
    spark_python: str | None = Field(
        None,
        description="Python interpreter of the Spark executors (PYSPARK_PYTHON). Unset: this process's interpreter "
        "(right for local masters; set it to the image's interpreter on a cluster).",
    )
    spark_driver_memory: str = Field("2g", description="spark.driver.memory (local masters: the executors too).")
    spark_shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions.")
    spark_batch_rows: int = Field(
        50_000, ge=1_000, description="Rows per Arrow batch handed to Python (validation, ONNX scoring)."
    )
    lake_path: str | None = Field(
        None,
        description="The lake: month tables as Parquet partitioned by as_of, and the feature table; a directory or "
        "any Hadoop URI (s3a://bucket/lake). Unset: home/lake.",
    )
    spark_exact_max_values: int = Field(
        100_000,
        ge=100,
        description="Drift on Spark: a numerical column with at most this many distinct values is compared on its "
        "exact value counts (the statistic Evidently computes); above, on bin counts (docs/scale.md).",
    )
    spark_drift_bins: int = Field(
        2_000,
        ge=100,
        description="Drift on Spark: bins per high-cardinality numerical column (reference quantiles "
        "and an equal-width grid).",
    )
    fault_pause_at: str | None = Field(
        None, description="Tests only: pause at this named fault point (see streamflow.core.faults)."
    )
    fault_pause_seconds: float = Field(60.0, description="Tests only: how long a fault point pauses.")
    fault_release_file: Path | None = Field(
        None, description="Tests only: a fault point pauses until this file exists (at most fault_pause_seconds)."
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("database_url", "feast_database_url", "mlflow_tracking_uri", mode="after")
    @classmethod
    def _no_placeholder_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        name = info.field_name or ""
        variable = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"STREAMFLOW_{name.upper()}"
        _refuse_placeholder(variable, v)
        return v

    @field_validator("prefect_api_auth_string", mode="after")
    @classmethod
    def _no_placeholder_secret(cls, v: SecretStr | None) -> SecretStr | None:
        _refuse_placeholder("PREFECT_API_AUTH_STRING", v.get_secret_value() if v is not None else None)
        return v

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("admin_token", mode="after")
    @classmethod
    def _strong_admin_token(cls, v: SecretStr | None) -> SecretStr | None:
        _refuse_placeholder("STREAMFLOW_ADMIN_TOKEN", v.get_secret_value() if v is not None else None)
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("admin_token must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return v

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
    def secrets_dir(self) -> Path:
        """Generated secrets (0700 directory, 0600 files)."""
        return self.home / "secrets"

    @property
    def embedded_password_file(self) -> Path:
        """The embedded PostgreSQL superuser's generated password (SCRAM authentication)."""
        return self.secrets_dir / "embedded-postgres-password"

    @property
    def resolved_feast_database_url(self) -> str | None:
        return self.feast_database_url or self.database_url

    @property
    def resolved_lake_path(self) -> str:
        """The lake's root (a local directory or a Hadoop URI), without a trailing slash."""
        return (self.lake_path or str(self.home / "lake")).rstrip("/")

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


def settings_error(exc: ValidationError) -> SettingsError:
    """One line naming every invalid variable (pydantic's report is several lines per error)."""
    parts = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if loc and loc not in message and loc.upper() not in message:
            message = f"STREAMFLOW_{loc.upper()}: {message}"
        parts.append(message)
    return SettingsError("; ".join(parts) or str(exc))


def get_settings() -> Settings:
    """The settings of this process's environment (read afresh: cheap, and never stale).

    Invalid settings (a `change-me-…` placeholder secret, a malformed value) raise
    :class:`SettingsError` (exit 2) naming each variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise settings_error(exc) from None


def settings_json(settings: Settings) -> str:
    """The settings as JSON for a child process (API workers, the mirror's loader), secrets
    revealed (``model_dump_json`` masks them): read back with ``Settings.model_validate_json``.
    Passed on a pipe or in the environment of our own children, never written to disk."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data)
