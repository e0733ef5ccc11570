"""The front door: `streamflow --help`. Commands only parse input, call the library
and format output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamflow.logging_setup import setup_logging
from streamflow.settings import Settings, get_settings

app = typer.Typer(
    help="StreamFlow: observable churn prediction (ingest → features → train → serve → monitor).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
seeds_app = typer.Typer(help="Synthetic month data in the course schema.", no_args_is_help=True)
app.add_typer(seeds_app, name="seeds")
console = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    setup_logging()
    return get_settings()


def _fail(msg: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def _db_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@app.command()
def ingest(
    month_dir: Annotated[Path, typer.Argument(help="Directory with the six CSVs of one month.")],
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD.")],
    materialize: Annotated[bool, typer.Option(help="Materialize the Feast online store after the load.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows, rows/s).")] = True,
) -> None:
    """Validate one month's CSVs, write the live tables and stamp the snapshots (one transaction,
    ingest lock), then publish the month to the online store (atomic swap)."""
    import psycopg

    from streamflow.console_progress import rich_progress
    from streamflow.dates import parse_as_of
    from streamflow.features.online_writer import MaterializeError
    from streamflow.ingest.loader import IngestError
    from streamflow.ingest.validation import ValidationError
    from streamflow.monthly import PublishResult, ingest_and_publish

    settings = _settings()
    result: PublishResult | None = None
    try:
        parse_as_of(as_of)
        with rich_progress(console, enabled=progress) as on_progress:
            result = ingest_and_publish(month_dir, as_of, settings, materialize=materialize, progress=on_progress)
    except ValidationError as exc:
        _fail(str(exc), 2)
    except IngestError as exc:
        _fail(str(exc), 2)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 2)
    except MaterializeError as exc:
        _fail(f"the month was ingested but not published: {exc}; run `streamflow materialize`", 1)
    except psycopg.Error as exc:
        _fail(f"database error: {_db_error_line(exc)}; nothing was lost (see `streamflow status`)", 1)
    assert result is not None
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


@app.command()
def materialize(
    progress: Annotated[bool, typer.Option(help="Show progress bars (rows, rows/s).")] = True,
) -> None:
    """Publish every user's latest snapshot to the Feast online store (atomic swap); heals a stale store."""
    import psycopg

    from streamflow.console_progress import rich_progress
    from streamflow.features.online_writer import MaterializeError
    from streamflow.features.store import materialize_online

    settings = _settings()
    try:
        with rich_progress(console, enabled=progress) as on_progress:
            result = materialize_online(settings, on_progress)
    except MaterializeError as exc:
        _fail(str(exc), 1)
    except psycopg.Error as exc:
        _fail(f"database error: {_db_error_line(exc)}; the online store is unchanged", 1)
    if result.as_of is None:
        out.print("nothing to materialize: no snapshot ingested yet")
        return
    out.print(
        f"online store holds as_of={result.as_of} (covers ingestion #{result.ingestion_id}; "
        f"{result.rows:,} rows by the {result.writer} writer in {result.seconds:.2f}s)"
    )


