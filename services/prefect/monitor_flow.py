"""Course entry point of the drift monitor (CI5), kept at the course's path.

    docker compose exec -e REPORT_DIR=/reports/evidently prefect python /opt/prefect/flows/monitor_flow.py

A thin wrapper: the flow ``monitor_month`` and its tasks (build_dataset, compute_target_drift,
run_evidently, decide_action) live in ``streamflow.flows.monitor``; this file only parses the
optional arguments and runs it with the environment's settings (``STREAMFLOW_*``, ``REPORT_DIR``,
``PREFECT_API_URL``). Same output and exit codes as ``streamflow monitor``.

    python monitor_flow.py [--ref 2024-01-31] [--cur 2024-02-29] [--threshold 0.3] [--retrain] [--json]
"""

from __future__ import annotations

import argparse
import sys

AS_OF_REF_DEFAULT = "2024-01-31"
AS_OF_CUR_DEFAULT = "2024-02-29"


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from streamflow.flows import prefect_environment
    from streamflow.logging_setup import setup_logging
    from streamflow.settings import get_settings

    setup_logging()
    settings = get_settings()
    prefect_environment(settings)  # before prefect is imported
    from streamflow.flows.monitor import monitor_command

    return monitor_command(args.ref, args.cur, args.threshold, args.retrain, args.json, settings)


if __name__ == "__main__":
    sys.exit(main())
