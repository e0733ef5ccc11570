"""Course entry point of the drift monitor (CI5), kept at the course's path.

    docker compose exec -e REPORT_DIR=/reports/evidently prefect python /opt/prefect/flows/monitor_flow.py

A thin wrapper around `streamflow monitor`: the flow ``monitor_month`` and its tasks (build_dataset,
compute_target_drift, run_evidently, decide_action, …) live in ``streamflow.flows.monitor`` and
``streamflow.monitoring.monitor``; this file only parses the course's optional arguments and runs the
CLI command with the environment's settings (``STREAMFLOW_*``, ``REPORT_DIR``, ``PREFECT_API_URL``).
Same output and exit codes as ``streamflow monitor`` (0 ok, 2 bad input, 1 failure).

    python monitor_flow.py [--ref 2024-01-31] [--cur 2024-02-29] [--threshold 0.3] [--retrain] [--json]
"""

from __future__ import annotations

import argparse
import sys

from streamflow.core.dates import DEMO_CUR_AS_OF as AS_OF_CUR_DEFAULT
from streamflow.core.dates import DEMO_REF_AS_OF as AS_OF_REF_DEFAULT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="StreamFlow drift monitor (Evidently, month vs month).")
    parser.add_argument("--ref", default=AS_OF_REF_DEFAULT, help="reference as_of (default %(default)s)")
    parser.add_argument("--cur", default=AS_OF_CUR_DEFAULT, help="current as_of (default %(default)s)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="drift_share threshold (default STREAMFLOW_DRIFT_THRESHOLD, 0.3)"
    )
    parser.add_argument("--retrain", action="store_true", help="retrain and maybe promote for real when triggered")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    return parser.parse_args(argv)


def cli_arguments(args: argparse.Namespace) -> list[str]:
    """The `streamflow monitor` command line equivalent to the course's arguments."""
    argv = ["monitor", "--ref", args.ref, "--cur", args.cur]
    if args.threshold is not None:
        argv += ["--threshold", repr(args.threshold)]
    if args.retrain:
        argv.append("--retrain")
    if args.json:
        argv.append("--json")
    return argv


def main(argv: list[str] | None = None) -> int:
    from streamflow.app.cli import app

    try:
        app(cli_arguments(parse_args(argv)), prog_name="monitor_flow.py")
    except SystemExit as exc:  # Typer always exits; its code is ours (0, 1 or 2)
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
