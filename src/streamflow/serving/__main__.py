"""``python -m streamflow.serving [--host H] [--port P] [--workers N]`` (same as
``streamflow serve``; used by tests and the benchmark to start a server process)."""

from __future__ import annotations

import argparse

from streamflow.core.settings import get_settings
from streamflow.serving.server import run_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streamflow.serving", description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    run_server(get_settings(), host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()
