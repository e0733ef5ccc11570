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


@app.command()
def ingest(
    month_dir: Annotated[Path, typer.Argument(help="Directory with the six CSVs of one month.")],
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD.")],
    materialize: Annotated[bool, typer.Option(help="Apply Feast and materialize the online store.")] = True,
) -> None:
    """Validate one month's CSVs, upsert the live tables and stamp the snapshots (one transaction)."""
    from streamflow.ingest.loader import ingest_month, parse_as_of
    from streamflow.ingest.validation import ValidationError

    settings = _settings()
    try:
        parse_as_of(as_of)
        with console.status("ingesting…") as status:
            result = ingest_month(month_dir, as_of, settings, materialize=materialize, progress=status.update)
    except ValidationError as exc:
        _fail(str(exc), 2)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 2)
    table = Table(title=f"ingested {result.month_dir} as of {result.as_of}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in result.rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    out.print(
        f"load {result.seconds_load:.2f}s (one transaction)"
        + (
            f", materialize {result.seconds_materialize:.2f}s → online store holds {result.materialized_as_of}"
            if materialize
            else ", online store not materialized"
        )
    )


@app.command()
def materialize() -> None:
    """Apply the Feast definitions and load the latest snapshot of every user online."""
    from streamflow.features.store import materialize_latest

    latest = materialize_latest(_settings())
    out.print(f"online store holds as_of={latest}")


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


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
