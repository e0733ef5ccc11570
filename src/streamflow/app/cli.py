"""The front door: `streamflow --help`. Commands only parse input, call the library
and format output.

Exit codes (every command): 0 ok; 2 bad input (a message names what is wrong; nothing was
written); 1 an operational failure or a bug (one line; the traceback is logged at DEBUG);
130 interrupted. Every command goes through :func:`command`, the one place errors become exit
codes (see ``streamflow.core.errors``)."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamflow.app.loadgen import MAX_REQUESTS
from streamflow.core.dates import DEMO_CUR_AS_OF, DEMO_REF_AS_OF
from streamflow.core.errors import ExitCode, StreamflowError
from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings, get_settings
from streamflow.seeds.drift import DEMO_DRIFT

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("streamflow.app.cli")

app = typer.Typer(
    help="StreamFlow: observable churn prediction (ingest → features → train → serve → monitor).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
seeds_app = typer.Typer(help="Synthetic month data in the course schema.", no_args_is_help=True)
app.add_typer(seeds_app, name="seeds")
dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")
predictions_app = typer.Typer(help="The prediction log: every prediction the API served.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
lake_app = typer.Typer(
    help="The lake of the Spark engine: months as Parquet, partitioned by as_of.", no_args_is_help=True
)
app.add_typer(lake_app, name="lake")
console = Console(stderr=True)
out = Console()


def _settings(home: Path | None = None, *, uses_home: bool = True) -> Settings:
    """The environment's settings (a placeholder secret or a bad value: exit 2 naming the variable),
    with ``home`` overriding STREAMFLOW_HOME. Every command runs with umask 077, and a command that
    keeps state checks that an existing STREAMFLOW_HOME is private (tightened or refused:
    streamflow.core.home); a missing one is created 0700 by the first thing that writes there."""
    from streamflow.core.home import ensure_private_home, private_umask

    private_umask()
    settings = get_settings()
    if home is not None:
        settings = settings.model_copy(update={"home": home.expanduser().resolve()})
    setup_logging(settings.log_level)
    if uses_home and settings.home.exists():
        ensure_private_home(settings.home)  # created (0700) by whatever writes first
    return settings


def fail(message: str, code: ExitCode) -> NoReturn:
    """One ``error: …`` line on stderr, then exit with ``code``."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def command(typer_app: typer.Typer, *args: Any, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose errors all end the same way: StreamFlow errors with their own exit
    code and message (2 for bad input, 1 otherwise), anything else as one line naming the exception
    (exit 1) with the traceback in the DEBUG log. Never a traceback on the terminal."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except StreamflowError as exc:
                fail(str(exc), exc.exit_code)
            except Exception as exc:
                if type(exc).__module__.split(".", 1)[0] in ("psycopg", "sqlalchemy"):
                    log.debug("event=database_error command=%s", fn.__name__, exc_info=exc)
                    fail(f"database error: {_first_line(exc)}; nothing was half-written", ExitCode.INTERNAL)
                log.debug("event=internal_error command=%s", fn.__name__, exc_info=exc)
                fail(
                    f"internal error in `{fn.__name__}`: {_first_line(exc)} "
                    "(STREAMFLOW_LOG_LEVEL=DEBUG shows the traceback)",
                    ExitCode.INTERNAL,
                )

        typer_app.command(*args, **kwargs)(run)
        return fn

    return register


