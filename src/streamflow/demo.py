"""`make demo` / `streamflow demo`: the whole loop on the embedded default.

seeds → ingest two months → train → API (background) → [Prometheus + Pushgateway]
→ traffic → drift report + decision (drift metrics pushed) → monitoring report → summary.
The API and Prometheus keep running until `streamflow down` (`make down`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from streamflow.dates import DEMO_CUR_AS_OF, DEMO_MONTHS, DEMO_REF_AS_OF
from streamflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DemoOutcome:
    urls: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)


def run_demo(
    settings: Settings,
    console: Console,
    *,
    seeds: Path | None = None,
    users: int = 7043,
    requests: int = 2000,
    concurrency: int = 8,
    rps: float | None = 60.0,
    drift: str | None = None,
) -> DemoOutcome:
    from streamflow.observability import prometheus_local as prom
    from streamflow.processes import local_address
    from streamflow.runtime import start_api_background

    outcome = DemoOutcome()
    t_start = time.perf_counter()
    step = 0

    def header(text: str) -> None:
        nonlocal step
        step += 1
        console.rule(f"[bold]{step}. {text}")

    bootstrap(settings, console, seeds=seeds, users=users, drift=drift, header=header, always_train=True)

    # 4. Prometheus + Pushgateway (when the binaries exist) ----------------------------
    header("observability (native Prometheus + Pushgateway)")
    api_target = f"{local_address(settings.api_host)}:{settings.api_port}"
    gateway = prom.start_pushgateway(settings)
    prometheus = prom.start_prometheus(settings, api_target=api_target)
    if gateway is None:
        outcome.notes.append(
            "no `prometheus-pushgateway` binary on PATH (Debian: apt-get install prometheus-pushgateway): "
            "drift gauges are not published; the drift report and decision still are."
        )
        console.print("[yellow]" + outcome.notes[-1])
    if prometheus is None:
        outcome.notes.append(
            "no `prometheus` binary on PATH (Debian: apt-get install prometheus): metrics are still served "
            "at /metrics, but not scraped; no report charts."
        )
        console.print("[yellow]" + outcome.notes[-1])
    else:
        outcome.urls["Prometheus"] = prometheus.url
        outcome.urls["Prometheus targets"] = f"{prometheus.url}/targets"
        outcome.urls["Prometheus alerts"] = f"{prometheus.url}/alerts"
        outcome.background.append(f"prometheus (pid {prometheus.pid})")
        console.print(f"Prometheus {prometheus.url} scraping the API at {api_target}")
    if gateway is not None:
        outcome.urls["Pushgateway"] = gateway.url
        outcome.background.append(f"pushgateway (pid {gateway.pid})")
        settings = settings.model_copy(update={"pushgateway_url": gateway.url})

    # 5. API ----------------------------------------------------------------------------
    header("prediction API (background)")
    api = start_api_background(settings, settings.api_host, settings.api_port)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    outcome.background.append(f"api (pid {api.pid})")
    outcome.urls.update(
        {"API docs": f"{api_url}/docs", "API metrics": f"{api_url}/metrics", "API model": f"{api_url}/model"}
    )
    console.print(f"API ready at {api_url} (log: {api.log_file})")

    # 6. traffic ------------------------------------------------------------------------
    # Paced, so that several Prometheus scrapes (every 10 s) see the counters move: a burst
    # between two scrapes would leave every rate panel of the report empty.
    header(f"traffic: {requests:,} /predict requests, concurrency {concurrency}" + (f", {rps:g} req/s" if rps else ""))
    from streamflow.loadgen import run_load

    summary = run_load(api_url, requests=requests, concurrency=concurrency, rps=rps, settings=settings)
    console.print(summary.table())

    # 7. drift --------------------------------------------------------------------------
    header(f"drift monitor: {DEMO_REF_AS_OF} vs {DEMO_CUR_AS_OF} (Evidently)")
    from streamflow.flows import run_monitor_with
    from streamflow.monitoring.monitor import MonitorRequest

    request = MonitorRequest.build(settings, as_of_ref=DEMO_REF_AS_OF, as_of_cur=DEMO_CUR_AS_OF)
    drift_summary, _ = run_monitor_with(
        settings.orchestrator,
        request,
        settings,
        emit=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
    )
    outcome.urls["Drift report"] = str(drift_summary["report_html"])

    # 8. monitoring report --------------------------------------------------------------
    if prometheus is not None:
        header("monitoring report from the live Prometheus")
        time.sleep(12)  # one more scrape after the traffic and the push
        from streamflow.observability.report import generate_monitoring_report

        md = generate_monitoring_report(
            settings, minutes=15, out_dir=settings.reports_dir, prometheus_url=prometheus.url
        )
        outcome.urls["Monitoring report"] = str(md)
        outcome.urls["Monitoring report (HTML)"] = str(md.with_suffix(".html"))
        console.print(f"wrote {md}")

    # summary ---------------------------------------------------------------------------
    console.rule("[bold green]StreamFlow demo done")
    width = max(len(n) for n in outcome.urls)
    for name, url in outcome.urls.items():
        console.print(f"  {name:<{width}}  {url}", highlight=False, soft_wrap=True)
    console.print(
        f"decision: {drift_summary['decision']} (drift_share={drift_summary['drift_share']:.4f}, "
        f"target_drift={drift_summary['target_drift']:.4f})"
    )
    console.print(f"state in {settings.home}; took {time.perf_counter() - t_start:.0f}s")
    console.print("still running in the background: " + ", ".join(outcome.background))
    console.print("stop them with: [bold]make down[/] (or `streamflow down`)")
    return outcome


def bootstrap(
    settings: Settings,
    console: Console,
    *,
    seeds: Path | None = None,
    users: int = 7043,
    drift: str | None = None,
    header: Callable[[str], None] | None = None,
    always_train: bool = False,
) -> None:
    """Seeds → ingest month_000/month_001 → train on 2024-01-31 (when no production model
    exists, or always with ``always_train``). Idempotent: compose's `init` service runs it
    on every `docker compose up`."""
    from streamflow.monthly import ingest_and_publish
    from streamflow.training.registry import deployed, production_version, promote
    from streamflow.training.train import train_model

    header = header or (lambda text: console.rule(f"[bold]{text}"))
    # 1. seeds -------------------------------------------------------------------------
    header("seed data")
    if seeds is None:
        from streamflow.seeds.drift import parse_drift_option
        from streamflow.seeds.generator import generate_months

        seeds = settings.home / "seeds"
        if not (seeds / "month_001" / "labels.csv").exists() or drift:
            spec = parse_drift_option(drift) if drift else None
            generate_months(seeds, months=2, users=users, seed=settings.random_seed, drift=spec)
            console.print(f"generated 2 months × {users:,} users in {seeds}" + (f" (drift: {drift})" if drift else ""))
        else:
            console.print(f"reusing generated seeds in {seeds}")
    else:
        console.print(f"using seeds from {seeds}")
    for month in DEMO_MONTHS:
        if not (seeds / month).is_dir():
            raise FileNotFoundError(f"{seeds / month} not found (expected month_000 and month_001)")

    # 2. ingest -------------------------------------------------------------------------
    header("ingest (validate → COPY → upsert → snapshot, one transaction) + Feast materialize")
    for month, as_of in DEMO_MONTHS.items():
        r = ingest_and_publish(seeds / month, as_of, settings)
        console.print(
            f"{month} as of {as_of}: {sum(r.rows.values()):,} rows in "
            f"{r.ingest.seconds_validate + r.ingest.seconds_load:.1f}s, "
            f"online store → {r.materialized_as_of}"
        )

    # 3. train --------------------------------------------------------------------------
    header(f"train on {DEMO_REF_AS_OF} (MLflow run + registry + deployment)")
    alias = production_version(settings)
    if not always_train and alias is not None:
        if deployed(settings) is None:  # a registry from before deployment records: publish its alias
            dep = promote(settings, alias.version, "bootstrap: publish the registry's production alias")
            console.print(f"published v{dep.version} (deployment #{dep.id}, onnx sha256 {dep.onnx_sha256[:12]}…)")
        console.print(f"'{settings.model_alias}' model already registered; not retraining")
        return
    tr = train_model(DEMO_REF_AS_OF, settings)
    dep = deployed(settings)
    console.print(
        f"run {tr.run_id} → {settings.model_name} v{tr.version}: val_auc={tr.metrics['val_auc']:.4f} "
        f"val_f1={tr.metrics['val_f1']:.4f}; deployed (alias '{settings.model_alias}'): "
        f"v{dep.version if dep else '?'}"
    )
