"""`make demo` / `streamflow demo`: the whole loop on the embedded default, telling one story.

seeds (month_001 carries planted concept drift: the churn rule changes for month-to-month
subscribers while no feature moves) → ingest two months → train on month_000 → [Prometheus +
Pushgateway] → API (background) → traffic, kept running → monitor: data drift *and* the model's
realized performance → RETRAINING_TRIGGERED for a stated reason → retrain on month_001, compare on
its held-out rows, promote → the API switches model under traffic with zero errors → monitoring
report → summary (reasons, AUC before/after, versions). The API and Prometheus keep running until
`streamflow down` (`make down`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console

from streamflow.core.dates import DEMO_CUR_AS_OF, DEMO_MONTHS, DEMO_REF_AS_OF
from streamflow.core.errors import OperationalError
from streamflow.core.settings import Settings
from streamflow.seeds.drift import DEMO_DRIFT

if TYPE_CHECKING:
    from streamflow.app.loadgen import LoadSummary

log = logging.getLogger(__name__)

NO_DRIFT = "none"  # `--drift none`: generate months without any planted drift
WARMUP_SECONDS = 15.0  # traffic before the monitor starts, so Prometheus scrapes see it
AFTER_SWITCH_SECONDS = 10.0  # traffic kept after the switch, so the new model is seen serving


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
    drift: str | None = DEMO_DRIFT,
    retrain: bool = True,
) -> DemoOutcome:
    from streamflow.app.runtime import start_api_background
    from streamflow.core.processes import local_address
    from streamflow.observability import prometheus_local as prom

    if "log_level" not in settings.model_fields_set:
        # The terminal tells the story; every log line goes to a file (STREAMFLOW_LOG_LEVEL=INFO: both).
        from streamflow.core.logging_setup import setup_logging

        log_file = settings.run_dir / "demo.log"
        setup_logging(settings.log_level, console_level="WARNING", log_file=log_file)
        console.print(f"logs: {log_file}", highlight=False)
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

    # 6. traffic, kept running through the monitor, the retraining and the switch -------
    # From its own process (`streamflow load`), as real clients would: the monitor and the
    # retraining run in this process and must not starve the traffic. Paced, so that several
    # Prometheus scrapes (every 10 s) see the counters move.
    header(
        f"traffic: /predict with {concurrency} connections"
        + (f" at {rps:g} req/s" if rps else "")
        + ", from a separate process until the new model serves"
    )
    traffic = _start_traffic(settings, api_url, concurrency, rps)
    t_traffic = time.perf_counter()
    time.sleep(WARMUP_SECONDS)
    before = _served_model(api_url)
    console.print(f"API serving {_describe_model(before)}; traffic running (pid {traffic.pid})")

    # 7. monitor: data drift + model quality, retraining for real -----------------------
    header(f"monitor: {DEMO_REF_AS_OF} vs {DEMO_CUR_AS_OF} — data drift and the model's realized performance")
    from streamflow.flows import run_monitor_with
    from streamflow.monitoring.monitor import MonitorRequest

    request = MonitorRequest.build(settings, as_of_ref=DEMO_REF_AS_OF, as_of_cur=DEMO_CUR_AS_OF, retrain=retrain)
    try:
        drift_summary, _ = run_monitor_with(
            settings.orchestrator,
            request,
            settings,
            emit=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
        )
    except BaseException:
        _stop_traffic(traffic)
        raise
    outcome.urls["Drift report"] = str(drift_summary["report_html"])
    retrained: dict[str, Any] | None = drift_summary.get("retrain")

    # 8. the switch under traffic --------------------------------------------------------
    after = before
    switched_at: float | None = None
    if retrained and retrained.get("promoted"):
        header(f"the API switches to v{retrained['candidate_version']} under traffic")
        after, switched_at = _wait_for_version(
            api_url, str(retrained["candidate_version"]), settings.model_poll_seconds * 3 + 15
        )
        console.print(
            f"API now serving {_describe_model(after)}"
            if switched_at is not None
            else f"[yellow]the API still serves {_describe_model(after)}: see {api.log_file}"
        )
    min_seconds = requests / rps if rps else 0.0
    time.sleep(max(AFTER_SWITCH_SECONDS, min_seconds - (time.perf_counter() - t_traffic)))
    load = _stop_traffic(traffic)
    console.print(load.table())

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
    for line in story_lines(drift_summary, before, after, load):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"state in {settings.home}; took {time.perf_counter() - t_start:.0f}s")
    console.print("still running in the background: " + ", ".join(outcome.background))
    console.print("stop them with: [bold]make down[/] (or `streamflow down`)")
    return outcome


def _start_traffic(settings: Settings, api_url: str, concurrency: int, rps: float | None) -> subprocess.Popen[str]:
    """`streamflow load` in its own process, unbounded in count, until :func:`_stop_traffic`."""
    from streamflow.app.loadgen import MAX_REQUESTS

    argv = [sys.executable, "-m", "streamflow", "load", "--url", api_url, "--json"]
    argv += ["--requests", str(MAX_REQUESTS), "--concurrency", str(concurrency)]
    if rps:
        argv += ["--rps", f"{rps:g}"]
    env = dict(os.environ, STREAMFLOW_HOME=str(settings.home), STREAMFLOW_LOG_LEVEL="WARNING")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _stop_traffic(proc: subprocess.Popen[str]) -> LoadSummary:
    """SIGTERM the load process (it stops and prints its JSON summary) and read that summary."""
    from streamflow.app.loadgen import LoadSummary

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        return LoadSummary(**json.loads(out))
    except (ValueError, TypeError) as exc:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise OperationalError(f"the demo traffic (streamflow load) ended without a summary: {tail}") from exc


def _served_model(api_url: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/model", timeout=5.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _describe_model(model: dict[str, Any]) -> str:
    auc = (model.get("metrics") or {}).get("val_auc")
    return f"{model.get('name')} v{model.get('version')} (trained on {model.get('as_of')}" + (
        f", val AUC {auc:.4f})" if auc is not None else ")"
    )


def _wait_for_version(api_url: str, version: str, timeout: float) -> tuple[dict[str, Any], float | None]:
    """Poll the API's /model until it serves ``version`` (its alias poll picks up the promotion)."""
    deadline = time.monotonic() + timeout
    model = _served_model(api_url)
    while str(model.get("version")) != version and time.monotonic() < deadline:
        time.sleep(0.5)
        model = _served_model(api_url)
    return model, (time.time() if str(model.get("version")) == version else None)