@command(app)
def ingest(
    month_dir: Annotated[Path, typer.Argument(help="Directory with the six CSVs of one month.")],
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD.")],
    materialize: Annotated[bool, typer.Option(help="Materialize the Feast online store after the load.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows, rows/s).")] = True,
) -> None:
    """Validate one month's CSVs, write the live tables and stamp the snapshots (one transaction,
    ingest lock), then publish the month to the online store (atomic swap)."""
    from streamflow.app.monthly import ingest_and_publish
    from streamflow.core.console_progress import rich_progress
    from streamflow.core.dates import parse_as_of
    from streamflow.features.online_writer import MaterializeError

    settings = _settings()
    parse_as_of(as_of)
    try:
        with rich_progress(console, enabled=progress) as on_progress:
            result = ingest_and_publish(month_dir, as_of, settings, materialize=materialize, progress=on_progress)
    except FileNotFoundError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    except MaterializeError as exc:
        fail(f"the month was ingested but not published: {exc}; run `streamflow materialize`", ExitCode.INTERNAL)
    r = result.ingest
    table = Table(title=f"ingested {r.month_dir} as of {r.as_of} (ingestion #{r.ingestion_id})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("live rows kept (newer month)", justify="right")
    for name, n in r.rows.items():
        table.add_row(name, f"{n:,}", f"{r.live.get(name, {}).get('kept_newer', 0):,}")
    out.print(table)
    out.print(
        f"validate {r.seconds_validate:.2f}s, load {r.seconds_load:.2f}s (one transaction)"
        + (
            f", materialize {result.seconds_materialize:.2f}s → online store holds {result.materialized_as_of}"
            if materialize
            else ", online store not materialized (stale until `streamflow materialize`)"
        )
    )
    if result.performance is not None:
        perf = result.performance
        auc = perf.month.metrics.get("auc")
        out.print(
            f"realized performance of v{perf.model_version} ({perf.version_reason}) on {perf.as_of}: "
            f"AUC {auc:.4f} over {perf.month.metrics.get('n', 0):,.0f} users"
            if auc is not None
            else f"realized performance of v{perf.model_version} on {perf.as_of} recorded",
            highlight=False,
        )
    elif result.performance_note:
        out.print(f"realized performance not measured: {result.performance_note}", highlight=False)


@command(app)
def materialize(
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows, rows/s).")] = True,
) -> None:
    """Publish every user's latest snapshot to the Feast online store (atomic swap); heals a stale store."""
    from streamflow.core.console_progress import rich_progress
    from streamflow.features.store import materialize_online

    settings = _settings()
    with rich_progress(console, enabled=progress) as on_progress:
        result = materialize_online(settings, on_progress)
    if result.as_of is None:
        out.print("nothing to materialize: no snapshot ingested yet")
        return
    out.print(
        f"online store holds as_of={result.as_of} (covers ingestion #{result.ingestion_id}; "
        f"{result.rows:,} rows by the {result.writer} writer in {result.seconds:.2f}s)"
    )


@command(app)
def train(
    as_of: Annotated[str, typer.Option("--as-of", help="Train on this month's snapshot and labels.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows read, trees grown, rows scored).")] = True,
) -> None:
    """Train the RandomForest baseline (bounded trees: settings min_samples_leaf, max_depth,
    max_samples), log it to MLflow and register a version."""
    from streamflow.core.console_progress import rich_progress
    from streamflow.training.train import dump_json, train_model

    settings = _settings()
    with rich_progress(console, enabled=progress) as on_progress:
        result = train_model(as_of, settings, progress=on_progress)
    if json_out:
        out.print_json(dump_json(result))
        return
    m = result.metrics
    out.print(
        f"run_id={result.run_id} model={settings.model_name} version={result.version} "
        f"val_auc={m['val_auc']:.4f} val_f1={m['val_f1']:.4f} val_acc={m['val_acc']:.4f}"
        + (f" → alias '{settings.model_alias}'" if result.promoted else "")
    )