@app.command()
def train(
    as_of: Annotated[str, typer.Option("--as-of", help="Train on this month's snapshot and labels.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train the RandomForest baseline, log it to MLflow and register a version."""
    from streamflow.features.dataset import EmptySnapshotError
    from streamflow.training.train import dump_json, train_model

    settings = _settings()
    try:
        with console.status("training…") as status:
            result = train_model(as_of, settings, progress=status.update)
    except (EmptySnapshotError, ValueError) as exc:
        _fail(str(exc), 2)
    if json_out:
        out.print_json(dump_json(result))
        return
    m = result.metrics
    out.print(
        f"run_id={result.run_id} model={settings.model_name} version={result.version} "
        f"val_auc={m['val_auc']:.4f} val_f1={m['val_f1']:.4f} val_acc={m['val_acc']:.4f}"
        + (f" → alias '{settings.model_alias}'" if result.promoted else "")
    )


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Snapshots per as_of (row counts, churn rate) and registered model versions."""
    from streamflow.status import system_status

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
    for c in ("version", "aliases", "trained on", "val_auc", "run_id"):
        models.add_column(c)
    for m in st["models"]:
        auc = f"{m['val_auc']:.4f}" if m["val_auc"] is not None else "-"
        models.add_row(m["version"], ",".join(m["aliases"]), str(m["as_of"]), auc, m["run_id"])
    out.print(models)


@seeds_app.command("generate")
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

    setup_logging()
    try:
        spec = parse_drift_option(drift) if drift else None
        with console.status("generating…") as st:
            dirs = generate_months(out, months=months, users=users, seed=seed, drift=spec, progress=st.update)
    except ValueError as exc:
        _fail(str(exc), 2)
    for d in dirs:
        console.print(f"wrote {d}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings, 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes (multiprocess metrics).")] = 1,
) -> None:
    """Serve the prediction API (FastAPI: /predict, /predict/batch, /metrics, /health, /ready, /model)."""
    from streamflow.serving.server import run_server

    run_server(_settings(), host=host, port=port, workers=workers)


@app.command()
def load(
    url: Annotated[str | None, typer.Option(help="API base URL (loopback or the configured one).")] = None,
    requests: Annotated[int, typer.Option("--requests", min=1, max=1_000_000)] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256)] = 8,
    rps: Annotated[float | None, typer.Option("--rps", min=0.1, help="Target requests per second.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="Stop after S seconds.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Send bounded /predict traffic for real user_ids and summarise it (count, errors, RPS, p50/p95/p99)."""
    from streamflow.loadgen import LoadTargetError, run_load

    settings = _settings()
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
        )
    except LoadTargetError as exc:
        _fail(str(exc), 2)
    if json_out:
        out.print_json(summary.to_json())
    else:
        out.print(summary.table())
    if summary.ok == 0:
        raise typer.Exit(1)


@app.command()
def monitor(
    ref: Annotated[str, typer.Option("--ref", help="Reference month (as_of).")] = "2024-01-31",
    cur: Annotated[str, typer.Option("--cur", help="Current month (as_of).")] = "2024-02-29",
    threshold: Annotated[float | None, typer.Option(help="drift_share threshold (default: settings, 0.3).")] = None,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Really retrain (and maybe promote) when triggered.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the drift summary as JSON.")] = False,
) -> None:
    """Evidently drift report ref vs cur → drift_share, target drift → decision (Prefect flow monitor_month)."""
    from streamflow.flows import prefect_environment

    settings = _settings()
    prefect_environment(settings)
    from streamflow.flows.monitor import monitor_command

    code = monitor_command(ref, cur, threshold, retrain, json_out, settings)
    raise typer.Exit(code)


@app.command()
def schedule(
    seeds: Annotated[Path, typer.Option(help="Directory where new month_NNN folders arrive.")],
    cron: Annotated[str, typer.Option(help="Cron of the monthly run.")] = "0 6 1 * *",
    retrain: Annotated[bool, typer.Option("--retrain", help="Let the scheduled monitor retrain for real.")] = False,
) -> None:
    """Serve Prefect deployments: ingest the newest month, then monitor the last two snapshots (blocks)."""
    from streamflow.flows import prefect_environment

    settings = _settings()
    prefect_environment(settings)
    from streamflow.flows.schedule import serve_schedules

    serve_schedules(settings, seeds, cron=cron, retrain=retrain)


@app.command()
def demo(
    seeds: Annotated[
        Path | None, typer.Option(help="Use these seeds (month_000, month_001) instead of generating.")
    ] = None,
    users: Annotated[int, typer.Option(help="Users per generated month.")] = 7043,
    requests: Annotated[int, typer.Option(help="/predict requests to send.")] = 2000,
    concurrency: Annotated[int, typer.Option(help="Concurrent connections of the load generator.")] = 8,
    rps: Annotated[float, typer.Option(help="Pace of the demo traffic (0 = as fast as possible).")] = 60.0,
    drift: Annotated[
        str | None, typer.Option(help="Plant drift in the generated month_001 (see seeds generate).")
    ] = None,
) -> None:
    """Run the whole loop on the embedded default; leaves the API (and Prometheus) running."""
    from streamflow.demo import run_demo

    settings = _settings()
    try:
        run_demo(
            settings,
            out,
            seeds=seeds,
            users=users,
            requests=requests,
            concurrency=concurrency,
            rps=rps or None,
            drift=drift,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))


@app.command()
def bootstrap(
    seeds: Annotated[Path | None, typer.Option(help="Use these seeds instead of generating.")] = None,
    users: Annotated[int, typer.Option(help="Users per generated month.")] = 7043,
) -> None:
    """Seeds → ingest both months → train if no production model exists (idempotent; compose `init`)."""
    from streamflow.demo import bootstrap as run_bootstrap

    settings = _settings()
    try:
        run_bootstrap(settings, out, seeds=seeds, users=users)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def down() -> None:
    """Stop exactly the processes `demo` / `up` started (API, Prometheus, Pushgateway, embedded DB)."""
    from streamflow.runtime import stop_everything

    stopped = stop_everything(_settings())
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
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


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