def _num(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def story_lines(summary: dict[str, Any], before: dict[str, Any], after: dict[str, Any], load: Any) -> list[str]:
    """The closing story: decision and why, AUC before/after, which model served the traffic."""
    realized = (summary.get("performance") or {}).get("realized") or {}
    estimated = (summary.get("performance") or {}).get("estimated") or {}
    lines = [
        f"decision: {summary['decision']} — data drift {summary['drifted_count']}/{summary['n_features']} features "
        f"(drift_share={summary['drift_share']:.4f}), target drift {_num(summary.get('target_drift'))}",
    ]
    reasons = summary.get("reasons") or []
    lines += [f"  reason: {r}" for r in reasons] or ["  reason: none — the model holds up"]
    val_auc = (before.get("metrics") or {}).get("val_auc")
    lines.append(
        f"model quality on {summary['as_of_cur']}: v{before.get('version')} validation AUC {_num(val_auc)}, "
        f"realized AUC {_num(realized.get('auc'))}, label-free estimate (CBPE) {_num(estimated.get('auc'))}"
    )
    retrained = summary.get("retrain")
    if retrained:
        lines.append(
            f"retrained: candidate v{retrained['candidate_version']} held-out AUC {_num(retrained['candidate_auc'])} "
            f"vs production v{retrained['production_version']} {_num(retrained['production_auc'])} on the same "
            f"{retrained['n_heldout']:,} rows → {retrained['decision']}"
        )
    switched = str(after.get("version")) != str(before.get("version"))
    served = ", ".join(f"v{v}: {n:,}" for v, n in sorted(load.model_versions.items())) or "none"
    lines.append(
        f"serving: v{before.get('version')} → v{after.get('version')}"
        + (" (switched under traffic)" if switched else " (unchanged)")
        + f"; {load.requests:,} requests, {load.error_count} error{'' if load.error_count == 1 else 's'}, "
        f"answered by {served}"
    )
    return lines


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
    from streamflow.app.monthly import ingest_and_publish
    from streamflow.training.registry import deployed, production_version, promote
    from streamflow.training.train import train_model

    header = header or (lambda text: console.rule(f"[bold]{text}"))
    # 1. seeds -------------------------------------------------------------------------
    header("seed data")
    if seeds is None:
        from streamflow.seeds.drift import parse_drift_option
        from streamflow.seeds.generator import generate_months

        seeds = settings.home / "seeds"
        planted = None if drift is None or drift.strip().lower() == NO_DRIFT else drift
        if not (seeds / "month_001" / "labels.csv").exists() or drift is not None:
            spec = parse_drift_option(planted) if planted else None
            generate_months(seeds, months=2, users=users, seed=settings.random_seed, drift=spec)
            console.print(
                f"generated 2 months × {users:,} users in {seeds}"
                + (f" (planted in month_001: {planted})" if planted else " (no planted drift)")
            )
        else:
            console.print(f"reusing generated seeds in {seeds}")
    else:
        console.print(f"using seeds from {seeds}")
    for month in DEMO_MONTHS:
        if not (seeds / month).is_dir():
            raise FileNotFoundError(f"{seeds / month} not found (expected month_000 and month_001)")

    # 2. ingest -------------------------------------------------------------------------
    header("ingest (validate → COPY → snapshot → live tables, one transaction) + Feast materialize")
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
    current = deployed(settings)
    console.print(
        f"run {tr.run_id} → {settings.model_name} v{tr.version}: val_auc={tr.metrics['val_auc']:.4f} "
        f"val_f1={tr.metrics['val_f1']:.4f}; deployed (alias '{settings.model_alias}'): "
        f"v{current.version if current else '?'}"
    )