@command(app)
def promote(
    version: Annotated[str, typer.Argument(help="Registered version of the model to publish (e.g. 3).")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the deployment and the alias history).")] = (
        "manual promotion (streamflow promote)"
    ),
    allow_older: Annotated[
        bool, typer.Option("--allow-older", help="Allow a version trained on an older month (a rollback).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the deployment as JSON.")] = False,
) -> None:
    """Verify VERSION's artefacts (sha256 recorded at training; the ONNX loads) and publish it: a new
    deployment record (what the API serves) and the MLflow alias, under the promotion lock."""
    from streamflow.core.errors import InputError
    from streamflow.training.registry import promote as publish

    if not version.isdigit() or int(version) < 1:
        raise InputError(f"VERSION must be a registered version number (1, 2, …), got {version!r}")
    settings = _settings()
    with console.status(f"verifying and publishing {settings.model_name} v{version}…"):
        dep = publish(settings, str(int(version)), reason, allow_older=allow_older)
    if json_out:
        out.print_json(json.dumps(dep.as_dict()))
        return
    previous = f" (was v{dep.previous_version})" if dep.previous_version else ""
    out.print(
        f"published {dep.model_name} v{dep.version} (run {dep.run_id}, trained on {dep.as_of}, "
        f"onnx sha256 {dep.onnx_sha256[:12]}…, {dep.onnx_size / 1e6:.1f} MB) as deployment #{dep.id}; "
        f"alias '{dep.alias}' → v{dep.version}{previous}; the API loads it at its next poll",
        highlight=False,
        soft_wrap=True,
    )


@command(app)
def status(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Snapshots per as_of (row counts, churn rate), registered model versions, the deployed (served) one."""
    from streamflow.app.status import system_status

    settings = _settings()
    st = system_status(settings)
    if json_out:
        out.print_json(json.dumps(st))
        return
    snap = Table(title="snapshots")
    snap.add_column("as_of")
    tables = list(st["snapshots"][0]["tables"]) if st["snapshots"] else []
    for t in tables:
        snap.add_column(t.replace("_snapshots", ""), justify="right")
    snap.add_column("churn rate", justify="right")
    for s in st["snapshots"]:
        snap.add_row(
            s["as_of"],
            *(f"{s['tables'][t]:,}" for t in tables),
            f"{s['churn_rate']:.4f}" if s["churn_rate"] is not None else "-",
        )
    out.print(snap)
    online = st["online_store"]
    state = "[bold red]stale[/]" if online["stale"] else "[green]fresh[/]"
    out.print(
        f"online store: as_of={online['as_of']} {state}" + (f" — {online['reason']}" if online["reason"] else ""),
        highlight=False,
    )
    models = Table(title=f"model {settings.model_name}")
    for c in ("version", "aliases", "deployed", "trained on", "val_auc", "run_id"):
        models.add_column(c)
    prod = st["production"]
    for m in st["models"]:
        auc = f"{m['val_auc']:.4f}" if m["val_auc"] is not None else "-"
        served = "served" if m["version"] == prod["deployed_version"] else ""
        models.add_row(m["version"], ",".join(m["aliases"]), served, str(m["as_of"]), auc, m["run_id"])
    out.print(models)
    dep = prod["deployment"]
    out.print(
        f"deployed (served by the API): v{dep['version']} — deployment #{dep['id']} of {dep['promoted_at']}, "
        f"onnx sha256 {dep['onnx_sha256'][:12]}…"
        if dep
        else "deployed (served by the API): nothing",
        highlight=False,
        soft_wrap=True,
    )
    if prod["note"]:
        out.print(f"[bold yellow]warning:[/] {prod['note']}", highlight=False, soft_wrap=True)
    logged = st["predictions"]
    per_version = ", ".join(f"v{v}: {n:,}" for v, n in logged["by_model_version"].items())
    out.print(
        f"prediction log: {logged['rows']:,} predictions"
        + (f" ({per_version}), served {logged['first']} … {logged['last']}" if logged["rows"] else ""),
        highlight=False,
    )


@command(app)
def performance(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Month to measure (default: every month that has labels).")
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Score with this version (default: the one in production at ingestion)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Realized performance of the model on months that have labels (AUC, F1, Brier, calibration…), stored."""
    from streamflow.core.dates import parse_as_of
    from streamflow.monitoring.performance import measure_months

    if as_of is not None:
        parse_as_of(as_of)
    settings = _settings()
    with console.status("measuring…") as status:
        results = measure_months(settings, as_of=as_of, model_version=model_version, progress=status.update)
    if json_out:
        out.print_json(json.dumps([r.as_dict() for r in results], allow_nan=False))
        return
    table = Table(title=f"realized performance of {settings.model_name} (stored in model_performance)", padding=(0, 0))
    for col in ("as_of", "model", "n", "AUC", "F1", "prec", "recall", "acc", "Brier", "churn pred/act"):
        table.add_column(col, justify="left" if col in ("as_of", "model") else "right", no_wrap=True)

    def fmt(value: float | None) -> str:
        return f"{value:.3f}" if value is not None else "-"

    for r in results:
        m = r.month.metrics
        table.add_row(
            r.as_of,
            f"v{r.model_version}",
            str(r.month.n),
            fmt(m["auc"]),
            fmt(m["f1"]),
            fmt(m["precision"]),
            fmt(m["recall"]),
            fmt(m["accuracy"]),
            fmt(m["brier"]),
            f"{fmt(m['predicted_churn_rate'])}/{fmt(m['actual_churn_rate'])}",
        )
    for r in results:
        for s in r.served:
            m = s.metrics
            table.add_row(
                s.as_of,
                f"v{s.model_version} served",
                str(s.n),
                fmt(m["auc"]),
                fmt(m["f1"]),
                fmt(m["precision"]),
                fmt(m["recall"]),
                fmt(m["accuracy"]),
                fmt(m["brier"]),
                f"{fmt(m['predicted_churn_rate'])}/{fmt(m['actual_churn_rate'])}",
            )
    out.print(table)
    for r in results:
        val = f"{r.validation_auc:.4f}" if r.validation_auc is not None else "n/a"
        unseen = r.unseen
        extra = f"; unseen users: AUC {fmt(unseen.metrics['auc'])} (n={unseen.n:,})" if unseen else ""
        out.print(f"{r.as_of}: v{r.model_version} — {r.version_reason}; validation AUC {val}{extra}")


@command(predictions_app, "prune")
def predictions_prune(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            min=0,
            help="Delete the predictions served more than DAYS days ago (whole UTC days: up to one day more is kept).",
            metavar="DAYS",
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retention of the prediction log: drop its daily partitions older than DAYS (no DELETE, no bloat)."""
    from streamflow.db.predictions import prune_predictions

    settings = _settings()
    result = prune_predictions(settings, older_than, dry_run=dry_run)
    if json_out:
        out.print_json(json.dumps(result.as_dict()))
        return
    verb = "would delete" if dry_run else "deleted"
    days = ", ".join(p.day.isoformat() for p in result.partitions)
    out.print(
        f"{verb} {result.rows:,} predictions served before {result.cutoff} 00:00 UTC "
        f"({len(result.partitions)} daily partition{'' if len(result.partitions) == 1 else 's'}"
        f"{': ' + days if days else ''})",
        highlight=False,
    )


@command(seeds_app, "generate")
def seeds_generate(
    out: Annotated[Path, typer.Option("--out", help="Output directory (month_000, month_001, …).")],
    months: Annotated[int, typer.Option("--months", min=1, max=120)] = 2,
    users: Annotated[int, typer.Option("--users", min=10, max=20_000_000)] = 7043,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    drift: Annotated[
        str | None,
        typer.Option("--drift", help="Planted drift, e.g. 'watch_hours_30d*0.6,net_service=Fiber optic:0.7@1'."),
    ] = None,
) -> None:
    """Generate months of synthetic data in the course schema (deterministic per seed)."""
    from streamflow.seeds.drift import parse_drift_option
    from streamflow.seeds.generator import generate_months

    _settings(uses_home=False)
    spec = parse_drift_option(drift) if drift else None
    with console.status("generating…") as st:
        dirs = generate_months(out, months=months, users=users, seed=seed, drift=spec, progress=st.update)
    for d in dirs:
        console.print(f"wrote {d}")


@command(app)
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings, 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes (multiprocess metrics).")] = 1,
    home: Annotated[
        Path | None, typer.Option(help="State directory (default: settings, STREAMFLOW_HOME).", show_default=False)
    ] = None,
) -> None:
    """Serve the prediction API (FastAPI: /predict, /predict/batch, /metrics, /health, /ready, /model)."""
    from streamflow.serving.server import run_server

    settings = _settings(home)
    run_server(settings, host=host, port=port, workers=workers)


@command(app)
def load(
    url: Annotated[str | None, typer.Option(help="API base URL (loopback or the configured one).")] = None,
    requests: Annotated[int, typer.Option("--requests", min=1, max=MAX_REQUESTS)] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256)] = 8,
    rps: Annotated[float | None, typer.Option("--rps", min=0.1, help="Target requests per second.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="Stop after S seconds.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Send bounded /predict traffic for real user_ids and summarise it (count, errors, RPS, p50/p95/p99).
    SIGTERM (or SIGINT) stops it early; the summary is still printed."""
    import signal
    import threading

    from streamflow.app.loadgen import run_load

    settings = _settings()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = run_load(
            url or settings.resolved_api_url,
            requests=requests,
            concurrency=concurrency,
            rps=rps,
            duration=duration,
            settings=settings,
            show_progress=not json_out,
            console=console,
            stop=stop,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if json_out:
        out.print_json(summary.to_json())
    else:
        out.print(summary.table())
    if summary.ok == 0:
        fail(f"no request succeeded ({summary.error_count} errors)", ExitCode.INTERNAL)


@command(app)
def monitor(
    ref: Annotated[
        str | None, typer.Option("--ref", help=f"Reference month (as_of). Default: {DEMO_REF_AS_OF}.")
    ] = None,
    cur: Annotated[str | None, typer.Option("--cur", help=f"Current month (as_of). Default: {DEMO_CUR_AS_OF}.")] = None,
    latest: Annotated[
        bool,
        typer.Option("--latest", help="Compare the two newest snapshots in the database (the monthly job's choice)."),
    ] = False,
    threshold: Annotated[float | None, typer.Option(help="drift_share threshold (default: settings, 0.3).")] = None,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Really retrain (and maybe promote) when triggered.")
    ] = False,
    orchestrator: Annotated[
        str | None,
        typer.Option(help="auto (Prefect, or directly if Prefect cannot start), prefect, none. Default: settings."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (progress goes to stderr).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows read and scored) on stderr.")] = True,
    engine: Annotated[
        str | None,
        typer.Option(help="local (PostgreSQL + Feast + Evidently) or spark (docs/scale.md). Default: settings."),
    ] = None,
    ref_month: Annotated[
        str | None,
        typer.Option(help="Spark engine: the reference month's six CSVs (a directory or URI); default: the lake."),
    ] = None,
    cur_month: Annotated[
        str | None,
        typer.Option(help="Spark engine: the current month's six CSVs (a directory or URI); default: the lake."),
    ] = None,
) -> None:
    """Evidently drift report ref vs cur → drift_share, target drift → decision (Prefect flow monitor_month)."""
    settings = _settings()
    if latest:
        ref, cur = latest_two_snapshots(settings, ref, cur)
    run_monitor_command(
        settings,
        ref=ref or DEMO_REF_AS_OF,
        cur=cur or DEMO_CUR_AS_OF,
        threshold=threshold,
        retrain=retrain,
        orchestrator=orchestrator,
        json_out=json_out,
        progress=progress,
        engine=engine,
        ref_month=ref_month,
        cur_month=cur_month,
    )


def latest_two_snapshots(settings: Settings, ref: str | None, cur: str | None) -> tuple[str, str]:
    """``monitor --latest``: (previous, newest) snapshot in the database; exit 2 when fewer than
    two months are in, or when --ref / --cur are also given."""
    from streamflow.features.dataset import snapshot_dates
    from streamflow.monitoring.monitor import MonitorInputError

    if ref or cur:
        raise MonitorInputError("--latest chooses both months: drop --ref / --cur (or --latest)")
    from streamflow.db.engine import get_engine
    from streamflow.db.schema import migrate

    migrate(get_engine(settings))  # a database nothing was ingested into yet: no snapshot, not an error
    dates = snapshot_dates(settings)
    if len(dates) < 2:
        known = ", ".join(str(d) for d in dates) or "none"
        raise MonitorInputError(f"--latest needs two snapshots in the database, found {len(dates)} ({known})")
    return str(dates[-2]), str(dates[-1])


def run_monitor_command(
    settings: Settings,
    *,
    ref: str,
    cur: str,
    threshold: float | None,
    retrain: bool,
    orchestrator: str | None,
    json_out: bool,
    progress: bool = False,
    engine: str | None = None,
    ref_month: str | None = None,
    cur_month: str | None = None,
) -> None:
    """`streamflow monitor` (also the course's services/prefect/monitor_flow.py). Without ``--json``
    the last stdout line is the course's decision line; with it the progress lines go to stderr and
    stdout holds only the JSON summary."""
    from streamflow.flows import run_monitor_with
    from streamflow.monitoring.monitor import MonitorInputError, MonitorRequest, check_snapshots, json_safe

    how = orchestrator or settings.orchestrator
    if how not in ("auto", "prefect", "none"):
        raise MonitorInputError(f"--orchestrator must be auto, prefect or none, got {how!r}")
    which = engine or settings.monitor_engine
    if which not in ("local", "spark"):
        raise MonitorInputError(f"--engine must be local or spark, got {which!r}")
    if which == "local" and (ref_month or cur_month):
        raise MonitorInputError("--ref-month / --cur-month are inputs of the Spark engine: add --engine spark")
    request = MonitorRequest.build(
        settings,
        as_of_ref=ref,
        as_of_cur=cur,
        threshold=threshold,
        retrain=retrain,
        ref_label="--ref",
        cur_label="--cur",
    )
    if which == "local":
        check_snapshots(settings, {"--ref": request.as_of_ref, "--cur": request.as_of_cur})
    elif retrain:
        raise MonitorInputError(
            "--retrain runs the single-machine trainer: use --engine local (the Spark engine monitors and decides)"
        )
    stream = sys.stderr if json_out else sys.stdout

    def emit(line: str) -> None:
        print(line, file=stream, flush=True)

    from streamflow.core.console_progress import rich_progress

    with rich_progress(console, enabled=progress) as on_progress:
        summary, _ = run_monitor_with(
            how,  # type: ignore[arg-type]
            request,
            settings,
            emit=emit,
            progress=on_progress,
            engine=which,  # type: ignore[arg-type]
            ref_month=ref_month,
            cur_month=cur_month,
        )
    if json_out:
        print(json.dumps(json_safe(summary), indent=2, allow_nan=False), flush=True)


@command(lake_app, "export")
def lake_export(
    month_dir: Annotated[str, typer.Argument(help="Directory (or URI) with the six CSVs of one month.")],
    as_of: Annotated[str, typer.Option("--as-of", help="The month's as_of YYYY-MM-DD.")],
) -> None:
    """Validate a month's CSVs on Spark (the ingest's rules) and write it to the lake as Parquet
    (STREAMFLOW_LAKE_PATH, partitioned by as_of); nothing is written when validation fails."""
    from streamflow.core.dates import parse_as_of
    from streamflow.spark.lake import export_month
    from streamflow.spark.session import spark_session

    settings = _settings()
    day = parse_as_of(as_of).isoformat()
    with spark_session(settings) as spark:
        result = export_month(spark, settings, month_dir, day)
    table = Table(title=f"exported {month_dir} as of {day} to {result.lake}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in result.rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)


@command(app)
def schedule(
    seeds: Annotated[Path, typer.Option(help="Directory where new month_NNN folders arrive.")],
    cron: Annotated[str, typer.Option(help="Cron of the monthly run.")] = "0 6 1 * *",
    retrain: Annotated[bool, typer.Option("--retrain", help="Let the scheduled monitor retrain for real.")] = False,
) -> None:
    """Serve Prefect deployments: ingest the newest month, then monitor the last two snapshots (blocks)."""
    from streamflow.flows import prefect_environment

    settings = _settings()
    prefect_environment(settings)  # before Prefect is imported
    from streamflow.flows.schedule import serve_schedules

    serve_schedules(settings, seeds, cron=cron, retrain=retrain)


@command(app)
def demo(
    seeds: Annotated[
        Path | None, typer.Option(help="Use these seeds (month_000, month_001) instead of generating.")
    ] = None,
    users: Annotated[int, typer.Option(help="Users per generated month.")] = 7043,
    requests: Annotated[int, typer.Option(help="At least this many /predict requests are sent.")] = 2000,
    concurrency: Annotated[int, typer.Option(help="Concurrent connections of the load generator.")] = 8,
    rps: Annotated[float, typer.Option(help="Pace of the demo traffic (0 = as fast as possible).")] = 60.0,
    drift: Annotated[
        str,
        typer.Option(help="Drift planted in the generated month_001 (see seeds generate); 'none' for none."),
    ] = DEMO_DRIFT,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="Retrain and promote for real when the monitor triggers.")
    ] = True,
) -> None:
    """Run the whole loop on the embedded default; leaves the API (and Prometheus) running."""
    from streamflow.app.demo import run_demo

    run_demo(
        _settings(),
        out,
        seeds=seeds,
        users=users,
        requests=requests,
        concurrency=concurrency,
        rps=rps or None,
        drift=drift,
        retrain=retrain,
    )


@command(app)
def bootstrap(
    seeds: Annotated[Path | None, typer.Option(help="Use these seeds instead of generating.")] = None,
    users: Annotated[int, typer.Option(help="Users per generated month.")] = 7043,
) -> None:
    """Seeds → ingest both months → train if no production model exists (idempotent; compose `init`)."""
    from streamflow.app.demo import bootstrap as run_bootstrap

    run_bootstrap(_settings(), out, seeds=seeds, users=users)


@command(app)
def down() -> None:
    """Stop exactly the processes `demo` / `up` started (API, Prometheus, Pushgateway, embedded DB)."""
    from streamflow.app.runtime import stop_everything

    stopped = stop_everything(_settings())
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@command(app)
def report(
    minutes: Annotated[float, typer.Option(help="Time window of the charts.")] = 30,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus to query (default: settings).")] = None,
) -> None:
    """Write reports/monitoring_report.md (+ HTML, PNG charts) from the live Prometheus."""
    from streamflow.observability.report import generate_monitoring_report

    settings = _settings()
    md = generate_monitoring_report(
        settings,
        minutes=minutes,
        out_dir=settings.reports_dir,
        prometheus_url=prometheus_url or settings.resolved_prometheus_url,
    )
    out.print(f"wrote {md} and {md.with_suffix('.html')}")


@command(dashboards_app, "build")
def dashboards_build(
    check: Annotated[bool, typer.Option("--check", help="Only compare; exit 1 when the JSON file differs.")] = False,
) -> None:
    """(Re)generate the provisioned Grafana dashboard JSON from its Python definition."""
    from streamflow.observability.dashboards import is_up_to_date, write_dashboard_json
    from streamflow.observability.repo_files import dashboard_path

    settings = _settings(uses_home=False)
    try:
        path = dashboard_path(settings)
    except FileNotFoundError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    if check and not is_up_to_date(path):
        fail(
            f"{path} differs from the dashboard's Python definition; run `streamflow dashboards build`",
            ExitCode.INTERNAL,
        )
    wrote = not check and write_dashboard_json(path)
    out.print(f"wrote {path}" if wrote else f"{path} is up to date", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - the console script
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
